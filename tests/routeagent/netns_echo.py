"""Shared by the route agent's kernel tests: a UDP echo (the server answers with the source address it saw, so
a test can tell whether a pod's IP survived the path) and running commands in a throw-away namespace."""

from __future__ import annotations

import subprocess

ECHO_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5555))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(addr[0].encode(), addr)
"""

ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(int(sys.argv[2])):
    s.sendto(b"hi", (sys.argv[1], 5555))
    try:
        print(s.recv(2048).decode())
        break
    except (socket.timeout, OSError):
        continue
else:
    sys.exit(1)
"""


def in_ns(ns: str, *cmd: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} in {ns} failed: {result.stderr}")
    return result.stdout
