"""broker-info.subm: Go-exact encoding, lenient decoding, clear errors, an owner-only file."""

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.broker.brokerinfo import (
    BrokerInfo,
    BrokerInfoError,
    decode,
    encode,
    new_psk_secret,
    read_file,
    write_file,
)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def client_token(**data: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "submariner-k8s-broker-admin-token-x2v7k",
            "namespace": "submariner-k8s-broker",
            "creationTimestamp": "2024-10-07T12:00:00Z",
        },
        "data": {
            "ca.crt": b64("-----BEGIN CERTIFICATE-----\n"),
            "namespace": b64("submariner-k8s-broker"),
            "token": b64("eyJhbGciOiJSUzI1NiJ9.payload.sig"),
            **data,
        },
        "type": "kubernetes.io/service-account-token",
    }


PSK: dict[str, Any] = {
    "metadata": {"name": "submariner-ipsec-psk", "creationTimestamp": None},
    "data": {"psk": b64(b"k" * 48)},
}


def info(**overrides: Any) -> BrokerInfo:
    fields: dict[str, Any] = {
        "broker_url": "https://172.18.0.4:6443",
        "client_token": client_token(),
        "ipsec_psk": PSK,
        "service_discovery": True,
        "components": ["connectivity", "service-discovery"],
        "custom_domains": None,
    }
    return BrokerInfo(**{**fields, **overrides})


def to_file(doc: Any) -> str:
    """What a broker-info file holding this JSON document looks like."""
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def decoded_json(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text))


# --- encoding ------------------------------------------------------------------------------------------


def test_encoding_is_url_safe_base64_of_compact_json_in_go_key_order() -> None:
    text = encode(info())
    assert text.startswith("eyJicm9rZXJVUkwiOi")
    assert "\n" not in text and "+" not in text and "/" not in text
    assert len(text) % 4 == 0
    raw = base64.urlsafe_b64decode(text).decode()
    assert ": " not in raw and ", " not in raw.replace("BEGIN CERTIFICATE", "")
    assert list(json.loads(raw)) == [
        "brokerURL",
        "ClientToken",
        "IPSecPSK",
        "ServiceDiscovery",
        "Components",
        "CustomDomains",
    ]


def test_exact_go_bytes() -> None:
    token = {
        "data": {"token": "dG9r", "namespace": "YnJva2Vy"},
        "type": "kubernetes.io/service-account-token",
        "metadata": {"namespace": "broker", "name": "admin-token"},
    }
    text = encode(
        info(
            client_token=token,
            components=["service-discovery", "connectivity"],
            custom_domains=["a.example&b"],
        )
    )
    expected = (
        '{"brokerURL":"https://172.18.0.4:6443",'
        '"ClientToken":{"metadata":{"name":"admin-token","namespace":"broker","creationTimestamp":null},'
        '"data":{"namespace":"YnJva2Vy","token":"dG9r"},"type":"kubernetes.io/service-account-token"},'
        '"IPSecPSK":{"metadata":{"name":"submariner-ipsec-psk","creationTimestamp":null},'
        f'"data":{{"psk":"{PSK["data"]["psk"]}"}}}},'
        '"ServiceDiscovery":true,"Components":["connectivity","service-discovery"],'
        '"CustomDomains":["a.example\\u0026b"]}'
    )
    assert base64.urlsafe_b64decode(text).decode() == expected
    assert text == base64.urlsafe_b64encode(expected.encode()).decode()


def test_empty_components_omitted_and_no_custom_domains_is_null() -> None:
    doc = decoded_json(encode(info(components=[], service_discovery=False)))
    assert "Components" not in doc
    assert doc["CustomDomains"] is None
    assert doc["ServiceDiscovery"] is False


def test_new_psk_secret() -> None:
    first, second = new_psk_secret(), new_psk_secret()
    assert list(first) == ["metadata", "data"]
    assert first["metadata"] == {"name": "submariner-ipsec-psk", "creationTimestamp": None}
    assert len(base64.b64decode(first["data"]["psk"], validate=True)) == 48
    assert first["data"]["psk"] != second["data"]["psk"]
    assert decoded_json(encode(info(ipsec_psk=first)))["IPSecPSK"] == first


