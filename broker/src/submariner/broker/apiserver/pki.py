"""Certificates and kubeconfigs for the API server.

The server is its own certificate authority: it creates a CA once per data directory, keeps it across
restarts (so kubeconfigs handed out stay valid) and issues the serving certificate from it. Kubeconfigs are
merged into possibly shared files, because several lab clusters write contexts into the same one.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_COMMON_NAME = "submariner-broker-ca"
SERVER_COMMON_NAME = "submariner-broker"
CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=365)
# Re-issue the serving certificate when less than this is left, so a long-running server never expires.
RENEW_BEFORE = dt.timedelta(days=30)
# Backdate validity a little: clients with a slightly slow clock must not see a "not yet valid" certificate.
_CLOCK_SKEW = dt.timedelta(minutes=5)

# Names clients use for an in-cluster API server; always present so kubeconfigs and pods can use any of them.
DEFAULT_SANS: tuple[str, ...] = (
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_LOCK_TIMEOUT = 10.0
_LOCK_STALE_AFTER = 60.0


def generate_token() -> str:
    """A bearer token: URL-safe text carrying 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: accepted by every TLS client we care about (Go, OpenSSL) and much faster to create than RSA.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _san_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """SAN entries for the hosts plus DEFAULT_SANS: IP literals as IP SANs, everything else as DNS SANs."""
    seen: set[tuple[str, str]] = set()
    names: list[x509.GeneralName] = []
    for raw in [*hosts, *DEFAULT_SANS]:
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host:
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            dns = host.lower().rstrip(".")
            if ("dns", dns) not in seen:
                seen.add(("dns", dns))
                names.append(x509.DNSName(dns))
            continue
        if ("ip", str(ip)) not in seen:
            seen.add(("ip", str(ip)))
            names.append(x509.IPAddress(ip))
    return names


