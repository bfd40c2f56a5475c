"""A bounded HTTP availability probe: one GET per interval, a line "<seconds since start> <1|0>" per request,
stopping `settle` seconds after traffic came back from a failure, or at `limit` seconds.

Used to measure an outage (a gateway failover) from inside a lab pod: the longest gap between two successes is
the outage. At most 1/interval requests per second, to one lab address, never longer than `limit`.

    python3 httpprobe.py URL INTERVAL LIMIT SETTLE
"""

from __future__ import annotations

import sys
import time
import urllib.request


def probe(url: str, interval: float, limit: float, settle: float) -> None:
    start = time.monotonic()
    ok_since_fail: float | None = None
    failed = False
    while time.monotonic() - start < limit:
        t = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=interval) as resp:
                resp.read()
            ok = True
        except Exception:
            ok = False
        print(f"{t - start:.3f} {int(ok)}", flush=True)
        failed = failed or not ok
        if ok and failed:
            ok_since_fail = ok_since_fail or t
            if t - ok_since_fail > settle:
                break
        elif not ok:
            ok_since_fail = None
        time.sleep(max(0.0, interval - (time.monotonic() - t)))


def samples(output: str) -> list[tuple[float, bool]]:
    """The probe's output as (seconds since start, success) pairs."""
    return [(float(t), ok == "1") for t, ok in (line.split() for line in output.splitlines() if line.strip())]


def outage(points: list[tuple[float, bool]]) -> float:
    """The longest time without a successful request (from the last success before a failure to the next)."""
    worst, last_ok = 0.0, None
    for t, ok in points:
        if ok:
            if last_ok is not None:
                worst = max(worst, t - last_ok)
            last_ok = t
    return worst


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    probe(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
