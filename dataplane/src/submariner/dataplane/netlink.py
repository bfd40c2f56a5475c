"""The one netlink seam: links (vxlan), addresses, routes, rules, FDB and sysctls as values.

Why values and a protocol: the gateway's vxlan driver, the route agent and Globalnet compute desired state as
`Route`/`Rule`/`Vxlan`/`Fdb` values and apply them through `Netlink`; tests swap `KernelNetlink` (pyroute2 in
this process's network namespace, or a named one) for `FakeNetlink`, whose `calls` lists only calls that
changed something, so "a second reconcile is a no-op" is `fake.calls == []`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete: any scope
RTN_UNICAST = 1
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7


@dataclass(frozen=True)
class Route:
    dst: str                      # "10.9.0.0/16" (always with prefix)
    table: int = RT_TABLE_MAIN
    gateway: str | None = None    # "via"
    oif: str | None = None        # interface name
    src: str | None = None        # preferred source
    metric: int | None = None
    scope_link: bool = False      # `scope link`
    proto_static: bool = False    # `proto static` (RTPROT_STATIC = 4)
    proto_kernel: bool = False    # `proto kernel` (connected route): reconcile_routes never deletes it

    def normalised(self) -> Route:
        return replace(self, dst=str(ipaddress.ip_network(self.dst, strict=False)))


@dataclass(frozen=True)
class Rule:
    table: int
    priority: int                 # `from all lookup <table> priority <priority>`


@dataclass(frozen=True)
class Vxlan:
    name: str
    vni: int
    port: int                     # UDP dst port
    local: str | None = None      # source IP (None = any)
    remote: str | None = None     # single remote VTEP (None = FDB-driven)
    mtu: int | None = None


@dataclass(frozen=True)
class Fdb:
    ifname: str
    dst: str                      # remote VTEP IP
    mac: str = "00:00:00:00:00:00"


class NetlinkSeamError(RuntimeError):
    """A netlink request failed; the message names the object and the kernel's error."""


class Netlink(Protocol):
    def link_index(self, name: str) -> int | None: ...
    def link_mtu(self, name: str) -> int | None: ...
    def link_names(self) -> list[str]: ...
    def ensure_vxlan(self, spec: Vxlan) -> bool: ...
    def ensure_link_up(self, name: str) -> None: ...
    def delete_link(self, name: str) -> bool: ...
    def addresses(self, ifname: str | None = None) -> list[tuple[str, str]]: ...
    def ensure_address(self, ifname: str, cidr: str) -> bool: ...
    def route_source(self, dst_ip: str) -> tuple[str, str] | None: ...
    def routes(self, table: int = RT_TABLE_MAIN) -> list[Route]: ...
    def replace_route(self, route: Route) -> None: ...
    def delete_route(self, route: Route) -> bool: ...
    def flush_table(self, table: int) -> int: ...
    def rules(self) -> list[Rule]: ...
    def ensure_rule(self, rule: Rule) -> bool: ...
    def delete_rule(self, rule: Rule) -> bool: ...
    def fdb(self, ifname: str) -> list[Fdb]: ...
    def ensure_fdb(self, entry: Fdb) -> bool: ...
    def delete_fdb(self, entry: Fdb) -> bool: ...
    def set_sysctl(self, key: str, value: str) -> None: ...
    def get_sysctl(self, key: str) -> str | None: ...


def sysctl_path(key: str) -> Path:
    """`net.ipv4.conf.<ifname>.<param>` → /proc/sys path (interface names may contain dots)."""
    for family in ("net.ipv4.conf.", "net.ipv6.conf.", "net.ipv4.neigh.", "net.ipv6.neigh."):
        if key.startswith(family):
            ifname, _, param = key[len(family):].rpartition(".")
            return Path("/proc/sys", *family.rstrip(".").split("."), ifname, param)
    return Path("/proc/sys", *key.split("."))