def _san_set(names: Iterable[x509.GeneralName]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for n in names:
        if isinstance(n, x509.IPAddress):
            out.add(("ip", str(n.value)))
        elif isinstance(n, x509.DNSName):
            out.add(("dns", n.value.lower()))
    return out


def _cert_sans(cert: x509.Certificate) -> set[tuple[str, str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return _san_set(ext.value)


class CertificateAuthority:
    """The server's own CA: signs the serving certificate; its certificate goes into every kubeconfig."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.certificate = cert
        self._key = key

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, common_name: str = CA_COMMON_NAME) -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue_server_cert(self, hosts: list[str]) -> tuple[bytes, bytes]:
        """A serving certificate (PEM cert, PEM key) valid for `hosts` and the in-cluster default names."""
        key = _new_key()
        now = _now()
        not_after = min(now + SERVER_VALIDITY, self.certificate.not_valid_after_utc)
        is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # Key encipherment only makes sense for RSA key transport.
                    key_encipherment=not is_ec,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san_names(hosts)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether `cert` was signed by this CA (a regenerated CA invalidates old serving certs)."""
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def save(self, data_dir: Path) -> None:
        # Key first: a crash in between leaves no certificate, which load_or_create_ca treats as "no CA".
        _write_atomic(data_dir / "ca.key", _key_pem(self._key), 0o600)
        _write_atomic(data_dir / "ca.crt", self.cert_pem, 0o644)


def _load_key(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported CA key type (want EC or RSA)")
    return key


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def load_or_create_ca(data_dir: Path) -> CertificateAuthority:
    """The CA kept in `data_dir` (ca.crt / ca.key), created on first use.

    Reusing it across restarts keeps every kubeconfig already handed out valid.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = data_dir / "ca.crt", data_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = _load_key(key_path.read_bytes())
        if not _same_public_key(cert, key):
            # Refuse to silently replace a CA clients may trust; an operator must sort this out.
            raise ValueError(f"{cert_path} and {key_path} do not belong together")
        if key_path.stat().st_mode & 0o077:
            os.chmod(key_path, 0o600)
        if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            log.warning("CA certificate %s expires at %s", cert_path, cert.not_valid_after_utc.isoformat())
        return CertificateAuthority(cert, key)
    ca = CertificateAuthority.create()
    ca.save(data_dir)
    log.info("created certificate authority %s in %s", CA_COMMON_NAME, data_dir)
    return ca


def ensure_server_cert(data_dir: Path, hosts: list[str]) -> tuple[Path, Path]:
    """server.crt / server.key in `data_dir`; re-issued when missing, for other hosts, expiring or foreign."""
    ca = load_or_create_ca(data_dir)
    cert_path, key_path = data_dir / "server.crt", data_dir / "server.key"
    wanted = _san_set(_san_names(hosts))
    reason = ""
    if not (cert_path.exists() and key_path.exists()):
        reason = "no serving certificate yet"
    else:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = _load_key(key_path.read_bytes())
        except ValueError:
            reason = "unreadable serving certificate"
        else:
            now = _now()
            if not _same_public_key(cert, key):
                reason = "serving key does not match certificate"
            elif not ca.issued(cert):
                reason = "serving certificate not issued by the current CA"
            elif _cert_sans(cert) != wanted:
                reason = "host list changed"
            elif cert.not_valid_after_utc - now < RENEW_BEFORE or cert.not_valid_before_utc > now:
                reason = "serving certificate expiring"
    if reason:
        cert_pem, key_pem = ca.issue_server_cert(hosts)
        _write_atomic(key_path, key_pem, 0o600)
        _write_atomic(cert_path, cert_pem, 0o600)
        log.info("issued serving certificate (%s) for %s", reason, sorted(v for _, v in wanted))
    return cert_path, key_path


def server_ssl_context(data_dir: Path, hosts: list[str]) -> ssl.SSLContext:
    """A TLS server context with a serving certificate from the data directory's CA."""
    cert_path, key_path = ensure_server_cert(data_dir, hosts)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    # aiohttp speaks HTTP/1.1 only; advertising it keeps Go clients (kubectl) from trying h2.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --- kubeconfig -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _kubeconfig_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of a shared kubeconfig.

    Uses `<file>.lock` created exclusively, the same convention client-go (kubectl config ...) follows, so
    we also never interleave with kubectl editing the file. A lock left by a crashed writer goes stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + _LOCK_TIMEOUT
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > _LOCK_STALE_AFTER:
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"kubeconfig {path} is locked ({lock})") from None
            time.sleep(0.02)
            continue
        os.close(fd)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _read_kubeconfig(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        # Never clobber a file we do not understand: it may hold someone's real clusters.
        raise ValueError(f"{path} is not a kubeconfig (top level is not a mapping)")
    return loaded


def _upsert(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the entry of the same name in place (keeps file order stable), else append."""
    out, replaced = [], False
    for e in entries:
        if isinstance(e, dict) and e.get("name") == entry["name"]:
            if not replaced:
                out.append(entry)
                replaced = True
            continue
        out.append(e)
    if not replaced:
        out.append(entry)
    return out


def _dump_kubeconfig(path: Path, cfg: dict[str, Any]) -> None:
    text = yaml.safe_dump(cfg, default_flow_style=False, sort_keys=False)
    _write_atomic(path, text.encode(), 0o600)


def _real(path: Path) -> Path:
    # Follow a symlinked ~/.kube/config so we rewrite the target, not replace the link.
    return Path(os.path.realpath(path))


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    token: str,
    context: str,
    cluster_name: str | None = None,
    user_name: str | None = None,
    set_current: bool = True,
) -> None:
    """Write or merge a cluster/user/context into the kubeconfig at `path` (mode 0600, atomic).

    Entries of other names are kept; entries with the same names are replaced.
    """
    path = _real(path)
    cluster_name = cluster_name or context
    user_name = user_name or context
    with _kubeconfig_lock(path):
        cfg = _read_kubeconfig(path)
        cfg.setdefault("apiVersion", "v1")
        cfg.setdefault("kind", "Config")
        cfg["clusters"] = _upsert(
            list(cfg.get("clusters") or []),
            {
                "name": cluster_name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            },
        )
        cfg["users"] = _upsert(list(cfg.get("users") or []), {"name": user_name, "user": {"token": token}})
        cfg["contexts"] = _upsert(
            list(cfg.get("contexts") or []),
            {"name": context, "context": {"cluster": cluster_name, "user": user_name}},
        )
        if set_current or not cfg.get("current-context"):
            cfg["current-context"] = context
        cfg.setdefault("preferences", {})
        _dump_kubeconfig(path, cfg)
    log.info("wrote context %s (server %s) to kubeconfig %s", context, server, path)


def remove_kubeconfig_context(path: Path, context: str) -> bool:
    """Remove a context, and its cluster and user unless another context still uses them.

    Returns whether the context existed.
    """
    path = _real(path)
    if not path.exists():
        return False
    with _kubeconfig_lock(path):
        cfg = _read_kubeconfig(path)
        contexts = [c for c in cfg.get("contexts") or [] if isinstance(c, dict)]
        target = next((c for c in contexts if c.get("name") == context), None)
        if target is None:
            return False
        remaining = [c for c in contexts if c.get("name") != context]
        ref = target.get("context") or {}
        used_clusters = {(c.get("context") or {}).get("cluster") for c in remaining}
        used_users = {(c.get("context") or {}).get("user") for c in remaining}
        cfg["contexts"] = remaining
        if ref.get("cluster") and ref["cluster"] not in used_clusters:
            cfg["clusters"] = [c for c in cfg.get("clusters") or [] if c.get("name") != ref["cluster"]]
        if ref.get("user") and ref["user"] not in used_users:
            cfg["users"] = [u for u in cfg.get("users") or [] if u.get("name") != ref["user"]]
        if cfg.get("current-context") == context:
            cfg["current-context"] = ""
        _dump_kubeconfig(path, cfg)
    log.info("removed context %s from kubeconfig %s", context, path)
    return True