# --- decoding ------------------------------------------------------------------------------------------


def test_round_trip() -> None:
    original = info(custom_domains=["example.org"])
    decoded = decode(encode(original))
    assert decoded.broker_url == original.broker_url
    assert decoded.ipsec_psk == PSK
    assert decoded.client_token == original.client_token
    assert decoded.components == ["connectivity", "service-discovery"]
    assert decoded.custom_domains == ["example.org"]
    assert decoded.service_discovery is True
    assert encode(decoded) == encode(original)
    assert decoded.token == "eyJhbGciOiJSUzI1NiJ9.payload.sig"
    assert decoded.broker_namespace == "submariner-k8s-broker"
    assert decoded.ca_crt == b"-----BEGIN CERTIFICATE-----\n"
    assert decoded.psk == b"k" * 48


def test_decode_equals_original_when_already_in_go_form() -> None:
    original = info(client_token=decode(encode(info())).client_token)
    assert decode(encode(original)) == original


def test_decode_tolerates_std_alphabet_missing_padding_whitespace_and_bytes() -> None:
    text = next(
        t
        for t in (encode(info(custom_domains=["~?>" * n])) for n in range(1, 20))
        if t.endswith("=") and "_" in t
    )
    raw = base64.urlsafe_b64decode(text)
    std = base64.b64encode(raw).decode()
    assert std != text
    expected = decode(text)
    assert decode(std) == expected
    assert decode(text.rstrip("=")) == expected
    assert text.rstrip("=") != text
    assert decode("\n  " + "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\r\n") == expected
    assert decode(text.encode()) == expected


def test_decode_keys_case_insensitively() -> None:
    doc = {
        "brokerurl": "https://b:6443",
        "CLIENTTOKEN": {"DATA": {"token": b64("t")}},
        "ipsecpsk": {"Data": {"psk": b64("p")}},
        "servicediscovery": True,
        "components": ["connectivity"],
        "customdomains": ["d"],
    }
    got = decode(to_file(doc))
    assert got.broker_url == "https://b:6443"
    assert got.token == "t"
    assert got.psk == b"p"
    assert got.custom_domains == ["d"]
    assert encode(got).startswith("eyJicm9rZXJVUkwiOi")


def test_legacy_file_without_components() -> None:
    doc = {
        "brokerURL": "https://b:6443",
        "ClientToken": client_token(),
        "IPSecPSK": PSK,
        "ServiceDiscovery": True,
    }
    got = decode(to_file(doc))
    assert got.components == []
    assert got.custom_domains is None
    assert got.service_discovery_enabled and got.connectivity_enabled


def test_discovery_only_broker_may_lack_psk() -> None:
    doc = {
        "brokerURL": "https://b:6443",
        "ClientToken": client_token(),
        "IPSecPSK": None,
        "Components": ["service-discovery"],
    }
    got = decode(to_file(doc))
    assert got.ipsec_psk is None and got.psk is None
    assert got.service_discovery_enabled and not got.connectivity_enabled
    assert decoded_json(encode(got))["IPSecPSK"] is None


GOOD: dict[str, Any] = {"brokerURL": "https://b:6443", "ClientToken": client_token(), "IPSecPSK": PSK}


