"""The canonical rule form: spellings iptables treats as one rule compare equal, different rules do not,
and the form agrees with what the nf_tables `iptables-save` lists for rules we give it."""

from __future__ import annotations

import ipaddress
import random
import subprocess
from collections.abc import Callable

import pytest
from dpharness import in_ns
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from submariner.dataplane.packetfilter import RuleParseError, canonical
from submariner.dataplane.packetfilter.plan import parse_save

SAME = [
    (("-j", "MARK", "--set-mark", "0xC0000/0xC0000"), ("-j", "MARK", "--set-xmark", "0xc0000/0xc0000")),
    (("-j", "MARK", "--set-mark", "0x1"), ("-j", "MARK", "--set-xmark", "0x1/0xffffffff")),
    (("-j", "MARK", "--or-mark", "0x4000"), ("-j", "MARK", "--set-xmark", "0x4000/0x4000")),
    (("-s", "10.0.0.1", "-j", "ACCEPT"), ("-s", "10.0.0.1/32", "-j", "ACCEPT")),
    (("--source", "10.0.0.7/8", "-j", "ACCEPT"), ("-s", "10.0.0.0/8", "-j", "ACCEPT")),
    (("-p", "all", "-d", "10.9.0.0/16", "-j", "ACCEPT"), ("-d", "10.9.0.0/16", "-j", "ACCEPT")),
    (("-p", "udp", "--dport", "4800", "-j", "ACCEPT"), ("-p", "udp", "-m", "udp", "--dport", "4800", "-j", "ACCEPT")),
    (("-p", "udp", "-m", "udp", "-j", "X"), ("-p", "udp", "-j", "X")),
    (("-p", "17", "-j", "X"), ("-p", "udp", "-j", "X")),
    (("-p", "TCP", "--tcp-flags", "RST,SYN", "syn", "-j", "TCPMSS", "--clamp-mss-to-pmtu"),
     ("-p", "tcp", "-m", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--clamp-mss-to-pmtu")),
    (("-m", "mark", "--mark", "0xC0000/0xC0000", "-j", "SNAT", "--to-source", "242.1.0.1-242.1.0.8"),
     ("-m", "mark", "--mark", "0xc0000/0xc0000", "-j", "SNAT", "--to-source", "242.1.0.1-242.1.0.8")),
    (("-m", "mark", "--mark", "0x1/0xffffffff", "-j", "ACCEPT"), ("-m", "mark", "--mark", "1", "-j", "ACCEPT")),
    (("-m", "set", "--match-set", "A", "src", "-m", "mark", "--mark", "0x1", "-j", "ACCEPT"),
     ("-m", "mark", "--mark", "0x1", "-m", "set", "--match-set", "A", "src", "-j", "ACCEPT")),
    (("-o", "vx-submariner", "-s", "240.0.0.0/8", "-j", "SNAT", "--to-source", "10.1.0.1"),
     ("-s", "240.0.0.0/8", "-o", "vx-submariner", "-j", "SNAT", "--to-source", "10.1.0.1")),
    (("!", "-s", "10.0.0.0/8", "-j", "ACCEPT"), ("-s", "!", "10.0.0.0/8", "-j", "ACCEPT")),
    (("-j", "REJECT"), ("-j", "REJECT", "--reject-with", "icmp-port-unreachable")),
    (("-p", "icmp", "--icmp-type", "echo-request", "-j", "ACCEPT"),
     ("-p", "icmp", "-m", "icmp", "--icmp-type", "8", "-j", "ACCEPT")),
    (("-p", "icmp", "--icmp-type", "port-unreachable", "-j", "ACCEPT"),
     ("-p", "icmp", "-m", "icmp", "--icmp-type", "3/3", "-j", "ACCEPT")),
    (("-p", "tcp", "--syn", "-j", "ACCEPT"),
     ("-p", "tcp", "-m", "tcp", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN", "-j", "ACCEPT")),
    (("-p", "tcp", "--dport", "ssh", "-j", "ACCEPT"), ("-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT")),
    (("-s", "10.0.0.0/255.255.0.0", "-j", "ACCEPT"), ("-s", "10.0.0.0/16", "-j", "ACCEPT")),
    (("-m", "conntrack", "--ctstate", "RELATED,NEW", "-j", "ACCEPT"),
     ("-m", "conntrack", "--ctstate", "NEW,RELATED", "-j", "ACCEPT")),
]

DIFFERENT = [
    (("-s", "10.0.0.0/8", "-j", "ACCEPT"), ("!", "-s", "10.0.0.0/8", "-j", "ACCEPT")),
    (("-m", "set", "--match-set", "A", "src", "-j", "ACCEPT"),
     ("-m", "set", "--match-set", "A", "dst", "-j", "ACCEPT")),
    (("-m", "set", "--match-set", "A", "src", "-j", "ACCEPT"),
     ("-m", "set", "!", "--match-set", "A", "src", "-j", "ACCEPT")),
    (("-j", "TCPMSS", "--clamp-mss-to-pmtu"), ("-j", "TCPMSS", "--set-mss", "1300")),
    (("-j", "SNAT", "--to-source", "242.1.0.1-242.1.0.8"), ("-j", "SNAT", "--to-source", "242.1.0.1-242.1.0.9")),
    (("-j", "MARK", "--set-mark", "0xc0000/0xc0000"), ("-j", "MARK", "--set-xmark", "0xc0000/0xffffffff")),
    (("-p", "tcp", "-j", "ACCEPT"), ("-p", "udp", "-j", "ACCEPT")),
    (("-p", "udp", "--dport", "4800", "-j", "ACCEPT"), ("-p", "udp", "--sport", "4800", "-j", "ACCEPT")),
    (("-j", "SUBMARINER-INPUT",), ("-g", "SUBMARINER-INPUT")),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_spellings_of_one_rule_are_equal(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_rules_differ(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert canonical(a) != canonical(b)


@pytest.mark.parametrize("bad", [("-s",), ("10.0.0.1",), ("-m",), ("-j",), ("--dport", "1", "-j", "ACCEPT")])
def test_malformed_rules_are_refused(bad: tuple[str, ...]) -> None:
    with pytest.raises(RuleParseError):
        canonical(bad)


# -- properties ------------------------------------------------------------------------------------------
SETS = ("SUBMARINER-LOCALCIDRS", "SUBMARINER-REMOTECIDRS")


@st.composite
def rules(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """A rule in two spellings: the way a component might write it, and the way iptables-save lists it."""
    target = draw(st.sampled_from(["ACCEPT", "SNAT", "MARK", "TCPMSS"]))
    groups: list[list[str]] = []  # the component's option groups, shuffled below
    saved: list[str] = []
    net = draw(st.builds(lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv4Address(a)}/{p}", strict=False),
                         st.integers(0x0A000000, 0x0AFFFFFF), st.integers(8, 32)))
    neg = draw(st.booleans())
    opt = draw(st.sampled_from(["-s", "-d"]))
    short = str(net.network_address) if net.prefixlen == 32 and draw(st.booleans()) else str(net)
    groups.append(["!", opt, short] if neg else [opt, short])
    saved += (["!"] if neg else []) + [opt, str(net)]
    iface = draw(st.sampled_from([None, "vx-submariner", "eth0"]))
    if iface:
        groups.append(["-o", iface])
        saved += ["-o", iface]
    proto = "tcp" if target == "TCPMSS" else draw(st.sampled_from(["all", "tcp", "udp", None]))
    proto_words = ["-p", proto] if proto else []
    if proto and proto != "all":
        saved += ["-p", proto]
    port = draw(st.integers(1, 65535)) if proto in ("tcp", "udp") and draw(st.booleans()) else None
    flags = target == "TCPMSS"
    if port is not None or flags:
        proto_words += [] if draw(st.booleans()) else ["-m", str(proto)]
        saved += ["-m", str(proto)]
        if port is not None:
            proto_words += ["--dport", str(port)]
            saved += ["--dport", str(port)]
        if flags:
            proto_words += ["--tcp-flags", "RST,SYN", "SYN"]
            saved += ["--tcp-flags", "SYN,RST", "SYN"]
    if draw(st.booleans()):
        mark = draw(st.integers(1, 0xFFFFF))
        groups.append(["-m", "mark", "--mark", f"0x{mark:X}/0x{mark:X}"])
        saved += ["-m", "mark", "--mark", f"0x{mark:x}/0x{mark:x}"]
    for name in draw(st.lists(st.sampled_from(SETS), unique=True, max_size=2)):
        direction = draw(st.sampled_from(["src", "dst"]))
        negated = ["!"] if draw(st.booleans()) else []
        groups.append(["-m", "set", *negated, "--match-set", name, direction])
        saved += ["-m", "set", *negated, "--match-set", name, direction]
    if target == "SNAT":
        low = draw(st.integers(1, 200))
        rng = f"242.1.0.{low}" + (f"-242.1.0.{low + draw(st.integers(1, 50))}" if draw(st.booleans()) else "")
        tail = saved_tail = ["-j", "SNAT", "--to-source", rng]
    elif target == "MARK":
        value = draw(st.integers(1, 0xFFFFF))
        tail = ["-j", "MARK", "--set-mark", f"0x{value:X}/0x{value:X}"]
        saved_tail = ["-j", "MARK", "--set-xmark", f"0x{value:x}/0x{value:x}"]
    elif target == "TCPMSS":
        tail = saved_tail = ["-j", "TCPMSS", "--clamp-mss-to-pmtu"] if draw(st.booleans()) else [
            "-j", "TCPMSS", "--set-mss", str(draw(st.integers(500, 1460)))]
    else:
        tail = saved_tail = ["-j", "ACCEPT"]
    order = draw(st.permutations(range(len(groups))))
    # protocol words first (iptables needs `-p` before a --dport it implies), the other groups in any order
    words = proto_words + [w for i in order for w in groups[i]] + tail
    return words, saved + saved_tail


@given(rules())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_canonical_is_idempotent(pair: tuple[list[str], list[str]]) -> None:
    user, _ = pair
    once = canonical(user)
    assert canonical(once) == once


@given(rules())
@settings(max_examples=300)
def test_user_spelling_equals_listed_spelling(pair: tuple[list[str], list[str]]) -> None:
    user, saved = pair
    assert canonical(user) == canonical(saved)


@given(rules(), st.sampled_from(["-s", "-d"]))
@settings(max_examples=100)
def test_a_changed_address_changes_the_canonical_form(pair: tuple[list[str], list[str]], opt: str) -> None:
    user, _ = pair
    changed = list(user)
    if opt not in changed:
        opt = "-s" if "-s" in changed else "-d"
    i = changed.index(opt) + 1
    net = ipaddress.ip_network(changed[i], strict=False)
    other = ipaddress.ip_network(f"{ipaddress.IPv4Address(int(net.network_address) ^ (1 << 31))}/{net.prefixlen}",
                                 strict=False)
    changed[i] = str(other)
    assert canonical(changed) != canonical(user)


# -- against the kernel's own listing ----------------------------------------------------------------------
def _restore_and_list(ns: str, chain_rules: list[list[str]]) -> list[tuple[str, ...]]:
    for name in (*SETS, "A"):
        in_ns(ns, "ipset", "create", name, "hash:net", "-exist")
    lines = ["*nat", ":SUBM-TEST - [0:0]"]
    lines += ["-A SUBM-TEST " + " ".join(rule) for rule in chain_rules]
    lines.append("COMMIT")
    result = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush"],
                            input="\n".join(lines) + "\n", capture_output=True, text=True, check=False)
    assert result.returncode == 0, (result.stderr, lines)
    listed = parse_save(in_ns(ns, "iptables-save", "-t", "nat"))["nat"].chains["SUBM-TEST"]
    return listed


@pytest.mark.root
def test_canonical_agrees_with_iptables_save(netns: str) -> None:
    """Hand-picked tricky spellings plus 150 generated rules, given to the kernel in the user spelling."""
    picked = [list(a) for pair in SAME for a in pair
              if a[-1] != "X" and "REJECT" not in a and a[1] != "!"]  # 1.8.9 refuses old-style `-s ! net`
    rng = random.Random(6)
    generated = [_sample_rule(rng) for _ in range(150)]
    given_rules = picked + generated
    listed = _restore_and_list(netns, given_rules)
    assert len(listed) == len(given_rules)
    for want, got in zip(given_rules, listed, strict=True):
        assert canonical(want) == canonical(got), (want, got)


@pytest.mark.root
@given(st.lists(rules(), min_size=1, max_size=20))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_rules_round_trip_through_the_kernel(make_netns: Callable[[], str],
                                                       batch: list[tuple[list[str], list[str]]]) -> None:
    ns = make_netns()
    given_rules = [user for user, _ in batch]
    listed = _restore_and_list(ns, given_rules)
    for want, got in zip(given_rules, listed, strict=True):
        assert canonical(want) == canonical(got), (want, got)


def _sample_rule(rng: random.Random) -> list[str]:
    """A random rule in a component's spelling (no hypothesis: the kernel test wants one big batch)."""
    words: list[str] = []
    proto = rng.choice(["tcp", "udp", "all", None])
    if proto:
        words += ["-p", proto]
        if proto != "all" and rng.random() < 0.5:
            words += ([] if rng.random() < 0.5 else ["-m", proto]) + ["--dport", str(rng.randint(1, 65535))]
    net = ipaddress.ip_network(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}/"
                               f"{rng.choice([8, 16, 24, 32])}", strict=False)
    addr = str(net.network_address) if net.prefixlen == 32 and rng.random() < 0.5 else str(net)
    words += (["!"] if rng.random() < 0.3 else []) + [rng.choice(["-s", "-d"]), addr]
    if rng.random() < 0.5:
        mark = rng.randint(1, 0xFFFFF)
        words += ["-m", "mark", "--mark", f"0x{mark:X}/0x{mark:X}" if rng.random() < 0.5 else str(mark)]
    if rng.random() < 0.5:
        words += ["-m", "set"] + (["!"] if rng.random() < 0.3 else []) + [
            "--match-set", rng.choice(SETS), rng.choice(["src", "dst"])]
    if rng.random() < 0.3:
        words += ["-o", "vx-submariner"]
    target = rng.choice(["ACCEPT", "SNAT", "MARK", "TCPMSS"])
    if target == "SNAT":
        words += ["-j", "SNAT", "--to-source", rng.choice(["242.1.0.1", "242.1.0.1-242.1.0.8"])]
    elif target == "MARK":
        value = rng.randint(1, 0xFFFFF)
        words += ["-j", "MARK", rng.choice(["--set-mark", "--set-xmark"]), f"0x{value:X}/0x{value:X}"]
    elif target == "TCPMSS" and proto == "tcp":
        mss = rng.choice([["--clamp-mss-to-pmtu"], ["--set-mss", "1380"]])
        words += ["-m", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", *mss]
    else:
        words += ["-j", "ACCEPT"]
    return words
