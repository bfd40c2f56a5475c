"""Decode Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into JSON-shaped dicts.

Why: kubectl sends the objects its typed generators build (`create namespace`, `create deployment`,
`create secret`, `create token`, ...) as protobuf and does not retry with JSON on 415.  The server
stores JSON, so this module turns such a body into exactly the dict Kubernetes' JSON encoding of the
same object would give.  It is a small hand-written wire decoder driven by the table in
`protobuf_schema.py` (generated from the upstream .proto files), not a protobuf library: the format is
simple, the dependency would be large, and the JSON mapping rules are Kubernetes-specific anyway.

Wire format: the 4-byte magic `k8s\\x00`, then a `runtime.Unknown` message
`{typeMeta{apiVersion=1, kind=2}=1, raw=2, contentEncoding=3, contentType=4}` whose `raw` is the object.

JSON mapping:
* Special types: `meta.v1.Time` -> RFC 3339 seconds (`2026-11-26T03:44:47Z`, zero time omitted),
  `MicroTime` -> RFC 3339 with microseconds, `Duration` -> Go duration string (`1h0m0s`),
  `IntOrString` -> int or string, `Quantity` -> its string, `RawExtension`/`FieldsV1` -> the embedded
  JSON (or a nested protobuf object), `bytes` -> standard base64, maps -> objects.
* Empty values: gogo-protobuf writes every non-pointer scalar, so an unset string arrives as `""`.
  Kubernetes' JSON tags mostly say `omitempty`, so the decoder drops `""`, `0`, `false`, empty
  lists/maps and empty nested messages - except for the fields the schema marks "keep zero": Go
  pointer fields (`replicas: 0`, `allowPrivilegeEscalation: false`, `storageClassName: ""`), pointer
  messages whose `{}` means something (`emptyDir: {}`, label selectors) and a few non-omitempty status
  fields.  A non-pointer integer that is legitimately 0 and has no `omitempty` (e.g. a status counter)
  is thus dropped unless listed; for request bodies that is equivalent, since absent decodes to 0.
  List elements and map values are never dropped.

Every malformed input (bad magic, truncated varint, length past the end, wrong wire type, unknown
kind, ...) raises `ApiError(400, ...)`; nothing else escapes `decode_k8s_protobuf`.  Work is linear in
the input size (nested messages are at most as deep as the schema, plus a fixed limit for nested
RawExtensions).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ApiError
from .protobuf_schema import MESSAGES, TOP_LEVEL

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_MAX_DEPTH = 100
_MAX_FIELD_NUMBER = (1 << 29) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME_SECONDS = -62135596800  # time.Time{}.Unix(): Go's zero time, which JSON-encodes as null

# Wire type each scalar kind is written with (packed repeated numerics use 2 instead).
_WIRE_TYPE = {
    "int32": 0, "int64": 0, "uint32": 0, "uint64": 0, "sint32": 0, "sint64": 0, "bool": 0, "enum": 0,
    "fixed64": 1, "sfixed64": 1, "double": 1,
    "string": 2, "bytes": 2,
    "fixed32": 5, "sfixed32": 5, "float": 5,
}

# A scanned field: (number, wire type, value or start offset, end offset for length-delimited).
_Raw = tuple[int, int, int, int]


class _Malformed(Exception):
    """Internal: becomes ApiError(400) at the top, with the object kind as context."""


def decode_k8s_protobuf(data: bytes) -> dict[str, Any]:
    """Decode a `k8s\\x00`-prefixed protobuf body into the dict Kubernetes' JSON encoding would give."""
    try:
        return _decode_envelope(memoryview(bytes(data)), 0)
    except ApiError:
        raise
    except _Malformed as e:
        raise ApiError(400, f"malformed protobuf request body: {e}") from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError, struct.error) as e:
        # Safety net: any decoder bug on hostile input is still the client's 400, never a 500.
        raise ApiError(400, f"malformed protobuf request body: internal decoder error ({type(e).__name__})") \
            from None


# ------------------------------------------------------------------------------------------ envelope