def with_(**changes: Any) -> str:
    doc = {**GOOD, **changes}
    return to_file({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "broker-info is empty"),
        ("  \n\t ", "broker-info is empty"),
        ("eyJi!cm9r", "not base64: bad character '!' at position 4"),
        ("eyJicm9r\u00e9", "not base64: bad character"),
        (b"eyJi\xff\xfe", "not base64: it contains non-ASCII bytes"),
        ("eyJi=cm9r", "not base64: padding '=' inside the data"),
        ("eyJicm9rZ", "not base64: its length is impossible"),
        (base64.b64encode(b"\xff\xfe\x00").decode(), "does not contain JSON: the decoded data is not text"),
        (base64.b64encode(b'{"brokerURL": ').decode(), "does not contain valid JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "broker-info JSON must be an object, not a list"),
        (base64.b64encode(b"[" * 100000 + b"]" * 100000).decode(), "does not contain valid JSON"),
        (with_(brokerURL=_DROP), "broker-info has no brokerURL"),
        (with_(brokerURL=""), "broker-info has no brokerURL"),
        (with_(brokerURL=6443), "brokerURL must be a string, not a number"),
        (with_(brokerURL="172.18.0.4:6443"), 'brokerURL "172.18.0.4:6443" has no scheme'),
        (with_(brokerURL="localhost:6443"), 'brokerURL "localhost:6443" has no scheme'),
        (with_(brokerURL="ftp://b:6443"), "unsupported scheme 'ftp'"),
        (with_(brokerURL="https://"), "has no host"),
        (with_(brokerURL="https://b:99999"), "is not a valid URL"),
        (with_(brokerURL="https://[::1"), "is not a valid URL"),
        (with_(brokerURL="https://b:6443\n"), "contains whitespace or control characters"),
        (with_(ClientToken=_DROP), "broker-info has no ClientToken"),
        (with_(ClientToken=None), "broker-info has no ClientToken"),
        (with_(ClientToken="token"), "ClientToken must be a Secret object, not a string"),
        (with_(ClientToken={"metadata": {}}), "ClientToken has no data"),
        (with_(ClientToken={"data": {}}), "ClientToken has no data.token"),
        (
            with_(ClientToken={"data": {"token": 7}}),
            "ClientToken data.token must be a base64 string, not a number",
        ),
        (with_(ClientToken={"data": {"token": "not base64!"}}), "ClientToken data.token is not valid base64"),
        (with_(ClientToken=client_token(**{"ca.crt": "%%%"})), "ClientToken data.ca.crt is not valid base64"),
        (with_(ClientToken={"data": {"token": b64(b"\xff")}}), "ClientToken data.token is not text"),
        (with_(IPSecPSK=_DROP), "has no IPSecPSK, which the connectivity component needs"),
        (with_(IPSecPSK=None, Components=["connectivity"]), "has no IPSecPSK"),
        (with_(IPSecPSK={"data": {"psk": ""}}), "IPSecPSK has no data.psk"),
        (with_(IPSecPSK=[]), "IPSecPSK must be a Secret object, not a list"),
        (with_(ServiceDiscovery="yes"), 'ServiceDiscovery must be true or false, not "yes"'),
        (with_(Components="connectivity"), "Components must be a list of strings"),
        (with_(CustomDomains=["ok", 1]), "CustomDomains must be a list of strings"),
    ],
)
def test_malformed_input_raises_a_clear_one_line_error(text: str | bytes, message: str) -> None:
    with pytest.raises(BrokerInfoError) as exc:
        decode(text)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
KEYS = [
    "brokerURL",
    "ClientToken",
    "IPSecPSK",
    "ServiceDiscovery",
    "Components",
    "CustomDomains",
    "clienttoken",
]
secretish = st.fixed_dictionaries(
    {},
    optional={
        "data": st.dictionaries(
            st.sampled_from(["token", "psk", "ca.crt", "namespace"]),
            st.one_of(json_values, st.binary(max_size=8).map(b64)),
        ),
        "metadata": json_values,
    },
)
documents = st.dictionaries(
    st.sampled_from(KEYS),
    st.one_of(json_values, secretish, st.sampled_from(["https://b:6443", "http://[::1]:1", "https://b:0"])),
)


def _decode_or_error(data: str | bytes) -> None:
    try:
        result = decode(data)
    except BrokerInfoError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(result, BrokerInfo)
        decode(encode(result))
        assert isinstance(result.token, str)
        assert result.broker_namespace is None or isinstance(result.broker_namespace, str)


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary()))
def test_decode_never_raises_anything_else_on_random_input(data: str | bytes) -> None:
    _decode_or_error(data)


