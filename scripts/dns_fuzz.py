#!/usr/bin/env python3
"""Throw malformed and mutated DNS packets at a running `lighthouse-dns` over UDP on loopback, then check it
still answers.

    scripts/dns_fuzz.py --port 5353 [--count 1000000] [--seconds 300] [--seed 1] [--name example.org]

Only loopback targets are accepted. The packet generator (`packets`) is shared with the in-process fuzz test
(tests/lighthouse/test_dns_fuzz.py), which feeds the same stream through `DnsServer.handle_datagram`.
Prints packets sent, replies received, elapsed time and whether the server still answers; exit status 0 only
when it does.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence

TYPES = (1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 41, 43, 46, 48, 52, 64, 65, 99, 251, 252, 255, 256, 65535)
OPTIONS = (3, 8, 9, 10, 11, 12, 15, 20292, 65001)


def _name(rng: random.Random, names: Sequence[str]) -> bytes:
    """A question name in wire form: a served one (random case), a random one, or an odd one."""
    roll = rng.random()
    if roll < 0.6:
        text = rng.choice(names)
        labels = [label for label in text.strip(".").split(".") if label]
        if rng.random() < 0.5:
            labels.insert(0, rng.choice(["www", "_udp", "a" * 63, "x", "-", "\\", "*"]))
    elif roll < 0.9:
        labels = ["".join(rng.choice("abcXYZ019-_*.") for _ in range(rng.randint(1, 20)))
                  for _ in range(rng.randint(0, 5))]
    else:
        labels = ["a" * 63] * rng.randint(3, 5)  # near or over the 255-byte limit
    out = b""
    for label in labels:
        raw = label.encode()[:63]
        if rng.random() < 0.5:
            raw = bytes(c ^ 0x20 if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A else c for c in raw)
        if raw:
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _opt(rng: random.Random) -> bytes:
    version = 0 if rng.random() < 0.85 else rng.randint(1, 255)
    flags = 0x8000 if rng.random() < 0.3 else 0
    options = b""
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        data = rng.randbytes(rng.choice((0, 2, 4, 8, 16, 40)))
        options += struct.pack("!HH", rng.choice(OPTIONS), len(data)) + data
    size = rng.choice((0, 100, 512, 1232, 1400, 4096, 65535))
    return b"\x00" + struct.pack("!HHBBHH", 41, size, 0, version, flags, len(options)) + options


def valid_query(rng: random.Random, names: Sequence[str]) -> bytes:
    """A well-formed query (the seed that mutations start from)."""
    edns = rng.random() < 0.6
    flags = rng.choice((0x0100, 0x0100, 0x0000, 0x0110, 0x0120))
    header = struct.pack("!HHHHHH", rng.getrandbits(16), flags, 1, 0, 0, 1 if edns else 0)
    qclass = 1 if rng.random() < 0.9 else rng.choice((3, 4, 254, 255))
    question = _name(rng, names) + struct.pack("!HH", rng.choice(TYPES), qclass)
    return header + question + (_opt(rng) if edns else b"")


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # set a byte
            data[rng.randrange(len(data))] = rng.choice((0, 0xFF, 0xC0, 0x3F, 0x40, 0x20, rng.getrandbits(8)))
        elif op == 2:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif op == 3:  # insert junk
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and len(data) >= 12:  # header counts
            data[4:12] = struct.pack("!HHHH", *(rng.choice((0, 1, 1, 2, 0xFFFF)) for _ in range(4)))
        elif op == 5 and len(data) >= 4:  # header flags (QR, opcode, Z, rcode...)
            data[2], data[3] = rng.getrandbits(8), rng.getrandbits(8)
        elif op == 6 and len(data) > 14:  # a compression pointer in the question (possibly looping)
            i = rng.randrange(12, len(data) - 1)
            data[i:i + 2] = struct.pack("!H", 0xC000 | rng.choice((12, i, 0, 0x3FFF, i + 2)))
        elif op == 7 and len(data) > 12:  # duplicate a slice (second question, repeated OPT)
            i = rng.randrange(12, len(data))
            data += data[i:]
        elif op == 8:  # append trailing bytes
            data += rng.randbytes(rng.randint(1, 30))
    return bytes(data)


def packets(seed: int, names: Sequence[str]) -> Iterator[bytes]:
    """An endless, reproducible stream: mostly mutated valid queries, some valid ones and pure noise."""
    rng = random.Random(seed)
    while True:
        roll = rng.random()
        if roll < 0.55:
            yield mutate(rng, valid_query(rng, names))
        elif roll < 0.75:
            yield valid_query(rng, names)
        elif roll < 0.92:
            yield rng.randbytes(rng.choice((0, 1, 5, 11, 12, 13, 17, 30, 64, 300, 600)))
        else:
            header = struct.pack("!HHHHHH", rng.getrandbits(16), rng.getrandbits(16) & 0x7FFF, 1, 0, 0, 0)
            yield header + rng.randbytes(rng.randint(0, 40))


def probe(sock: socket.socket, target: tuple[str, int], name: str, timeout: float = 2.0) -> bool:
    """One ordinary query; True when a reply with its ID comes back."""
    qid = random.getrandbits(16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".") if p) + b"\x00"
    sock.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01", target)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = sock.recv(65535)
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=300.0, help="stop after this long even if --count not reached")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--name", action="append", help="served names to mutate (repeatable)")
    args = p.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        print("dns_fuzz: refusing a non-loopback target", file=sys.stderr)
        return 2
    names = args.name or ["example.org.", "kubernetes.default.svc.clusterset.local.", "."]
    target = (args.host, args.port)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setblocking(False)
    sent = replies = 0
    start = time.monotonic()
    stream = packets(args.seed, names)
    while sent < args.count and time.monotonic() - start < args.seconds:
        for _ in range(256):
            try:
                sock.sendto(next(stream), target)
                sent += 1
            except BlockingIOError:
                break
            except OSError:
                sent += 1  # e.g. a zero-length datagram refused locally
        while True:
            try:
                sock.recv(65535)
                replies += 1
            except BlockingIOError:
                break
            except OSError:
                break
        if sent % 8192 < 256:
            time.sleep(0.001)  # let the server breathe: this measures robustness, not throughput
    drain_until = time.monotonic() + 1.0
    while time.monotonic() < drain_until:
        ready, _, _ = select.select([sock], [], [], 0.1)
        if ready:
            try:
                sock.recv(65535)
                replies += 1
            except OSError:
                pass
    sock.setblocking(True)
    alive = all(probe(sock, target, name) for name in names[:1] * 3)
    elapsed = time.monotonic() - start
    print(f"dns_fuzz: sent {sent} packets, {replies} replies, {elapsed:.1f} s "
          f"({sent / max(elapsed, 1e-9):.0f} packets/s); server still answers: {'yes' if alive else 'NO'}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