def _decode_envelope(buf: memoryview, depth: int) -> dict[str, Any]:
    if bytes(buf[:4]) != MAGIC:
        raise ApiError(400, "malformed protobuf request body: missing the Kubernetes protobuf prefix 'k8s\\x00' "
                            f"(got {bytes(buf[:4])!r}); send application/json instead")
    api_version = kind = content_encoding = content_type = ""
    raw_span = (4, 4)
    for number, wt, a, b in _scan(buf, 4, len(buf)):
        if number == 1:
            _want(wt, 2, "runtime.Unknown.typeMeta")
            for n2, wt2, a2, b2 in _scan(buf, a, b):
                if n2 == 1:
                    _want(wt2, 2, "TypeMeta.apiVersion")
                    api_version = _text(buf, a2, b2)
                elif n2 == 2:
                    _want(wt2, 2, "TypeMeta.kind")
                    kind = _text(buf, a2, b2)
        elif number == 2:
            _want(wt, 2, "runtime.Unknown.raw")
            raw_span = (a, b)
        elif number == 3:
            _want(wt, 2, "runtime.Unknown.contentEncoding")
            content_encoding = _text(buf, a, b)
        elif number == 4:
            _want(wt, 2, "runtime.Unknown.contentType")
            content_type = _text(buf, a, b)
    if content_encoding:
        raise ApiError(400, f"malformed protobuf request body: unsupported contentEncoding {content_encoding!r}")
    what = f"{kind or '<no kind>'} ({api_version or '<no apiVersion>'})"
    if content_type not in ("", CONTENT_TYPE):
        if content_type.split(";")[0].strip() != "application/json":
            raise ApiError(400, f"malformed protobuf request body: {what} has unsupported contentType "
                                f"{content_type!r}")
        obj = _json(buf, *raw_span)
        if not isinstance(obj, dict):
            raise ApiError(400, f"malformed protobuf request body: {what} embeds JSON that is not an object")
        return {"kind": kind, "apiVersion": api_version, **obj}
    message = TOP_LEVEL.get((api_version, kind)) or TOP_LEVEL.get(("*", kind))
    if message is None:
        raise ApiError(400, f"protobuf request bodies are not supported for kind {what}; "
                            "send application/json instead")
    try:
        body = _message(message, buf, raw_span[0], raw_span[1], depth + 1)
    except _Malformed as e:
        raise ApiError(400, f"malformed protobuf request body for {what}: {e}") from None
    return {"kind": kind, "apiVersion": api_version, **body}


# ------------------------------------------------------------------------------------- wire primitives


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _Malformed(f"varint longer than 10 bytes ending at byte {pos}")
    if result >> 64:
        raise _Malformed(f"varint overflows 64 bits ending at byte {pos}")
    return result, pos


def _scan(buf: memoryview, pos: int, end: int) -> list[_Raw]:
    """Split one message into its fields without interpreting them (linear in its length)."""
    out: list[_Raw] = []
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wt = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise _Malformed(f"invalid field number {number} before byte {pos}")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
            out.append((number, 0, value, 0))
        elif wt == 1 or wt == 5:
            size = 8 if wt == 1 else 4
            if end - pos < size:
                raise _Malformed(f"truncated {size * 8}-bit value of field {number} at byte {pos}")
            out.append((number, wt, int.from_bytes(buf[pos:pos + size], "little"), 0))
            pos += size
        elif wt == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Malformed(f"length {length} of field {number} at byte {pos} runs past the end "
                                 f"of its enclosing message ({end - pos} bytes left)")
            out.append((number, 2, pos, pos + length))
            pos += length
        else:
            raise _Malformed(f"unsupported wire type {wt} for field {number} before byte {pos}")
    return out


def _want(wt: int, expected: int, what: str) -> None:
    if wt != expected:
        raise _Malformed(f"{what} has wire type {wt}, expected {expected}")


def _text(buf: memoryview, a: int, b: int) -> str:
    # Go's JSON encoder replaces invalid UTF-8 with U+FFFD; so do we.
    return bytes(buf[a:b]).decode("utf-8", "replace")


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _float(value: int, fmt: str, size: int, what: str) -> float:
    result: float = struct.unpack(fmt, value.to_bytes(size, "little"))[0]
    if not math.isfinite(result):
        raise _Malformed(f"{what} is not a finite number")
    return result


_SCALAR: dict[str, Callable[[int, str], Any]] = {
    "int32": lambda v, _: _signed(v, 32),
    "enum": lambda v, _: _signed(v, 32),
    "int64": lambda v, _: _signed(v, 64),
    "uint32": lambda v, _: v & 0xFFFFFFFF,
    "uint64": lambda v, _: v,
    "sint32": lambda v, _: _signed(_zigzag(v & 0xFFFFFFFF), 32),
    "sint64": lambda v, _: _zigzag(v),
    "bool": lambda v, _: v != 0,
    "fixed32": lambda v, _: v,
    "fixed64": lambda v, _: v,
    "sfixed32": lambda v, _: _signed(v, 32),
    "sfixed64": lambda v, _: _signed(v, 64),
    "float": lambda v, what: _float(v, "<f", 4, what),
    "double": lambda v, what: _float(v, "<d", 8, what),
}