class KernelNetlink:
    """pyroute2 IPRoute in this process's network namespace, or in the named one (`netns`, must exist)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        if netns is not None:
            if not Path("/run/netns", netns).exists():
                raise NetlinkSeamError(f"network namespace {netns!r} does not exist")
            self.ipr = IPRoute(netns=netns, flags=0)
        else:
            self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> KernelNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- links -------------------------------------------------------------------------------------------
    def link_index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def _link(self, name: str) -> Any | None:
        index = self.link_index(name)
        if index is None:
            return None
        return self.ipr.link("get", index=index)[0]

    def _name(self, index: int) -> str | None:
        try:
            return str(self.ipr.link("get", index=index)[0].get_attr("IFLA_IFNAME"))
        except NetlinkError:
            return None

    def link_mtu(self, name: str) -> int | None:
        link = self._link(name)
        return None if link is None else int(link.get_attr("IFLA_MTU"))

    def link_names(self) -> list[str]:
        return [str(link.get_attr("IFLA_IFNAME")) for link in self.ipr.get_links()]

    def _vxlan_of(self, link: Any) -> Vxlan | None:
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return None
        data = info.get_attr("IFLA_INFO_DATA")
        return Vxlan(name=str(link.get_attr("IFLA_IFNAME")), vni=int(data.get_attr("IFLA_VXLAN_ID")),
                     port=int(data.get_attr("IFLA_VXLAN_PORT") or 0), local=data.get_attr("IFLA_VXLAN_LOCAL"),
                     remote=data.get_attr("IFLA_VXLAN_GROUP"), mtu=int(link.get_attr("IFLA_MTU")))

    def vxlan(self, name: str) -> Vxlan | None:
        """The vxlan device's parameters as the kernel holds them (None if absent or not a vxlan)."""
        link = self._link(name)
        return None if link is None else self._vxlan_of(link)

    def ensure_vxlan(self, spec: Vxlan) -> bool:
        changed = False
        link = self._link(spec.name)
        current = None if link is None else self._vxlan_of(link)
        same = current is not None and (current.vni, current.port, current.local, current.remote) == (
            spec.vni, spec.port, spec.local, spec.remote)
        if link is not None and not same:
            self.ipr.link("del", index=link["index"])
            link = None
        if link is None:
            kwargs: dict[str, Any] = {"ifname": spec.name, "kind": "vxlan", "vxlan_id": spec.vni,
                                      "vxlan_port": spec.port}
            if spec.local:
                kwargs["vxlan_local"] = spec.local
            if spec.remote:
                kwargs["vxlan_group"] = spec.remote
            try:
                self.ipr.link("add", **kwargs)
            except NetlinkError as e:
                raise NetlinkSeamError(f"creating vxlan {spec.name} ({spec}): {e}") from e
            changed = True
            link = self._link(spec.name)
            assert link is not None
        index = int(link["index"])
        if spec.mtu is not None and int(link.get_attr("IFLA_MTU")) != spec.mtu:
            self.ipr.link("set", index=index, mtu=spec.mtu)
            changed = True
        if not link["flags"] & 1:
            self.ipr.link("set", index=index, state="up")
            changed = True
        return changed

    def ensure_link_up(self, name: str) -> None:
        link = self._link(name)
        if link is None:
            raise NetlinkSeamError(f"link {name} does not exist")
        if not link["flags"] & 1:
            self.ipr.link("set", index=link["index"], state="up")

    def delete_link(self, name: str) -> bool:
        index = self.link_index(name)
        if index is None:
            return False
        self.ipr.link("del", index=index)
        return True

    # -- addresses ---------------------------------------------------------------------------------------
    def addresses(self, ifname: str | None = None) -> list[tuple[str, str]]:
        kwargs: dict[str, Any] = {"family": socket.AF_INET}
        if ifname is not None:
            index = self.link_index(ifname)
            if index is None:
                return []
            kwargs["index"] = index
        out: list[tuple[str, str]] = []
        names: dict[int, str | None] = {}
        for msg in self.ipr.get_addr(**kwargs):
            idx = int(msg["index"])
            if idx not in names:
                names[idx] = ifname if ifname is not None else self._name(idx)
            out.append((names[idx] or str(idx), f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
        return out

    def ensure_address(self, ifname: str, cidr: str) -> bool:
        iface = ipaddress.ip_interface(cidr)
        if (ifname, str(iface)) in self.addresses(ifname):
            return False
        index = self.link_index(ifname)
        if index is None:
            raise NetlinkSeamError(f"link {ifname} does not exist (adding {cidr})")
        self.ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        return True

    # -- routes ------------------------------------------------------------------------------------------
    def route_source(self, dst_ip: str) -> tuple[str, str] | None:
        try:
            msg = self.ipr.route("get", dst=dst_ip)[0]
        except NetlinkError:
            return None
        oif = msg.get_attr("RTA_OIF")
        src = msg.get_attr("RTA_PREFSRC")
        name = self._name(int(oif)) if oif is not None else None
        if name is None or src is None:
            return None
        return name, str(src)

    def _route_of(self, msg: Any, names: dict[int, str | None]) -> Route:
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        dst = msg.get_attr("RTA_DST") or "0.0.0.0"
        oif = msg.get_attr("RTA_OIF")
        if oif is not None and oif not in names:
            names[oif] = self._name(int(oif))
        metric = msg.get_attr("RTA_PRIORITY")
        return Route(dst=f"{dst}/{msg['dst_len']}", table=int(table), gateway=msg.get_attr("RTA_GATEWAY"),
                     oif=names.get(oif) if oif is not None else None, src=msg.get_attr("RTA_PREFSRC"),
                     metric=int(metric) if metric else None, scope_link=msg["scope"] == RT_SCOPE_LINK,
                     proto_static=msg["proto"] == RTPROT_STATIC, proto_kernel=msg["proto"] == RTPROT_KERNEL)

    def routes(self, table: int = RT_TABLE_MAIN) -> list[Route]:
        names: dict[int, str | None] = {}
        out = []
        for msg in self.ipr.get_routes(family=socket.AF_INET, table=table):
            if msg["type"] != RTN_UNICAST:
                continue
            route = self._route_of(msg, names)
            if route.table == table:
                out.append(route)
        return out

    def _route_args(self, route: Route) -> dict[str, Any]:
        net = ipaddress.ip_network(route.dst, strict=False)
        kwargs: dict[str, Any] = {"dst": str(net.network_address), "dst_len": net.prefixlen, "table": route.table,
                                  "family": socket.AF_INET}
        if route.gateway:
            kwargs["gateway"] = route.gateway
        if route.oif:
            index = self.link_index(route.oif)
            if index is None:
                raise NetlinkSeamError(f"route {route}: link {route.oif} does not exist")
            kwargs["oif"] = index
        if route.src:
            kwargs["prefsrc"] = route.src
        if route.metric is not None:
            kwargs["priority"] = route.metric
        # Explicit, because pyroute2 would default to `proto static`; `ip route` defaults to `proto boot`.
        kwargs["scope"] = RT_SCOPE_LINK if route.scope_link else RT_SCOPE_UNIVERSE
        kwargs["proto"] = RTPROT_STATIC if route.proto_static else RTPROT_BOOT
        return kwargs

    def replace_route(self, route: Route) -> None:
        try:
            self.ipr.route("replace", **self._route_args(route))
        except NetlinkError as e:
            raise NetlinkSeamError(f"replacing route {route}: {e}") from e

    def delete_route(self, route: Route) -> bool:
        net = ipaddress.ip_network(route.dst, strict=False)
        kwargs: dict[str, Any] = {"dst": str(net.network_address), "dst_len": net.prefixlen, "table": route.table,
                                  "family": socket.AF_INET, "scope": RT_SCOPE_NOWHERE, "proto": 0}
        if route.metric is not None:
            kwargs["priority"] = route.metric
        if route.gateway:
            kwargs["gateway"] = route.gateway
        try:
            self.ipr.route("del", **kwargs)
        except NetlinkError as e:
            if e.code in (errno.ESRCH, errno.ENOENT):
                return False
            raise NetlinkSeamError(f"deleting route {route}: {e}") from e
        return True

    def flush_table(self, table: int) -> int:
        count = 0
        for route in self.routes(table):
            count += self.delete_route(route)
        return count

    # -- rules -------------------------------------------------------------------------------------------
    def rules(self) -> list[Rule]:
        out = []
        for msg in self.ipr.get_rules(family=socket.AF_INET):
            if msg["action"] != 1 or msg["src_len"] or msg["dst_len"] or msg["tos"]:
                continue
            if any(msg.get_attr(a) is not None for a in ("FRA_IFNAME", "FRA_OIFNAME", "FRA_FWMARK", "FRA_SRC",
                                                        "FRA_DST")):
                continue
            table = msg.get_attr("FRA_TABLE") or msg["table"]
            out.append(Rule(table=int(table), priority=int(msg.get_attr("FRA_PRIORITY") or 0)))
        return out

    def ensure_rule(self, rule: Rule) -> bool:
        if rule in self.rules():
            return False
        self.ipr.rule("add", table=rule.table, priority=rule.priority, family=socket.AF_INET)
        return True

    def delete_rule(self, rule: Rule) -> bool:
        if rule not in self.rules():
            return False
        self.ipr.rule("del", table=rule.table, priority=rule.priority, family=socket.AF_INET)
        return True

    # -- FDB ---------------------------------------------------------------------------------------------
    def fdb(self, ifname: str) -> list[Fdb]:
        index = self.link_index(ifname)
        if index is None:
            return []
        out = []
        for msg in self.ipr.fdb("dump", ifindex=index):
            if msg["ifindex"] != index:
                continue
            dst = msg.get_attr("NDA_DST")
            mac = msg.get_attr("NDA_LLADDR")
            if dst is not None and mac is not None:
                out.append(Fdb(ifname=ifname, dst=str(dst), mac=str(mac).lower()))
        return out

    def ensure_fdb(self, entry: Fdb) -> bool:
        if entry in self.fdb(entry.ifname):
            return False
        index = self.link_index(entry.ifname)
        if index is None:
            raise NetlinkSeamError(f"FDB {entry}: link {entry.ifname} does not exist")
        self.ipr.fdb("append", ifindex=index, lladdr=entry.mac, dst=entry.dst, state=NUD_PERMANENT, flags=NTF_SELF)
        return True

    def delete_fdb(self, entry: Fdb) -> bool:
        if entry not in self.fdb(entry.ifname):
            return False
        index = self.link_index(entry.ifname)
        self.ipr.fdb("del", ifindex=index, lladdr=entry.mac, dst=entry.dst, flags=NTF_SELF)
        return True

    # -- sysctls -----------------------------------------------------------------------------------------
    def set_sysctl(self, key: str, value: str) -> None:
        path = sysctl_path(key)
        if self.netns is None:
            path.write_text(value)
            return
        subprocess.run(["ip", "netns", "exec", self.netns, "sh", "-c", 'printf %s "$1" > "$2"', "_", value,
                        str(path)], check=True, capture_output=True, timeout=30)

    def get_sysctl(self, key: str) -> str | None:
        path = sysctl_path(key)
        if self.netns is None:
            try:
                return path.read_text().strip()
            except OSError:
                return None
        result = subprocess.run(["ip", "netns", "exec", self.netns, "cat", str(path)], capture_output=True,
                                text=True, timeout=30, check=False)
        return result.stdout.strip() if result.returncode == 0 else None


# -- the fake --------------------------------------------------------------------------------------------
@dataclass
class FakeLink:
    name: str
    index: int
    mtu: int = 1500
    up: bool = True
    vxlan: Vxlan | None = None
    addresses: list[str] = field(default_factory=list)


class FakeNetlink:
    """In-memory netlink with KernelNetlink's semantics; `calls` holds the calls that changed something."""

    def __init__(self) -> None:
        self.links: dict[str, FakeLink] = {}
        self.tables: dict[int, set[Route]] = {}
        self.rule_set: list[Rule] = [Rule(255, 0), Rule(254, 32766), Rule(253, 32767)]
        self.fdb_entries: set[Fdb] = set()
        self.sysctls: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []
        self._next_index = 1

    # seed helpers (not recorded)
    def add_link(self, name: str, mtu: int = 1500, addresses: Iterable[str] = ()) -> FakeLink:
        self._next_index += 1
        link = FakeLink(name, self._next_index, mtu, True, None, [str(ipaddress.ip_interface(a)) for a in addresses])
        self.links[name] = link
        for cidr in link.addresses:
            net = ipaddress.ip_interface(cidr).network
            self.tables.setdefault(RT_TABLE_MAIN, set()).add(
                Route(dst=str(net), oif=name, src=cidr.split("/")[0], scope_link=True, proto_kernel=True))
        return link

    def _record(self, *call: object) -> None:
        self.calls.append(tuple(str(c) for c in call))

    def link_index(self, name: str) -> int | None:
        link = self.links.get(name)
        return None if link is None else link.index

    def link_mtu(self, name: str) -> int | None:
        link = self.links.get(name)
        return None if link is None else link.mtu

    def link_names(self) -> list[str]:
        return list(self.links)

    def vxlan(self, name: str) -> Vxlan | None:
        link = self.links.get(name)
        return None if link is None or link.vxlan is None else replace(link.vxlan, mtu=link.mtu)

    def ensure_vxlan(self, spec: Vxlan) -> bool:
        link = self.links.get(spec.name)
        key = (spec.vni, spec.port, spec.local, spec.remote)
        changed = False
        if link is not None and (link.vxlan is None or
                                 (link.vxlan.vni, link.vxlan.port, link.vxlan.local, link.vxlan.remote) != key):
            self._drop_link(spec.name)
            link = None
        if link is None:
            self._next_index += 1
            link = self.links[spec.name] = FakeLink(spec.name, self._next_index, 1450 if spec.mtu is None else
                                                    spec.mtu, False, replace(spec, mtu=None))
            self._record("ensure_vxlan", spec.name, spec.vni, spec.port, spec.local, spec.remote)
            changed = True
        if spec.mtu is not None and link.mtu != spec.mtu:
            link.mtu = spec.mtu
            self._record("set_mtu", spec.name, spec.mtu)
            changed = True
        if not link.up:
            link.up = True
            changed = True
        return changed

    def ensure_link_up(self, name: str) -> None:
        link = self.links.get(name)
        if link is None:
            raise NetlinkSeamError(f"link {name} does not exist")
        if not link.up:
            link.up = True
            self._record("link_up", name)

    def _drop_link(self, name: str) -> None:
        self.links.pop(name, None)
        for table, routes in self.tables.items():
            self.tables[table] = {r for r in routes if r.oif != name}
        self.fdb_entries = {f for f in self.fdb_entries if f.ifname != name}

    def delete_link(self, name: str) -> bool:
        if name not in self.links:
            return False
        self._drop_link(name)
        self._record("delete_link", name)
        return True

    def addresses(self, ifname: str | None = None) -> list[tuple[str, str]]:
        return [(link.name, a) for link in self.links.values() if ifname in (None, link.name) for a in link.addresses]

    def ensure_address(self, ifname: str, cidr: str) -> bool:
        link = self.links.get(ifname)
        if link is None:
            raise NetlinkSeamError(f"link {ifname} does not exist (adding {cidr})")
        cidr = str(ipaddress.ip_interface(cidr))
        if cidr in link.addresses:
            return False
        link.addresses.append(cidr)
        self.tables.setdefault(RT_TABLE_MAIN, set()).add(
            Route(dst=str(ipaddress.ip_interface(cidr).network), oif=ifname, src=cidr.split("/")[0], scope_link=True,
                  proto_kernel=True))
        self._record("ensure_address", ifname, cidr)
        return True

    def route_source(self, dst_ip: str) -> tuple[str, str] | None:
        ip = ipaddress.ip_address(dst_ip)
        for link in self.links.values():
            for cidr in link.addresses:
                if ipaddress.ip_interface(cidr).ip == ip:
                    return "lo", str(ip)
        best: Route | None = None
        for route in self.tables.get(RT_TABLE_MAIN, ()):
            net = ipaddress.ip_network(route.dst)
            if ip in net and (best is None or net.prefixlen > ipaddress.ip_network(best.dst).prefixlen):
                best = route
        if best is None or best.oif is None:
            return None
        src = best.src or next((a.split("/")[0] for _, a in self.addresses(best.oif)), None)
        return (best.oif, src) if src else None

    def routes(self, table: int = RT_TABLE_MAIN) -> list[Route]:
        return sorted(self.tables.get(table, ()), key=lambda r: (r.dst, str(r)))

    def replace_route(self, route: Route) -> None:
        route = route.normalised()
        if route.oif is not None and route.oif not in self.links:
            raise NetlinkSeamError(f"route {route}: link {route.oif} does not exist")
        routes = self.tables.setdefault(route.table, set())
        same_key = {r for r in routes if r.dst == route.dst and r.metric == route.metric}
        if same_key == {route}:
            return
        routes -= same_key
        routes.add(route)
        self._record("replace_route", route)

    def delete_route(self, route: Route) -> bool:
        route = route.normalised()
        routes = self.tables.get(route.table, set())
        match = {r for r in routes if r.dst == route.dst and (route.metric is None or r.metric == route.metric)
                 and (route.gateway is None or r.gateway == route.gateway)}
        if not match:
            return False
        routes.remove(sorted(match, key=str)[0])
        self._record("delete_route", route)
        return True

    def flush_table(self, table: int) -> int:
        count = len(self.tables.get(table, ()))
        if count:
            self.tables[table] = set()
            self._record("flush_table", table)
        return count

    def rules(self) -> list[Rule]:
        return sorted(self.rule_set, key=lambda r: r.priority)

    def ensure_rule(self, rule: Rule) -> bool:
        if rule in self.rule_set:
            return False
        self.rule_set.append(rule)
        self._record("ensure_rule", rule.table, rule.priority)
        return True

    def delete_rule(self, rule: Rule) -> bool:
        if rule not in self.rule_set:
            return False
        self.rule_set.remove(rule)
        self._record("delete_rule", rule.table, rule.priority)
        return True

    def fdb(self, ifname: str) -> list[Fdb]:
        return sorted((f for f in self.fdb_entries if f.ifname == ifname), key=lambda f: f.dst)

    def ensure_fdb(self, entry: Fdb) -> bool:
        if entry.ifname not in self.links:
            raise NetlinkSeamError(f"FDB {entry}: link {entry.ifname} does not exist")
        if entry in self.fdb_entries:
            return False
        self.fdb_entries.add(entry)
        self._record("ensure_fdb", entry.ifname, entry.dst)
        return True

    def delete_fdb(self, entry: Fdb) -> bool:
        if entry not in self.fdb_entries:
            return False
        self.fdb_entries.remove(entry)
        self._record("delete_fdb", entry.ifname, entry.dst)
        return True

    def set_sysctl(self, key: str, value: str) -> None:
        if self.sysctls.get(key) != value:
            self.sysctls[key] = value
            self._record("set_sysctl", key, value)

    def get_sysctl(self, key: str) -> str | None:
        return self.sysctls.get(key)


def reconcile_routes(nl: Netlink, desired: Iterable[Route], table: int, owned: Callable[[Route], bool]) -> int:
    """Make `table` hold the desired routes: delete owned routes not desired, replace missing ones.

    The kernel's connected routes (`proto_kernel`) are never deleted, whatever `owned` says.

    Returns the number of changes (0 when the table already matches, so a second run touches nothing).
    """
    want = {route.normalised() for route in desired}
    for route in want:
        if route.table != table:
            raise ValueError(f"route {route} is not in table {table}")
    current = {route.normalised() for route in nl.routes(table)}
    changes = 0
    for route in sorted(current - want, key=str):
        if owned(route) and not route.proto_kernel:
            with contextlib.suppress(NetlinkSeamError):
                changes += nl.delete_route(route)
    for route in sorted(want - current, key=str):
        nl.replace_route(route)
        changes += 1
    return changes
