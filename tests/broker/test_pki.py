"""The server's CA, serving certificates and kubeconfig files."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import logging
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from submariner.broker.apiserver import pki

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return ips, set(ext.get_values_for_type(x509.DNSName))


def test_ca_is_persisted_and_reused(tmp_path: Path) -> None:
    ca1 = pki.load_or_create_ca(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == ca1.cert_pem
    assert _mode(tmp_path / "ca.key") == 0o600
    ca2 = pki.load_or_create_ca(tmp_path)
    assert ca2.cert_pem == ca1.cert_pem

    cert = x509.load_pem_x509_certificate(ca1.cert_pem)
    assert cert.subject.rfc4514_string() == "CN=submariner-broker-ca"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3649) < lifetime < dt.timedelta(days=3652)


def test_mismatched_ca_files_are_refused(tmp_path: Path) -> None:
    pki.load_or_create_ca(tmp_path / "a")
    pki.load_or_create_ca(tmp_path / "b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(ValueError, match="do not belong together"):
        pki.load_or_create_ca(tmp_path / "a")


def test_server_cert_verifies_against_ca_with_sans(tmp_path: Path) -> None:
    ca = pki.load_or_create_ca(tmp_path)
    cert_pem, key_pem = ca.issue_server_cert(
        ["192.0.2.10", "Broker.Example.com", "[2001:db8::1]", "10.96.0.1"]
    )
    assert b"PRIVATE KEY" in key_pem
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))

    ips, names = _sans(cert)
    assert ips == {"192.0.2.10", "2001:db8::1", "10.96.0.1", "127.0.0.1", "::1"}
    assert names == {
        "broker.example.com",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)


def test_server_ssl_context_reuses_and_reissues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki.server_ssl_context(tmp_path, ["192.0.2.10"])
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    assert _mode(crt) == 0o600 and _mode(key) == 0o600
    first = crt.read_bytes()

    pki.server_ssl_context(tmp_path, ["192.0.2.10", "localhost"])  # same SAN set: defaults already there
    assert crt.read_bytes() == first

    pki.server_ssl_context(tmp_path, ["192.0.2.11"])  # host list changed
    second = crt.read_bytes()
    assert second != first
    assert _sans(x509.load_pem_x509_certificate(second))[0] >= {"192.0.2.11"}

    monkeypatch.setattr(pki, "SERVER_VALIDITY", dt.timedelta(days=10))  # inside the renewal window
    (tmp_path / "server.crt").unlink()
    pki.server_ssl_context(tmp_path, ["192.0.2.11"])
    short_lived = crt.read_bytes()
    monkeypatch.setattr(pki, "SERVER_VALIDITY", dt.timedelta(days=365))
    pki.server_ssl_context(tmp_path, ["192.0.2.11"])  # expiring: re-issued
    assert crt.read_bytes() != short_lived


def test_server_cert_reissued_when_ca_replaced(tmp_path: Path) -> None:
    pki.server_ssl_context(tmp_path, [])
    first = (tmp_path / "server.crt").read_bytes()
    (tmp_path / "ca.crt").unlink()
    (tmp_path / "ca.key").unlink()
    pki.server_ssl_context(tmp_path, [])
    cert = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    assert (tmp_path / "server.crt").read_bytes() != first
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()))


@pytest.mark.parametrize(
    ("address", "server_hostname"),
    [("127.0.0.1", "localhost"), ("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "kubernetes.default.svc")],
)
def test_tls_handshake_on_loopback(tmp_path: Path, address: str, server_hostname: str) -> None:
    server_ctx = pki.server_ssl_context(tmp_path, ["broker.example.com"])
    ca_pem = (tmp_path / "ca.crt").read_text()
    listener = socket.create_server((address, 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(16).upper())
        except BaseException as e:  # surfaced to the test below
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_ctx = ssl.create_default_context(cadata=ca_pem)  # hostname checking and strict verification on
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"ping")
        assert tls.recv(16) == b"PING"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.selected_alpn_protocol() in (None, "http/1.1")
    t.join(5)
    listener.close()
    assert not errors


def test_tls_handshake_rejects_unknown_name(tmp_path: Path) -> None:
    server_ctx = pki.server_ssl_context(tmp_path, [])
    client_ctx = ssl.create_default_context(cadata=(tmp_path / "ca.crt").read_text())
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            server_ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with (
        socket.create_connection(listener.getsockname(), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client_ctx.wrap_socket(raw, server_hostname="not-a-san.example")
    t.join(5)
    listener.close()


def test_generate_token() -> None:
    tokens = {pki.generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for t in tokens:
        assert len(t) >= 43  # 32 bytes, base64url
        assert set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# --- kubeconfig ---------------------------------------------------------------------------------------------

FOREIGN: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {"name": "kind-dev", "cluster": {"server": "https://10.1.1.1:6443", "proxy-url": "http://p"}}
    ],
    "users": [{"name": "kind-dev", "user": {"client-certificate-data": "Zm9v", "client-key-data": "YmFy"}}],
    "contexts": [
        {"name": "kind-dev", "context": {"cluster": "kind-dev", "user": "kind-dev", "namespace": "x"}}
    ],
    "current-context": "kind-dev",
    "preferences": {"colors": True},
}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _names(cfg: dict[str, Any], section: str) -> list[str]:
    return [e["name"] for e in cfg.get(section) or []]


def test_write_kubeconfig_creates_file(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    ca = pki.load_or_create_ca(tmp_path / "data")
    pki.write_kubeconfig(path, server="https://127.0.0.1:6443", ca_pem=ca.cert_pem, token="t0k", context="c1")
    assert _mode(path) == 0o600
    cfg = _load(path)
    assert cfg["apiVersion"] == "v1" and cfg["kind"] == "Config"
    assert cfg["current-context"] == "c1"
    cluster = cfg["clusters"][0]
    assert cluster["name"] == "c1"
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == ca.cert_pem
    assert cfg["users"] == [{"name": "c1", "user": {"token": "t0k"}}]
    assert cfg["contexts"] == [{"name": "c1", "context": {"cluster": "c1", "user": "c1"}}]
    assert not list(path.parent.glob("*.lock")) and not list(path.parent.glob(".config.*"))


def test_write_kubeconfig_merges_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(FOREIGN))
    os.chmod(path, 0o644)
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    pki.write_kubeconfig(path, server="https://127.0.0.1:1", ca_pem=ca, token="a", context="cluster1")
    pki.write_kubeconfig(
        path,
        server="https://127.0.0.1:2",
        ca_pem=ca,
        token="b",
        context="cluster2",
        cluster_name="c2",
        user_name="u2",
        set_current=False,
    )
    cfg = _load(path)
    assert _mode(path) == 0o600
    assert _names(cfg, "clusters") == ["kind-dev", "cluster1", "c2"]
    assert _names(cfg, "users") == ["kind-dev", "cluster1", "u2"]
    assert _names(cfg, "contexts") == ["kind-dev", "cluster1", "cluster2"]
    assert cfg["current-context"] == "cluster1"
    assert cfg["clusters"][0] == FOREIGN["clusters"][0]  # foreign entries untouched
    assert cfg["contexts"][0] == FOREIGN["contexts"][0]
    assert cfg["preferences"] == {"colors": True}

    # Same names again (a lab cluster restarted with a new token and port): replaced in place, no duplicates.
    pki.write_kubeconfig(path, server="https://127.0.0.1:9", ca_pem=ca, token="new", context="cluster1")
    cfg = _load(path)
    assert _names(cfg, "clusters") == ["kind-dev", "cluster1", "c2"]
    assert cfg["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:9"
    assert cfg["users"][1] == {"name": "cluster1", "user": {"token": "new"}}
    assert cfg["contexts"][2] == {"name": "cluster2", "context": {"cluster": "c2", "user": "u2"}}


def test_write_kubeconfig_follows_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real-config"
    target.write_text(yaml.safe_dump(FOREIGN))
    link = tmp_path / "config"
    link.symlink_to(target)
    pki.write_kubeconfig(link, server="https://h:1", ca_pem=b"x", token="t", context="c")
    assert link.is_symlink()
    assert _names(_load(target), "contexts") == ["kind-dev", "c"]


def test_write_kubeconfig_refuses_non_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError):
        pki.write_kubeconfig(path, server="https://h:1", ca_pem=b"x", token="t", context="c")
    assert path.read_text() == "- just\n- a list\n"


def test_kubeconfig_lock_waits_and_breaks_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    lock = tmp_path / "config.lock"
    lock.touch()
    monkeypatch.setattr(pki, "_LOCK_TIMEOUT", 0.2)
    with pytest.raises(TimeoutError):
        pki.write_kubeconfig(path, server="https://h:1", ca_pem=b"x", token="t", context="c")
    old = time.time() - 3600
    os.utime(lock, (old, old))  # left behind by a crashed writer
    pki.write_kubeconfig(path, server="https://h:1", ca_pem=b"x", token="t", context="c")
    assert not lock.exists()
    assert _names(_load(path), "contexts") == ["c"]


def test_concurrent_writers_keep_every_context(tmp_path: Path) -> None:
    path = tmp_path / "config"

    def write(i: int) -> None:
        pki.write_kubeconfig(path, server=f"https://h:{i}", ca_pem=b"x", token=f"t{i}", context=f"c{i}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(_names(_load(path), "contexts")) == [f"c{i}" for i in range(8)]


def test_remove_kubeconfig_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(FOREIGN))
    pki.write_kubeconfig(path, server="https://h:1", ca_pem=b"x", token="a", context="c1")
    pki.write_kubeconfig(
        path, server="https://h:2", ca_pem=b"x", token="b", context="c2", cluster_name="shared"
    )
    pki.write_kubeconfig(
        path,
        server="https://h:2",
        ca_pem=b"x",
        token="c",
        context="c3",
        cluster_name="shared",
        set_current=False,
    )

    assert pki.remove_kubeconfig_context(path, "c2")
    cfg = _load(path)
    assert _names(cfg, "contexts") == ["kind-dev", "c1", "c3"]
    assert "shared" in _names(cfg, "clusters")  # still used by c3
    assert "c2" not in _names(cfg, "users")
    assert cfg["current-context"] == ""
    assert _mode(path) == 0o600

    assert pki.remove_kubeconfig_context(path, "c3")
    assert not pki.remove_kubeconfig_context(path, "c3")
    assert not pki.remove_kubeconfig_context(tmp_path / "missing", "c1")
    cfg = _load(path)
    assert _names(cfg, "clusters") == ["kind-dev", "c1"]
    assert _names(cfg, "users") == ["kind-dev", "c1"]


def test_logs_carry_no_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = pki.generate_token()
    pki.server_ssl_context(tmp_path, ["192.0.2.1"])
    ca = pki.load_or_create_ca(tmp_path)
    pki.write_kubeconfig(
        tmp_path / "config", server="https://h:1", ca_pem=ca.cert_pem, token=token, context="c"
    )
    text = caplog.text
    assert token not in text
    assert "PRIVATE KEY" not in text
    key_body = (tmp_path / "server.key").read_text().splitlines()[1]
    assert key_body not in text


# --- with the real kubectl ---------------------------------------------------------------------------


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl not installed in .venv")
def test_kubectl_parses_merged_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(FOREIGN))
    ca = pki.load_or_create_ca(tmp_path / "data")
    pki.write_kubeconfig(
        path, server="https://127.0.0.1:6443", ca_pem=ca.cert_pem, token="tok1", context="c1"
    )
    pki.write_kubeconfig(path, server="https://[::1]:6444", ca_pem=ca.cert_pem, token="tok2", context="c2")

    res = _kubectl("config", "view", "--kubeconfig", str(path), "--raw", "-o", "json")
    assert res.returncode == 0, res.stderr
    view = json.loads(res.stdout)
    assert view["current-context"] == "c2"
    assert sorted(c["name"] for c in view["contexts"]) == ["c1", "c2", "kind-dev"]
    users = {u["name"]: u["user"] for u in view["users"]}
    assert users["c1"] == {"token": "tok1"}
    clusters = {c["name"]: c["cluster"] for c in view["clusters"]}
    assert base64.b64decode(clusters["c1"]["certificate-authority-data"]) == ca.cert_pem
    assert clusters["c2"]["server"] == "https://[::1]:6444"

    res = _kubectl("config", "get-contexts", "-o", "name", "--kubeconfig", str(path))
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.split()) == ["c1", "c2", "kind-dev"]


class _VersionHandler(http.server.BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_GET(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        body = json.dumps({"major": "1", "minor": "37", "gitVersion": "v1.37.0-submariner"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_version_server(tmp_path: Path) -> Iterator[int]:
    ctx = pki.server_ssl_context(tmp_path / "data", ["192.0.2.7"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl not installed in .venv")
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_kubectl_talks_tls_with_token(tmp_path: Path, tls_version_server: int, host: str) -> None:
    """Go's TLS stack accepts the CA and serving cert; kubectl sends the kubeconfig token."""
    _VersionHandler.seen_auth.clear()
    token = pki.generate_token()
    path = tmp_path / "config"
    ca = pki.load_or_create_ca(tmp_path / "data")
    server = f"https://{host}:{tls_version_server}"
    pki.write_kubeconfig(path, server=server, ca_pem=ca.cert_pem, token=token, context="lab")
    res = _kubectl(
        "version", "-o", "json", "--kubeconfig", str(path), "--cache-dir", str(tmp_path / "cache"),
        "--request-timeout=20s",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["serverVersion"]["gitVersion"] == "v1.37.0-submariner"
    assert f"Bearer {token}" in _VersionHandler.seen_auth