def _scalar(kind: str, buf: memoryview, a: int, b: int, what: str) -> Any:
    """One scalar value; `a`/`b` are the value (non length-delimited) or the byte span (strings)."""
    if kind == "string":
        return _text(buf, a, b)
    if kind == "bytes":
        return base64.b64encode(bytes(buf[a:b])).decode("ascii")
    return _SCALAR[kind](a, what)


def _packed(kind: str, buf: memoryview, a: int, b: int, what: str) -> list[Any]:
    wt = _WIRE_TYPE[kind]
    out = []
    pos = a
    while pos < b:
        if wt == 0:
            value, pos = _varint(buf, pos, b)
        else:
            size = 8 if wt == 1 else 4
            if b - pos < size:
                raise _Malformed(f"truncated packed {what}")
            value = int.from_bytes(buf[pos:pos + size], "little")
            pos += size
        out.append(_SCALAR[kind](value, what))
    return out


# ---------------------------------------------------------------------------------------- messages


def _is_empty(value: Any) -> bool:
    if value is None or value is False or value == "":
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, (list, dict)) and not value


def _message(name: str, buf: memoryview, start: int, end: int, depth: int) -> dict[str, Any]:
    """Decode one message of the schema table into its JSON object (fields in declaration order)."""
    if depth > _MAX_DEPTH:
        raise _Malformed(f"objects nested deeper than {_MAX_DEPTH} levels")
    fields = MESSAGES[name]
    short = name.rsplit(".", 1)[-1]
    values: dict[int, Any] = {}
    chunks: dict[int, list[tuple[int, int]]] = {}
    for number, wt, a, b in _scan(buf, start, end):
        spec = fields.get(number)
        if spec is None:
            continue  # unknown field: newer kubectl than our schema; Go would drop it too
        json_name, kind, type_name, repeated, _ = spec
        what = f"{short}.{json_name or type_name.rsplit('.', 1)[-1]}"
        if kind.startswith("map:"):
            _want(wt, 2, what)
            key, value = _map_entry(kind[4:], type_name, buf, a, b, depth, what)
            values.setdefault(number, {})[key] = value
        elif kind in _WIRE_TYPE:
            expected = _WIRE_TYPE[kind]
            if wt == expected:
                value = _scalar(kind, buf, a, b, what)
                if repeated:
                    values.setdefault(number, []).append(value)
                else:
                    values[number] = value
            elif repeated and wt == 2 and expected != 2:
                values.setdefault(number, []).extend(_packed(kind, buf, a, b, what))
            else:
                raise _Malformed(f"{what} has wire type {wt}, expected {expected}")
        else:
            _want(wt, 2, what)
            if repeated:
                values.setdefault(number, []).append(_value(kind, type_name, buf, a, b, depth + 1, what))
            else:
                # A non-repeated message may be split over several occurrences; protobuf merges them,
                # which is the same as decoding the concatenation.
                chunks.setdefault(number, []).append((a, b))
    for number, spans in chunks.items():
        _, kind, type_name, _, _ = fields[number]
        what = f"{short}.{fields[number][0] or type_name.rsplit('.', 1)[-1]}"
        if len(spans) == 1:
            values[number] = _value(kind, type_name, buf, spans[0][0], spans[0][1], depth + 1, what)
        else:
            joined = memoryview(b"".join(bytes(buf[a:b]) for a, b in spans))
            values[number] = _value(kind, type_name, joined, 0, len(joined), depth + 1, what)
    out: dict[str, Any] = {}
    for number, (json_name, _, _, _, keep) in fields.items():
        if number not in values:
            continue
        value = values[number]
        if value is None or (not keep and _is_empty(value)):
            continue
        if json_name == "":
            out.update(value)  # Go-embedded (`json:",inline"`) struct
        else:
            out[json_name] = value
    return out


def _map_entry(kind: str, type_name: str, buf: memoryview, a: int, b: int, depth: int,
               what: str) -> tuple[str, Any]:
    key = ""
    value: Any = None
    for number, wt, x, y in _scan(buf, a, b):
        if number == 1:
            _want(wt, 2, f"{what} map key")
            key = _text(buf, x, y)
        elif number == 2:
            if kind in _WIRE_TYPE:
                _want(wt, _WIRE_TYPE[kind], f"{what}[{key!r}]")
                value = _scalar(kind, buf, x, y, what)
            else:
                _want(wt, 2, f"{what}[{key!r}]")
                value = _value(kind, type_name, buf, x, y, depth + 1, what)
    if value is None:  # absent value: the zero value of its type
        if kind in _WIRE_TYPE:
            value = "" if kind in ("string", "bytes") else _scalar(kind, buf, 0, 0, what)
        else:
            value = _value(kind, type_name, buf, 0, 0, depth + 1, what)
    return key, value


