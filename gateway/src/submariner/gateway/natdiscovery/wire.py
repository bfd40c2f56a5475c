"""The NAT-discovery protobuf messages (dataplane.md §2.9), encoded by hand.

The schema is five small proto3 messages; a hand-rolled varint codec avoids a protobuf runtime dependency
and lets the decoder treat every malformed datagram as one exception (`WireError`) instead of crashing the
listener. Encoding follows proto3 rules (default scalars omitted, set sub-messages always written) so our
bytes are what upstream's Go `proto.Marshal` produces and upstream gateways can parse them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WireError(ValueError):
    """The bytes are not a valid SubmarinerNATDiscoveryMessage."""


class ResponseType(enum.IntEnum):
    OK = 0
    NAT_DETECTED = 1
    UNKNOWN_DST_CLUSTER = 2
    UNKNOWN_DST_ENDPOINT = 3
    MALFORMED = 4


@dataclass(frozen=True)
class IPPortPair:
    ip: str = ""
    port: int = 0


@dataclass(frozen=True)
class EndpointDetails:
    cluster_id: str = ""
    endpoint_id: str = ""


@dataclass(frozen=True)
class Request:
    request_number: int = 0
    sender: EndpointDetails | None = None
    receiver: EndpointDetails | None = None
    using_src: IPPortPair | None = None
    using_dst: IPPortPair | None = None


@dataclass(frozen=True)
class Response:
    request_number: int = 0
    response: int = ResponseType.OK
    sender: EndpointDetails | None = None
    receiver: EndpointDetails | None = None
    src_ip_nat_detected: bool = False
    src_port_nat_detected: bool = False
    dst_ip_nat_detected: bool = False
    received_src: IPPortPair | None = None


@dataclass(frozen=True)
class Message:
    version: int = 0
    request: Request | None = None
    response: Response | None = None


REQUEST_VERSION = 1
RESPONSE_VERSION = 0
_U64 = (1 << 64) - 1

# ------------------------------------------------------------------------------------------ encoding


def _varint(value: int) -> bytes:
    value &= _U64  # negative int32/int64 are sent as 10-byte two's complement, as Go does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _int_field(num: int, value: int) -> bytes:
    return _key(num, 0) + _varint(value) if value else b""


def _bytes_field(num: int, data: bytes) -> bytes:
    return _key(num, 2) + _varint(len(data)) + data


def _str_field(num: int, value: str) -> bytes:
    return _bytes_field(num, value.encode()) if value else b""


def _msg_field(num: int, data: bytes | None) -> bytes:
    return b"" if data is None else _bytes_field(num, data)


def _ipport(p: IPPortPair | None) -> bytes | None:
    return None if p is None else _str_field(1, p.ip) + _int_field(2, p.port)


def _details(d: EndpointDetails | None) -> bytes | None:
    return None if d is None else _str_field(1, d.cluster_id) + _str_field(2, d.endpoint_id)


def encode(msg: Message) -> bytes:
    out = _int_field(1, msg.version)
    if msg.request is not None:
        r = msg.request
        out += _bytes_field(2, _int_field(1, r.request_number) + _msg_field(2, _details(r.sender))
                            + _msg_field(3, _details(r.receiver)) + _msg_field(4, _ipport(r.using_src))
                            + _msg_field(5, _ipport(r.using_dst)))
    elif msg.response is not None:
        s = msg.response
        out += _bytes_field(3, _int_field(1, s.request_number) + _int_field(2, int(s.response))
                            + _msg_field(3, _details(s.sender)) + _msg_field(4, _details(s.receiver))
                            + _int_field(5, int(s.src_ip_nat_detected)) + _int_field(6, int(s.src_port_nat_detected))
                            + _int_field(7, int(s.dst_ip_nat_detected)) + _msg_field(8, _ipport(s.received_src)))
    return out


# ------------------------------------------------------------------------------------------ decoding

_Fields = dict[int, list[int | bytes]]


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _fields(data: bytes) -> _Fields:
    """Every field of one message: varints as ints, length-delimited as bytes; fixed widths skipped."""
    out: _Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
            out.setdefault(num, []).append(value)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise WireError("length-delimited field runs past the end")
            out.setdefault(num, []).append(data[pos:pos + size])
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise WireError("fixed-width field runs past the end")
    return out


def _last_int(fields: _Fields, num: int) -> int:
    values = fields.get(num)
    if not values:
        return 0
    value = values[-1]
    if not isinstance(value, int):
        raise WireError(f"field {num}: expected a varint")
    return value


def _int32(fields: _Fields, num: int) -> int:
    value = _last_int(fields, num) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _last_bytes(fields: _Fields, num: int) -> bytes | None:
    values = fields.get(num)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, bytes):
        raise WireError(f"field {num}: expected length-delimited data")
    return value


def _string(fields: _Fields, num: int) -> str:
    raw = _last_bytes(fields, num)
    try:
        return raw.decode() if raw is not None else ""
    except UnicodeDecodeError:
        raise WireError(f"field {num}: not UTF-8") from None


def _dec_ipport(raw: bytes | None) -> IPPortPair | None:
    if raw is None:
        return None
    f = _fields(raw)
    return IPPortPair(_string(f, 1), _int32(f, 2))


def _dec_details(raw: bytes | None) -> EndpointDetails | None:
    if raw is None:
        return None
    f = _fields(raw)
    return EndpointDetails(_string(f, 1), _string(f, 2))


def decode(data: bytes) -> Message:
    """Parse one datagram; any defect raises WireError (never another exception)."""
    f = _fields(data)
    version = _int32(f, 1)
    # oneof: the last of request/response present on the wire wins
    which = None
    pos_req = pos_resp = -1
    order = list(f)
    if 2 in f:
        pos_req = order.index(2)
    if 3 in f:
        pos_resp = order.index(3)
    if pos_req >= 0 or pos_resp >= 0:
        which = 2 if pos_req > pos_resp else 3
    if which == 2:
        r = _fields(_last_bytes(f, 2) or b"")
        req = Request(_last_int(r, 1), _dec_details(_last_bytes(r, 2)), _dec_details(_last_bytes(r, 3)),
                      _dec_ipport(_last_bytes(r, 4)), _dec_ipport(_last_bytes(r, 5)))
        return Message(version, request=req)
    if which == 3:
        s = _fields(_last_bytes(f, 3) or b"")
        resp = Response(_last_int(s, 1), _int32(s, 2), _dec_details(_last_bytes(s, 3)),
                        _dec_details(_last_bytes(s, 4)), bool(_last_int(s, 5)), bool(_last_int(s, 6)),
                        bool(_last_int(s, 7)), _dec_ipport(_last_bytes(s, 8)))
        return Message(version, response=resp)
    return Message(version)
