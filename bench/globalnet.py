#!/usr/bin/env python3
"""Globalnet rule programming: 1,000 and 10,000 headless-pod global IPs, one atomic iptables-restore vs one
`iptables -t nat -A` per rule.

Each global IP needs two nat rules (DNAT in SUBMARINER-GN-INGRESS, SNAT in SM-GN-EGRESS-HDLS-PODS, as in
WALKTHROUGH §4.5.2). Everything runs in throw-away network namespaces `subm-gn-bench-<random>`, deleted at the
end even on failure. Needs root.

- **batch** (what Globalnet does): render the whole ruleset from the desired state (`rules.ruleset`), and
  `IptablesRestore.apply` it: one `iptables-save` to read, one `iptables-restore --noflush` to write. Also
  timed: the same apply again (a no-op: read + compare, nothing written) and one more pod (an incremental
  change, again a single restore).
- **per-rule** (the baseline, in a fresh namespace): the same rules as one `iptables -t nat -A` process each,
  run by a shell inside the namespace in chunks; capped by `--max-seconds` per size. When the cap is hit the
  rest is extrapolated from the last chunk's rate (a lower bound: iptables-nft gets slower as the table grows)
  and the row says so.

    sudo .venv/bin/python bench/globalnet.py                 # 1,000 and 10,000 IPs
    sudo .venv/bin/python bench/globalnet.py --sizes 1000    # one size
    sudo .venv/bin/python bench/globalnet.py --json          # + a JSON summary as the last line

Goal: < 1 s for 10,000 global IPs on the batch path.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from _common import Row, log, table

from submariner.dataplane.packetfilter import IptablesRestore
from submariner.globalnet import rules
from submariner.globalnet.ipam import IPPool
from submariner.globalnet.rules import GlobalnetState

GOAL_SECONDS = 1.0
CHUNK = 250


@contextlib.contextmanager
def netns() -> Iterator[str]:
    name = f"subm-gn-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def desired(n: int) -> GlobalnetState:
    """n headless pods (10.7.x.y) with global IPs allocated as Globalnet does (highest free first)."""
    pool = IPPool("242.1.0.0/16")
    base = int(ipaddress.IPv4Address("10.7.0.1"))
    pods = {f"bench/pod-w-{i}": (str(ipaddress.IPv4Address(base + i)), pool.allocate(1)[0]) for i in range(n)}
    return GlobalnetState(local_cidrs=("10.7.0.0/16",), cluster_egress=tuple(pool.allocate(8)),
                          headless_pods=pods, remote_subnets=("242.0.0.0/16",))


def nat_rule_count(ns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"], check=True, capture_output=True,
                         text=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("-A "))


def batch(n: int) -> dict[str, Any]:
    state = desired(n)
    with netns() as ns:
        pf = IptablesRestore(netns=ns)
        t0 = time.perf_counter()
        ruleset = rules.ruleset(state)
        t1 = time.perf_counter()
        pf.apply(ruleset)
        t2 = time.perf_counter()
        changed = pf.apply(rules.ruleset(state))
        t3 = time.perf_counter()
        base = int(ipaddress.IPv4Address("10.7.0.1"))
        state.headless_pods["bench/pod-extra"] = (str(ipaddress.IPv4Address(base + n)), "242.1.0.100")
        pf.apply(rules.ruleset(state))
        t4 = time.perf_counter()
        rules_in_kernel = nat_rule_count(ns)
    return {"render_s": t1 - t0, "apply_s": t2 - t0, "noop_s": t3 - t2, "noop_changed": changed,
            "incremental_s": t4 - t3, "transactions": pf.transactions, "rules_in_kernel": rules_in_kernel}


def per_rule(n: int, max_seconds: float, workdir: Path) -> dict[str, Any]:
    state = desired(n)
    commands = [f"iptables -t nat -A {rules.INGRESS} -d {gip} -j DNAT --to-destination {ip}"
                for ip, gip in state.headless_pods.values()]
    commands += [f"iptables -t nat -A {rules.EGRESS_HDLS_PODS} -s {ip} -m mark --mark 0xC0000/0xC0000 -j SNAT "
                 f"--to-source {gip}" for ip, gip in state.headless_pods.values()]
    done = 0
    elapsed = 0.0
    last_rate = 0.0
    with netns() as ns:
        for chain in (rules.INGRESS, rules.EGRESS_HDLS_PODS):
            subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-N", chain], check=True)
        script = workdir / "chunk.sh"
        while done < len(commands) and elapsed < max_seconds:
            chunk = commands[done:done + CHUNK]
            script.write_text("set -e\n" + "\n".join(chunk) + "\n")
            t0 = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", ns, "sh", str(script)], check=True)
            took = time.perf_counter() - t0
            elapsed += took
            done += len(chunk)
            last_rate = len(chunk) / took
            log(f"per-rule n={n}: {done}/{len(commands)} rules, {elapsed:.1f}s")
        rules_in_kernel = nat_rule_count(ns)
    left = len(commands) - done
    total = elapsed + (left / last_rate if left else 0.0)
    return {"rules": len(commands), "run": done, "elapsed_s": elapsed, "total_s": total, "extrapolated": left > 0,
            "rules_in_kernel": rules_in_kernel}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="1000,10000", help="global IP counts, comma-separated")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap on the per-rule run of each size")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/globalnet.py needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    summary: dict[str, Any] = {"goal_s": GOAL_SECONDS, "sizes": {}}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="subm-gn-bench-") as tmp:
        for n in sizes:
            log(f"batch n={n}")
            b = batch(n)
            log(f"per-rule n={n}")
            r = per_rule(n, args.max_seconds, Path(tmp))
            ratio = r["total_s"] / b["apply_s"] if b["apply_s"] else 0.0
            summary["sizes"][str(n)] = {"batch": b, "per_rule": r, "ratio": ratio}
            expected = 2 * (n + 1) + 3 + 6 + 1 + 1  # (pods + the extra one) x2, hooks, EGRESS jumps, MARK, cluster
            rows += [
                Row(f"{n:,} IPs: batch apply (1 restore)", (f"{b['apply_s']:.3f}s",),
                    f"render {b['render_s']:.3f}s; {'meets' if b['apply_s'] < GOAL_SECONDS else 'MISSES'} the "
                    f"{GOAL_SECONDS:.0f}s goal; {b['rules_in_kernel']} rules in the kernel (expected {expected})"),
                Row(f"{n:,} IPs: re-apply (no-op)", (f"{b['noop_s']:.3f}s",),
                    f"changed={b['noop_changed']}, restores so far {b['transactions'] - 1}"),
                Row(f"{n:,} IPs: one more pod", (f"{b['incremental_s']:.3f}s",), "one restore"),
                Row(f"{n:,} IPs: per-rule iptables -A", (f"{r['total_s']:.3f}s",),
                    (f"EXTRAPOLATED from {r['run']:,}/{r['rules']:,} rules in {r['elapsed_s']:.1f}s"
                     if r["extrapolated"] else f"{r['rules']:,} processes") +
                    f"; {r['rules_in_kernel']} rules in the kernel"),
                Row(f"{n:,} IPs: per-rule / batch", (f"{ratio:.1f}x",)),
            ]
    print(table("Globalnet: programming headless-pod ingress+egress rules", ("time",), rows))
    if args.json:
        print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