def _value(kind: str, type_name: str, buf: memoryview, a: int, b: int, depth: int, what: str) -> Any:
    """A message-typed value: a nested object or one of the special JSON forms."""
    if kind == "message":
        return _message(type_name, buf, a, b, depth)
    if kind in ("time", "microtime"):
        return _time(buf, a, b, micro=kind == "microtime", what=what)
    if kind == "intorstring":
        return _int_or_string(buf, a, b, what)
    if kind == "quantity":
        text = _string_field(buf, a, b, 1, what)
        return text or "0"  # a zero Quantity marshals as "0"
    if kind == "duration":
        return _go_duration(_int_field(buf, a, b, 1, 64, what))
    if kind == "stringlist":  # a Go []string that protobuf wraps in a message (Verbs, ExtraValue)
        items = []
        for number, wt, x, y in _scan(buf, a, b):
            if number == 1:
                _want(wt, 2, what)
                items.append(_text(buf, x, y))
        return items
    if kind == "fieldsv1":
        raw = _bytes_field(buf, a, b, 1, what)
        return _json(raw, 0, len(raw)) if len(raw) else None
    if kind == "rawextension":
        raw = _bytes_field(buf, a, b, 1, what)
        if not len(raw):
            return None
        if bytes(raw[:4]) == MAGIC:
            return _decode_envelope(raw, depth)
        return _json(raw, 0, len(raw))
    raise _Malformed(f"{what}: schema kind {kind!r} is not supported")


def _string_field(buf: memoryview, a: int, b: int, field: int, what: str) -> str:
    raw = _bytes_field(buf, a, b, field, what)
    return _text(raw, 0, len(raw))


def _bytes_field(buf: memoryview, a: int, b: int, field: int, what: str) -> memoryview:
    result = buf[0:0]
    for number, wt, x, y in _scan(buf, a, b):
        if number == field:
            _want(wt, 2, what)
            result = buf[x:y]
    return result


def _int_field(buf: memoryview, a: int, b: int, field: int, bits: int, what: str) -> int:
    result = 0
    for number, wt, x, _ in _scan(buf, a, b):
        if number == field:
            _want(wt, 0, what)
            result = _signed(x, bits)
    return result


def _json(buf: memoryview, a: int, b: int) -> Any:
    try:
        return json.loads(bytes(buf[a:b]))
    except (ValueError, RecursionError) as e:
        raise _Malformed(f"embedded JSON is invalid: {e}") from None


# ------------------------------------------------------------------------------------ special types


def _time(buf: memoryview, a: int, b: int, *, micro: bool, what: str) -> str | None:
    seconds = nanos = 0
    for number, wt, x, _ in _scan(buf, a, b):
        if number == 1:
            _want(wt, 0, f"{what}.seconds")
            seconds = _signed(x, 64)
        elif number == 2:
            _want(wt, 0, f"{what}.nanos")
            nanos = _signed(x, 32)
    if nanos == 0 and seconds in (0, _GO_ZERO_TIME_SECONDS):
        return None  # the zero time: Kubernetes writes null, i.e. the field is absent
    extra, nanos = divmod(nanos, 1_000_000_000)
    try:
        moment = _EPOCH + timedelta(seconds=seconds + extra)
    except (OverflowError, ValueError):
        raise _Malformed(f"{what}: timestamp {seconds}s is outside years 1-9999") from None
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(buf: memoryview, a: int, b: int, what: str) -> int | str:
    type_ = int_val = 0
    str_val = ""
    for number, wt, x, y in _scan(buf, a, b):
        if number == 1:
            _want(wt, 0, f"{what}.type")
            type_ = _signed(x, 64)
        elif number == 2:
            _want(wt, 0, f"{what}.intVal")
            int_val = _signed(x, 32)
        elif number == 3:
            _want(wt, 2, f"{what}.strVal")
            str_val = _text(buf, x, y)
    if type_ == 0:
        return int_val
    if type_ == 1:
        return str_val
    raise _Malformed(f"{what}: IntOrString type {type_} is neither 0 (int) nor 1 (string)")


def _frac(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    digits = len(str(unit)) - 1
    tail = f"{rest:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def _go_duration(nanoseconds: int) -> str:
    """Go's time.Duration.String(): `1h2m3.5s`, `1.5ms`, `0s`."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    n = abs(nanoseconds)
    if n < 1_000:
        return f"{sign}{n}ns"
    if n < 1_000_000:
        return f"{sign}{_frac(n, 1_000)}µs"
    if n < 1_000_000_000:
        return f"{sign}{_frac(n, 1_000_000)}ms"
    hours, rest = divmod(n, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{_frac(rest, 1_000_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return f"{sign}{text}"


__all__ = ["CONTENT_TYPE", "MAGIC", "decode_k8s_protobuf"]