@settings(max_examples=300)
@given(st.one_of(json_values, documents), st.booleans())
def test_decode_never_raises_anything_else_on_random_json(doc: Any, url_safe: bool) -> None:
    raw = json.dumps(doc).encode()
    _decode_or_error((base64.urlsafe_b64encode if url_safe else base64.b64encode)(raw).decode())


@given(
    url=st.sampled_from(
        ["https://172.18.0.4:6443", "http://broker.example:8080/path", "https://[fd00::1]:6443"]
    ),
    components=st.lists(st.sampled_from(["connectivity", "service-discovery"]), unique=True),
    domains=st.none() | st.lists(st.text(max_size=12)),
    token=st.text(min_size=1, max_size=30),
)
def test_encode_decode_round_trip_property(
    url: str, components: list[str], domains: list[str] | None, token: str
) -> None:
    original = info(
        broker_url=url,
        components=components,
        custom_domains=domains,
        client_token={"data": {"token": b64(token)}},
        service_discovery="service-discovery" in components,
    )
    text = encode(original)
    got = decode(text)
    assert encode(got) == text
    assert got.token == token
    assert got.custom_domains == domains
    assert got.components == sorted(components)


# --- files ---------------------------------------------------------------------------------------------


def test_write_file_mode_0600_despite_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "broker-info.subm"
    old = os.umask(0)
    try:
        assert write_file(path, info()) is None
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == encode(info())
    assert read_file(path) == decode(encode(info()))


def test_file_is_created_0600_never_chmodded_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        calls.append((flags, mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    write_file(tmp_path / "broker-info.subm", info())
    [(flags, mode)] = calls
    assert mode == 0o600
    assert flags & os.O_CREAT and flags & os.O_EXCL


@pytest.mark.parametrize(
    ("now", "suffix"),
    [
        (datetime(2024, 10, 7, 12, 34, 56, tzinfo=UTC), "2024-10-07T12_34_56Z"),
        (
            datetime(2024, 10, 7, 12, 34, 56, 999, tzinfo=timezone(timedelta(hours=2))),
            "2024-10-07T12_34_56+02_00",
        ),
        (
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            "2024-01-02T03_04_05-05_30",
        ),
    ],
)
def test_existing_file_renamed_with_rfc3339_time(tmp_path: Path, now: datetime, suffix: str) -> None:
    path = tmp_path / "broker-info.subm"
    path.write_text("old content")
    backup = write_file(path, info(), now=now)
    assert backup == tmp_path / f"broker-info.subm.{suffix}"
    assert backup.read_text() == "old content"
    assert path.read_text() == encode(info())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_backup_never_clobbers_an_earlier_backup(tmp_path: Path) -> None:
    path = tmp_path / "broker-info.subm"
    now = datetime(2024, 10, 7, 12, 34, 56, tzinfo=UTC)
    path.write_text("one")
    first = write_file(path, info(), now=now)
    path.write_text("two")
    second = write_file(path, info(), now=now)
    assert first is not None and second is not None
    assert second == first.with_name(first.name + ".1")
    assert (first.read_text(), second.read_text()) == ("one", "two")


def test_symlink_at_path_is_moved_aside_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "broker-info.subm"
    path.symlink_to(victim)
    backup = write_file(path, info(), now=datetime(2024, 10, 7, tzinfo=UTC))
    assert victim.read_text() == "keep me"
    assert backup is not None and backup.is_symlink()
    assert not path.is_symlink() and path.read_text() == encode(info())


def test_directory_at_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        write_file(tmp_path, info())


def test_read_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broker-info.subm"
    path.write_text("not base64!\n")
    with pytest.raises(BrokerInfoError, match=r"broker-info\.subm: broker-info is not base64"):
        read_file(path)
    with pytest.raises(FileNotFoundError):
        read_file(tmp_path / "missing.subm")


def test_read_file_tolerates_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "broker-info.subm"
    path.write_text(encode(info()) + "\n")
    assert read_file(path).broker_url == "https://172.18.0.4:6443"
