"""Shared helpers for the Lighthouse agent tests: object builders and bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.kube import KubeError

B = "submariner-k8s-broker"
OP_NS = "submariner-operator"
HTTP = {"name": "http", "protocol": "TCP", "port": 80}


def eventually(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `pred` until truthy (KubeErrors count as "not yet"); returns its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (KubeError, KeyError, IndexError, StopIteration) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def service(ns: str, name: str, ip: str | None = "10.96.0.10", *, ports: Iterable[dict[str, Any]] = (HTTP,),
            stype: str = "ClusterIP", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"type": stype, "ports": [dict(p) for p in ports], "selector": {"app": name}, **spec}
    if ip is not None:
        s["clusterIP"] = ip
        if ip != "None":
            s["clusterIPs"] = [ip]
    if stype == "ExternalName":
        s = {"type": "ExternalName", "externalName": "example.com"}
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": s}


def headless_service(ns: str, name: str, **kw: Any) -> dict[str, Any]:
    return service(ns, name, "None", **kw)


def endpoint(ip: str, *, ready: bool | None = True, hostname: str | None = None, pod: str | None = None,
             ns: str = "default") -> dict[str, Any]:
    e: dict[str, Any] = {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
    if hostname:
        e["hostname"] = hostname
    if pod:
        e["targetRef"] = {"kind": "Pod", "name": pod, "namespace": ns}
    return e


def k8s_slice(ns: str, svc: str, name: str, endpoints: list[dict[str, Any]],
              ports: Iterable[dict[str, Any]] = (HTTP,), labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {L.K8S_SERVICE_NAME: svc, L.ENDPOINTSLICE_MANAGED_BY: "endpointslice-controller.k8s.io",
                                **(labels or {})}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [dict(p) for p in ports],
    }


def service_export(ns: str, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport", "metadata": meta}


def conditions(se: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((se or {}).get("status") or {}).get("conditions") or ()}


def lh_slices(objs: Iterable[dict[str, Any]], ns: str, svc: str, cluster: str | None = None) -> list[dict[str, Any]]:
    out = []
    for o in objs:
        lab = o["metadata"].get("labels") or {}
        if (lab.get(L.ENDPOINTSLICE_MANAGED_BY) == L.LIGHTHOUSE_MANAGED_BY and lab.get(L.SERVICE_NAME) == svc
                and lab.get(L.SOURCE_NAMESPACE) == ns and o["metadata"]["namespace"] == ns
                and (cluster is None or lab.get(L.SOURCE_CLUSTER) == cluster)):
            out.append(o)
    return out


def addresses(slices: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(a for s in slices for e in s.get("endpoints") or () for a in e.get("addresses") or ())


# -- real API servers ------------------------------------------------------------------------------------------

AGENT_CRDS = ("SERVICE_EXPORTS", "SERVICE_IMPORTS", "GLOBAL_INGRESS_IPS")


class RealClusterset:
    """A broker and member clusters as `submariner-broker serve` processes (tests/conftest.py), with the
    MCS/Submariner CRDs installed and the namespaces an operator would create."""

    def __init__(self, factory: Callable[..., Any], names: Iterable[str], namespaces: Iterable[str] = ("sample",)
                 ) -> None:
        import base64

        from submariner.broker.api import multicluster, submariner
        from submariner.broker.api.crds import crd
        from submariner.broker.kube import CRDS, NAMESPACES, Cluster

        self.servers = {n: factory(n) for n in ("broker", *names)}
        self.clusters = {n: Cluster.from_kubeconfig(s.kubeconfig, s.context) for n, s in self.servers.items()}
        b = self.servers["broker"]
        self.broker_ca = base64.b64encode((b.data_dir / "ca.crt").read_bytes()).decode()
        for name, cluster in self.clusters.items():
            for res in (multicluster.SERVICE_EXPORTS, multicluster.SERVICE_IMPORTS, submariner.GLOBAL_INGRESS_IPS):
                cluster.resource(CRDS).create(crd(res))
            wanted = [B] if name == "broker" else [OP_NS, *namespaces]
            for ns in wanted:
                cluster.resource(NAMESPACES).create({"metadata": {"name": ns}})
            for res in (multicluster.SERVICE_EXPORTS, multicluster.SERVICE_IMPORTS):
                eventually(lambda c=cluster, r=res: c.resource(r).list(None) is not None, what="CRD served")
        self.agents: dict[str, Any] = {}

    def broker_client(self) -> Any:
        from submariner.broker.kube import Cluster

        b = self.servers["broker"]
        return Cluster.from_token(b.url, b.admin_token, ca_data=self.broker_ca, name="broker")

    def write_broker_info(self, path: Any) -> Any:
        """A broker-info.subm for the broker server, as `subctl deploy-broker` writes it."""
        import base64

        from submariner.broker.brokerinfo import BrokerInfo, write_file

        b = self.servers["broker"]

        def b64(s: str | bytes) -> str:
            return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()

        info = BrokerInfo(
            broker_url=b.url,
            client_token={"metadata": {"name": "broker-admin-token"}, "type": "kubernetes.io/service-account-token",
                          "data": {"token": b64(b.admin_token), "ca.crt": self.broker_ca, "namespace": b64(B)}},
            ipsec_psk=None, service_discovery=True, components=["service-discovery"],
        )
        write_file(path, info)
        return path

    def start_agent(self, name: str, **config: Any) -> Any:
        from submariner.lighthouse.agent.agent import Agent
        from submariner.lighthouse.agent.config import AgentConfig

        agent = Agent(AgentConfig(name, B, **config), self.clusters[name], self.broker_client())
        agent.start(timeout=30)
        self.agents[name] = agent
        return agent

    def stop_agent(self, name: str) -> None:
        self.agents.pop(name).stop()

    def close(self) -> None:
        for a in self.agents.values():
            a.stop()
        self.agents.clear()
