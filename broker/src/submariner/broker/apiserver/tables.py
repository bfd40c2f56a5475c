"""Server-side `meta.k8s.io/v1` Tables, which is what `kubectl get` asks for and prints.

Columns and cell values follow kube-apiserver's printers (pkg/printers/internalversion) and the CRD table
convertor, so `kubectl get` output here looks like it does against a real cluster.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request
from .resources import ResourceType

Obj = dict[str, Any]
Cells = list[Any]
RowFn = Callable[[Obj, dt.datetime], tuple[Cells, list[Obj] | None]]

INCLUDE_OBJECT_VALUES = ("None", "Metadata", "Object")

_NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically."
)
_AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. "
    "It is not guaranteed to be set in happens-before order across separate operations."
)


# --- durations and timestamps -----------------------------------------------------------------------------


def human_duration(d: dt.timedelta) -> str:
    """kubectl's AGE text: k8s.io/apimachinery/pkg/util/duration.HumanDuration (~2-3 significant figures)."""
    seconds = int(d.total_seconds())  # truncates toward zero, like Go's int(d.Seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp (Time or MicroTime) as an aware datetime; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _since(value: Any, now: dt.datetime) -> str:
    """translateTimestampSince: AGE of a timestamp, `<unknown>` when there is none."""
    t = parse_time(value)
    return "<unknown>" if t is None else human_duration(now - t)


def _created_at(obj: Obj) -> str:
    t = parse_time(_meta(obj).get("creationTimestamp"))
    if t is None:
        return "0001-01-01T00:00:00Z"
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- small accessors --------------------------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def _dict(obj: Any, *path: str) -> Obj:
    v = _get(obj, *path)
    return v if isinstance(v, dict) else {}


def _list(obj: Any, *path: str) -> list[Any]:
    v = _get(obj, *path)
    return v if isinstance(v, list) else []


def _int(v: Any, default: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return default
    return int(v)


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _age(obj: Obj, now: dt.datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted `k=v` pairs, `<none>` when empty."""
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def label_selector_string(selector: Any) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key; "" for none/everything."""
    if not isinstance(selector, dict):
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in (selector.get("matchLabels") or {}).items():
        reqs.append((k, f"{k}={v}"))
    for e in selector.get("matchExpressions") or []:
        key, op = e.get("key", ""), e.get("operator", "")
        values = ",".join(sorted(str(v) for v in e.get("values") or []))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(op)
        if text is None:
            return "<invalid>"
        reqs.append((key, text))
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


def _format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: like label_selector_string but `<none>` when empty."""
    return label_selector_string(selector) or "<none>"


def _containers(template_spec: Obj) -> tuple[str, str]:
    cs = [c for c in template_spec.get("containers") or [] if isinstance(c, dict)]
    return ",".join(_str(c.get("name")) for c in cs), ",".join(_str(c.get("image")) for c in cs)


def _col(name: str, desc: str = "", *, type_: str = "string", fmt: str = "", priority: int = 0) -> Obj:
    return {"name": name, "type": type_, "format": fmt, "description": desc, "priority": priority}


_NAME = _col("Name", _NAME_DESC, fmt="name")
_AGE = _col("Age", _AGE_DESC)
_CREATED_AT = _col("Created At", _AGE_DESC, type_="date")


# --- built-in printers -------------------------------------------------------------------------------------


def _is_restartable_init(c: Any) -> bool:
    return isinstance(c, dict) and c.get("restartPolicy") == "Always"


def _later(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    if b is None:
        return a
    return b if a is None or a < b else a


def _terminated_reason(term: Obj, prefix: str) -> str:
    if term.get("reason"):
        return f"{prefix}{term['reason']}"
    if _int(term.get("signal")):
        return f"{prefix}Signal:{_int(term.get('signal'))}"
    return f"{prefix}ExitCode:{_int(term.get('exitCode'))}"


def _pod_row(pod: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    """printPod: READY, STATUS (the same reason logic as kubectl), RESTARTS with `(5m ago)`."""
    spec, status = _dict(pod, "spec"), _dict(pod, "status")
    init_specs = {c.get("name"): c for c in _list(spec, "initContainers") if isinstance(c, dict)}
    total = len(_list(spec, "containers")) + sum(1 for c in init_specs.values() if _is_restartable_init(c))
    ready = restarts = sidecar_restarts = 0
    last_restart: dt.datetime | None = None
    last_sidecar_restart: dt.datetime | None = None
    phase = _str(status.get("phase"))
    reason = _str(status.get("reason")) or phase
    conditions = [c for c in _list(status, "conditions") if isinstance(c, dict)]
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    row_conditions: list[Obj] | None = None
    if phase == "Succeeded":
        row_conditions = [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }
        ]
    elif phase == "Failed":
        row_conditions = [
            {"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}
        ]

    initializing = False
    init_statuses = [c for c in _list(status, "initContainerStatuses") if isinstance(c, dict)]
    for i, cs in enumerate(init_statuses):
        restarts += _int(cs.get("restartCount"))
        finished = parse_time(_get(cs, "lastState", "terminated", "finishedAt"))
        if _get(cs, "lastState", "terminated") is not None:
            last_restart = _later(last_restart, finished)
        sidecar = _is_restartable_init(init_specs.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += _int(cs.get("restartCount"))
            if _get(cs, "lastState", "terminated") is not None:
                last_sidecar_restart = _later(last_sidecar_restart, finished)
        state = _dict(cs, "state")
        term, waiting = state.get("terminated"), state.get("waiting")
        if isinstance(term, dict) and _int(term.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if isinstance(term, dict):
            reason = _terminated_reason(term, "Init:")
        elif isinstance(waiting, dict) and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True" for c in conditions)
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed([c for c in _list(status, "containerStatuses") if isinstance(c, dict)]):
            restarts += _int(cs.get("restartCount"))
            if _get(cs, "lastState", "terminated") is not None:
                last_restart = _later(
                    last_restart, parse_time(_get(cs, "lastState", "terminated", "finishedAt"))
                )
            state = _dict(cs, "state")
            term, waiting = state.get("terminated"), state.get("waiting")
            if isinstance(waiting, dict) and waiting.get("reason"):
                reason = _str(waiting["reason"])
            elif isinstance(term, dict):
                reason = _terminated_reason(term, "")
            elif cs.get("ready") is True and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if pod_ready else "NotReady"

    if _meta(pod).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"

    pod_ips = _list(status, "podIPs")
    ip = _str(_get(pod_ips[0], "ip")) if pod_ips else ""
    gates = [g for g in _list(spec, "readinessGates") if isinstance(g, dict)]
    gates_text = "<none>"
    if gates:
        true_count = 0
        for g in gates:
            for c in conditions:
                if c.get("type") == g.get("conditionType"):
                    true_count += c.get("status") == "True"
                    break
        gates_text = f"{true_count}/{len(gates)}"
    cells: Cells = [
        _str(_meta(pod).get("name")),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _age(pod, now),
        ip or "<none>",
        _str(spec.get("nodeName")) or "<none>",
        _str(status.get("nominatedNodeName")) or "<none>",
        gates_text,
    ]
    return cells, row_conditions


def _lb_ingress(svc: Obj) -> str:
    found = set()
    for ing in _list(svc, "status", "loadBalancer", "ingress"):
        if isinstance(ing, dict) and (ing.get("ip") or ing.get("hostname")):
            found.add(_str(ing.get("ip")) or _str(ing.get("hostname")))
    return ",".join(sorted(found))


def _service_external_ip(svc: Obj, svc_type: str) -> str:
    external = [str(x) for x in _list(svc, "spec", "externalIPs")]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if svc_type == "LoadBalancer":
        lb = _lb_ingress(svc)
        if external:
            return ",".join([*(lb.split(",") if lb else []), *external])
        return lb or "<pending>"
    if svc_type == "ExternalName":
        return _str(_get(svc, "spec", "externalName"))
    return "<unknown>"


def service_ports(ports: Any) -> str:
    """makePortString: `80/TCP`, or `80:30080/TCP` with a node port, comma separated."""
    pieces = []
    for p in ports if isinstance(ports, list) else []:
        if not isinstance(p, dict):
            continue
        proto = _str(p.get("protocol")) or "TCP"
        node_port = _int(p.get("nodePort"))
        port = _int(p.get("port"))
        pieces.append(f"{port}:{node_port}/{proto}" if node_port > 0 else f"{port}/{proto}")
    return ",".join(pieces)


def _service_row(svc: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    spec = _dict(svc, "spec")
    svc_type = _str(spec.get("type")) or "ClusterIP"
    cluster_ips = _list(spec, "clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    cells: Cells = [
        _str(_meta(svc).get("name")),
        svc_type,
        str(cluster_ips[0]) if cluster_ips else "<none>",
        _service_external_ip(svc, svc_type),
        service_ports(spec.get("ports")) or "<none>",
        _age(svc, now),
        format_labels(spec.get("selector")),
    ]
    return cells, None


def _join_host_port(host: str, port: int) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        if ":" in host:
            return f"[{host}]:{port}"
    return f"{host}:{port}"


def _format_endpoints(ep: Obj) -> str:
    subsets = [s for s in _list(ep, "subsets") if isinstance(s, dict)]
    if not subsets:
        return "<none>"
    out: list[str] = []
    limit, more, count = 3, False, 0
    for ss in subsets:
        addrs = [_str(a.get("ip")) for a in _list(ss, "addresses") if isinstance(a, dict)]
        ports = [p for p in _list(ss, "ports") if isinstance(p, dict)]
        if not ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == limit:
                    more = True
                    break
                out.append(a)
            continue
        for p in ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == limit:
                    more = True
                    break
                out.append(_join_host_port(a, _int(p.get("port"))))
    text = ",".join(out)
    return f"{text} + {count - limit} more..." if more else text


def _endpoints_row(ep: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    return [_str(_meta(ep).get("name")), _format_endpoints(ep), _age(ep, now)], None


def _list_with_more(items: list[str], total: int, limit: int = 3) -> str:
    text = ",".join(items[:limit])
    if total > limit:
        return f"{text} + {total - limit} more..."
    return text or "<unset>"


def _endpointslice_row(eps: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    ports = []
    for p in _list(eps, "ports"):
        if not isinstance(p, dict):
            continue
        if p.get("port") is not None:
            ports.append(str(_int(p.get("port"))))
        elif p.get("name") is not None:
            ports.append(_str(p.get("name")))
        else:
            ports.append("*")
    addrs = [str(a) for e in _list(eps, "endpoints") if isinstance(e, dict) for a in _list(e, "addresses")]
    cells: Cells = [
        _str(_meta(eps).get("name")),
        _str(eps.get("addressType")),
        _list_with_more(ports, len(ports)),
        _list_with_more(addrs, len(addrs)),
        _age(eps, now),
    ]
    return cells, None


def node_roles(labels: Any) -> str:
    """Roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>` labels, else `<none>`."""
    roles: set[str] = set()
    for k, v in (labels if isinstance(labels, dict) else {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            if role := k[len("node-role.kubernetes.io/") :]:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(str(v))
    return ",".join(sorted(roles)) or "<none>"


def _node_row(node: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    status = _dict(node, "status")
    info = _dict(status, "nodeInfo")
    state: list[str] = []
    for c in _list(status, "conditions"):
        if isinstance(c, dict) and c.get("type") == "Ready":
            state = ["Ready" if c.get("status") == "True" else "NotReady"]
    if not state:
        state = ["Unknown"]
    if _get(node, "spec", "unschedulable") is True:
        state.append("SchedulingDisabled")

    def address(kind: str) -> str:
        for a in _list(status, "addresses"):
            if isinstance(a, dict) and a.get("type") == kind:
                return _str(a.get("address"))
        return "<none>"

    cells: Cells = [
        _str(_meta(node).get("name")),
        ",".join(state),
        node_roles(_meta(node).get("labels")),
        _age(node, now),
        _str(info.get("kubeletVersion")),
        address("InternalIP"),
        address("ExternalIP"),
        _str(info.get("osImage")) or "<unknown>",
        _str(info.get("kernelVersion")) or "<unknown>",
        _str(info.get("containerRuntimeVersion")) or "<unknown>",
    ]
    return cells, None


def _replicas(obj: Obj) -> int:
    # The API defaults spec.replicas to 1; stored objects here may not carry the default.
    v = _get(obj, "spec", "replicas")
    return 1 if v is None else _int(v)


def _deployment_row(d: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    status = _dict(d, "status")
    names, images = _containers(_dict(d, "spec", "template", "spec"))
    cells: Cells = [
        _str(_meta(d).get("name")),
        f"{_int(status.get('readyReplicas'))}/{_replicas(d)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age(d, now),
        names,
        images,
        label_selector_string(_get(d, "spec", "selector")),
    ]
    return cells, None


def _daemonset_row(ds: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    s = _dict(ds, "status")
    template_spec = _dict(ds, "spec", "template", "spec")
    names, images = _containers(template_spec)
    cells: Cells = [
        _str(_meta(ds).get("name")),
        _int(s.get("desiredNumberScheduled")),
        _int(s.get("currentNumberScheduled")),
        _int(s.get("numberReady")),
        _int(s.get("updatedNumberScheduled")),
        _int(s.get("numberAvailable")),
        format_labels(template_spec.get("nodeSelector")),
        _age(ds, now),
        names,
        images,
        _format_label_selector(_get(ds, "spec", "selector")),
    ]
    return cells, None


def _statefulset_row(sts: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    names, images = _containers(_dict(sts, "spec", "template", "spec"))
    ready = f"{_int(_get(sts, 'status', 'readyReplicas'))}/{_replicas(sts)}"
    return [_str(_meta(sts).get("name")), ready, _age(sts, now), names, images], None


def _namespace_row(ns: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    phase = _str(_get(ns, "status", "phase")) or "Active"
    return [_str(_meta(ns).get("name")), phase, _age(ns, now)], None


def _configmap_row(cm: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    count = len(_dict(cm, "data")) + len(_dict(cm, "binaryData"))
    return [_str(_meta(cm).get("name")), count, _age(cm, now)], None


def _secret_row(s: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    keys = set(_dict(s, "data")) | set(_dict(s, "stringData"))
    return [_str(_meta(s).get("name")), _str(s.get("type")) or "Opaque", len(keys), _age(s, now)], None


def _serviceaccount_row(sa: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    return [_str(_meta(sa).get("name")), len(_list(sa, "secrets")), _age(sa, now)], None


def _lease_row(lease: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    return [
        _str(_meta(lease).get("name")),
        _str(_get(lease, "spec", "holderIdentity")),
        _age(lease, now),
    ], None


def _event_row(ev: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    first = ev.get("firstTimestamp") or ev.get("eventTime")
    first_text = _since(first, now)
    last_text = _since(ev["lastTimestamp"], now) if ev.get("lastTimestamp") else first_text
    count = _int(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last_text = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the events.k8s.io API carry no count
    involved = _dict(ev, "involvedObject")
    kind = _str(involved.get("kind")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    component = _str(_get(ev, "source", "component")) or _str(ev.get("reportingComponent"))
    instance = _str(_get(ev, "source", "host")) or _str(ev.get("reportingInstance"))
    source = f"{component}, {instance}" if instance else component
    cells: Cells = [
        last_text,
        _str(ev.get("type")),
        _str(ev.get("reason")),
        target,
        _str(involved.get("fieldPath")),
        source,
        _str(ev.get("message")).strip(),
        first_text,
        count,
        _str(_meta(ev).get("name")),
    ]
    return cells, None


def _binding_row(b: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    users, groups, sas = [], [], []
    for s in _list(b, "subjects"):
        if not isinstance(s, dict):
            continue
        if s.get("kind") == "ServiceAccount":
            sas.append(f"{_str(s.get('namespace'))}/{_str(s.get('name'))}")
        elif s.get("kind") == "User":
            users.append(_str(s.get("name")))
        elif s.get("kind") == "Group":
            groups.append(_str(s.get("name")))
    ref = _dict(b, "roleRef")
    cells: Cells = [
        _str(_meta(b).get("name")),
        f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}",
        _age(b, now),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(sas),
    ]
    return cells, None


def _created_at_row(obj: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    return [_str(_meta(obj).get("name")), _created_at(obj)], None


def _name_age_row(obj: Obj, now: dt.datetime) -> tuple[Cells, list[Obj] | None]:
    return [_str(_meta(obj).get("name")), _age(obj, now)], None


_CONTAINERS = _col("Containers", "Names of each container in the template.", priority=1)
_IMAGES = _col("Images", "Images referenced by each container in the template.", priority=1)
_SELECTOR = _col("Selector", "Label query over pods that should match the replicas count.", priority=1)
_BINDING_COLUMNS = [
    _NAME,
    _col("Role", "RoleRef can reference a Role in the current namespace or a ClusterRole."),
    _AGE,
    _col("Users", "Users in the roleBinding", priority=1),
    _col("Groups", "Groups in the roleBinding", priority=1),
    _col("ServiceAccounts", "ServiceAccounts in the roleBinding", priority=1),
]

_PRINTERS: dict[tuple[str, str], tuple[list[Obj], RowFn]] = {
    ("", "namespaces"): ([_NAME, _col("Status", "The status of the namespace"), _AGE], _namespace_row),
    ("", "pods"): (
        [
            _NAME,
            _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            _col("Status", "The aggregate status of the containers in this pod."),
            _col(
                "Restarts",
                "The number of times the containers in this pod have been restarted and when the "
                "last container in this pod has restarted.",
            ),
            _AGE,
            _col("IP", "podIP address allocated to the pod.", priority=1),
            _col("Node", "NodeName is a request to schedule this pod onto a specific node.", priority=1),
            _col(
                "Nominated Node",
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
                priority=1,
            ),
            _col(
                "Readiness Gates",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                priority=1,
            ),
        ],
        _pod_row,
    ),
    ("", "services"): (
        [
            _NAME,
            _col("Type", "type determines how the Service is exposed."),
            _col("Cluster-IP", "clusterIP is the IP address of the service."),
            _col(
                "External-IP",
                "externalIPs is a list of IP addresses for which nodes in the cluster will "
                "also accept traffic for this service.",
            ),
            _col("Port(s)", "The list of ports that are exposed by this service."),
            _AGE,
            _col(
                "Selector",
                "Route service traffic to pods with label keys and values matching this selector.",
                priority=1,
            ),
        ],
        _service_row,
    ),
    ("", "endpoints"): (
        [_NAME, _col("Endpoints", "The set of all endpoints is the union of all subsets."), _AGE],
        _endpoints_row,
    ),
    ("", "nodes"): (
        [
            _NAME,
            _col("Status", "The status of the node"),
            _col("Roles", "The roles of the node"),
            _AGE,
            _col("Version", "Kubelet Version reported by the node."),
            _col("Internal-IP", "List of addresses reachable to the node.", priority=1),
            _col("External-IP", "List of addresses reachable to the node.", priority=1),
            _col("OS-Image", "OS Image reported by the node from /etc/os-release.", priority=1),
            _col("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.", priority=1),
            _col("Container-Runtime", "ContainerRuntime Version reported by the node.", priority=1),
        ],
        _node_row,
    ),
    ("", "configmaps"): (
        [_NAME, _col("Data", "Data contains the configuration data."), _AGE],
        _configmap_row,
    ),
    ("", "secrets"): (
        [
            _NAME,
            _col("Type", "Used to facilitate programmatic handling of secret data."),
            _col("Data", "Data contains the secret data."),
            _AGE,
        ],
        _secret_row,
    ),
    ("", "serviceaccounts"): (
        [_NAME, _col("Secrets", "Secrets is a list of the secrets in the same namespace."), _AGE],
        _serviceaccount_row,
    ),
    ("", "events"): (
        [
            _col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
            _col("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
            _col(
                "Reason",
                "This should be a short, machine understandable string that gives the reason for "
                "the transition into the object's current status.",
            ),
            _col("Object", "The object that this event is about."),
            _col(
                "Subobject", "If referring to a piece of an object instead of an entire object.", priority=1
            ),
            _col("Source", "The component reporting this event.", priority=1),
            _col("Message", "A human-readable description of the status of this operation."),
            _col("First Seen", "The time at which the event was first recorded.", priority=1),
            _col("Count", "The number of times this event has occurred.", priority=1),
            _col("Name", _NAME_DESC, fmt="name", priority=1),
        ],
        _event_row,
    ),
    ("discovery.k8s.io", "endpointslices"): (
        [
            _NAME,
            _col("AddressType", "addressType specifies the type of address carried by this EndpointSlice."),
            _col(
                "Ports", "ports specifies the list of network ports exposed by each endpoint in this slice."
            ),
            _col("Endpoints", "endpoints is a list of unique endpoints in this slice."),
            _AGE,
        ],
        _endpointslice_row,
    ),
    ("coordination.k8s.io", "leases"): (
        [
            _NAME,
            _col("Holder", "holderIdentity contains the identity of the holder of a current lease."),
            _AGE,
        ],
        _lease_row,
    ),
    ("apps", "deployments"): (
        [
            _NAME,
            _col("Ready", "Number of the pod with ready state"),
            _col(
                "Up-to-date",
                "Total number of non-terminated pods targeted by this deployment that have the "
                "desired template spec.",
            ),
            _col(
                "Available",
                "Total number of available pods (ready for at least minReadySeconds) targeted by "
                "this deployment.",
            ),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _SELECTOR,
        ],
        _deployment_row,
    ),
    ("apps", "daemonsets"): (
        [
            _NAME,
            _col(
                "Desired", "The total number of nodes that should be running the daemon pod.", type_="integer"
            ),
            _col(
                "Current",
                "The number of nodes that are running at least 1 daemon pod and are supposed to "
                "run the daemon pod.",
                type_="integer",
            ),
            _col(
                "Ready",
                "The number of nodes that should be running the daemon pod and have one or more of "
                "the daemon pod running and ready.",
                type_="integer",
            ),
            _col(
                "Up-to-date", "The total number of nodes that are running updated daemon pod", type_="integer"
            ),
            _col(
                "Available",
                "The number of nodes that should be running the daemon pod and have one or more "
                "of the daemon pod running and available.",
                type_="integer",
            ),
            _col(
                "Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node."
            ),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _SELECTOR,
        ],
        _daemonset_row,
    ),
    ("apps", "statefulsets"): (
        [_NAME, _col("Ready", "Number of the pod with ready state"), _AGE, _CONTAINERS, _IMAGES],
        _statefulset_row,
    ),
    ("rbac.authorization.k8s.io", "roles"): ([_NAME, _CREATED_AT], _created_at_row),
    ("rbac.authorization.k8s.io", "clusterroles"): ([_NAME, _CREATED_AT], _created_at_row),
    ("rbac.authorization.k8s.io", "rolebindings"): (_BINDING_COLUMNS, _binding_row),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): (_BINDING_COLUMNS, _binding_row),
    ("apiextensions.k8s.io", "customresourcedefinitions"): ([_NAME, _CREATED_AT], _created_at_row),
}


# --- JSONPath subset for CRD printer columns ------------------------------------------------------------

_Step = tuple[Any, ...]
_IDENT_END = re.compile(r"(?<!\\)[.\[]")


class JSONPathError(ValueError):
    """A printer column path outside the supported subset."""


def _parse_literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise JSONPathError(f"bad literal {text!r}") from None


def parse_jsonpath(expr: str) -> list[_Step]:
    """Steps of a simple JSONPath: `.a.b`, `.a[0]`, `.a[*].b`, `['k.with/dots']`, `a\\.b`, `[?(@.x=='y')]`."""
    s = expr.strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    if s.startswith("$"):
        s = s[1:]
    steps: list[_Step] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == ".":
            i += 1
            if i < len(s) and s[i] == "*":
                steps.append(("all",))
                i += 1
                continue
            m = _IDENT_END.search(s, i)
            end = m.start() if m else len(s)
            name = s[i:end].replace("\\.", ".")
            if not name:
                if i < len(s) and s[i] == "[":
                    continue  # ".[0]" / ".['x']"
                raise JSONPathError(f"empty field name in {expr!r}")
            steps.append(("field", name))
            i = end
        elif ch == "[":
            close = _find_close(s, i)
            inner = s[i + 1 : close].strip()
            i = close + 1
            if inner == "*":
                steps.append(("all",))
            elif inner.startswith("?(") and inner.endswith(")"):
                steps.append(_parse_filter(inner[2:-1], expr))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                steps.append(("field", inner[1:-1]))
            else:
                try:
                    steps.append(("index", int(inner)))
                except ValueError:
                    raise JSONPathError(f"unsupported subscript [{inner}] in {expr!r}") from None
        else:
            # A path may omit the leading dot ("spec.x"), as kubectl tolerates.
            if steps or i:
                raise JSONPathError(f"unexpected {ch!r} in {expr!r}")
            s = "." + s
    return steps


def _find_close(s: str, start: int) -> int:
    quote = ""
    depth = 0
    for j in range(start, len(s)):
        c = s[j]
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return j
    raise JSONPathError(f"unterminated [ in {s!r}")


def _parse_filter(body: str, expr: str) -> _Step:
    m = re.match(r"\s*@(?P<path>[^=!<>]*?)\s*(?:(?P<op>==|!=)\s*(?P<lit>.+?))?\s*$", body)
    if not m:
        raise JSONPathError(f"unsupported filter in {expr!r}")
    path = parse_jsonpath(m.group("path")) if m.group("path") else []
    op = m.group("op") or "exists"
    lit = _parse_literal(m.group("lit")) if m.group("lit") else None
    return ("filter", path, op, lit)


def eval_jsonpath(steps: list[_Step], obj: Any) -> list[Any]:
    """Every value the path selects; missing keys select nothing (AllowMissingKeys)."""
    current = [obj]
    for step in steps:
        nxt: list[Any] = []
        kind = step[0]
        for v in current:
            if kind == "field":
                if isinstance(v, dict) and step[1] in v:
                    nxt.append(v[step[1]])
            elif kind == "index":
                if isinstance(v, list) and -len(v) <= step[1] < len(v):
                    nxt.append(v[step[1]])
            elif kind == "all":
                if isinstance(v, list):
                    nxt.extend(v)
                elif isinstance(v, dict):
                    nxt.extend(v[k] for k in sorted(v))
            elif kind == "filter" and isinstance(v, list):
                _, path, op, lit = step
                for item in v:
                    found = eval_jsonpath(path, item)
                    if op == "exists":
                        ok = bool(found)
                    elif op == "==":
                        ok = bool(found) and found[0] == lit
                    else:
                        ok = bool(found) and found[0] != lit
                    if ok:
                        nxt.append(item)
        current = nxt
    return current


def _go_text(value: Any) -> str:
    """How kubectl's JSONPath prints one value: scalars as text, maps and lists as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _typed_cell(col_type: str, value: Any, now: dt.datetime) -> Any:
    """cellForJSONValue from the CRD table convertor."""
    if value is None:
        return None
    if col_type == "string":
        return _go_text(value)
    if col_type == "integer":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return None
    if col_type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    if col_type == "boolean":
        return value if isinstance(value, bool) else None
    if col_type == "date":
        if not isinstance(value, str):
            return None
        if value in ("", "null"):
            return "<unknown>"
        t = parse_time(value)
        return "<invalid>" if t is None else human_duration(now - t)
    return None


def _crd_columns(rtype: ResourceType) -> tuple[list[Obj], list[tuple[str, list[_Step] | None]]]:
    """Column definitions and (type, parsed path) per extra column; just Age by default, as in kube."""
    columns = list(rtype.printer_columns) or [
        {"name": "Age", "type": "date", "description": _AGE_DESC, "jsonPath": ".metadata.creationTimestamp"}
    ]
    defs = [_NAME]
    paths: list[tuple[str, list[_Step] | None]] = []
    for c in columns:
        json_path = str(c.get("jsonPath", ""))
        try:
            parsed: list[_Step] | None = parse_jsonpath(json_path)
        except JSONPathError:
            parsed = None
        defs.append(
            _col(
                str(c.get("name", "")),
                str(
                    c.get("description")
                    or f"Custom resource definition column (in JSONPath format): {json_path}"
                ),
                type_=str(c.get("type", "string")),
                fmt=str(c.get("format", "")),
                priority=_int(c.get("priority")),
            )
        )
        paths.append((str(c.get("type", "string")), parsed))
    return defs, paths


# --- the Table ------------------------------------------------------------------------------------------


def _row_object(rtype: ResourceType, obj: Obj, include_object: str) -> Obj | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        if obj.get("kind") and obj.get("apiVersion"):
            return obj
        return {**obj, "apiVersion": rtype.api_version, "kind": rtype.kind}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def render_table(
    rtype: ResourceType,
    objects: list[Obj],
    *,
    include_object: str = "Metadata",
    now: dt.datetime | None = None,
    list_metadata: Obj | None = None,
    no_headers: bool = False,
) -> Obj:
    """A `meta.k8s.io/v1` Table of `objects`, the way kube-apiserver renders it for `kubectl get`.

    All columns are always sent (kubectl hides priority>0 ones unless `-o wide`). `list_metadata` supplies
    resourceVersion/continue/remainingItemCount; for a single-object GET pass that object's resourceVersion.
    `no_headers` (TableOptions.noHeaders) omits the column definitions, as for watch events after the first.
    """
    include_object = include_object or "Metadata"
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise bad_request(
            f'includeObject: Unsupported value: "{include_object}": supported values: '
            '"None", "Object", "Metadata"'
        )
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)

    rows: list[Obj] = []
    if rtype.from_crd:
        columns, paths = _crd_columns(rtype)
        for obj in objects:
            cells: Cells = [_str(_meta(obj).get("name"))]
            for col_type, path in paths:
                found = eval_jsonpath(path, obj) if path is not None else []
                # Like the CRD convertor: only the first match is shown.
                cells.append(_typed_cell(col_type, found[0], now) if found else None)
            rows.append(_row(rtype, obj, cells, None, include_object))
    else:
        columns, row_fn = _PRINTERS.get((rtype.group, rtype.plural), ([_NAME, _AGE], _name_age_row))
        for obj in objects:
            cells, conditions = row_fn(obj, now)
            rows.append(_row(rtype, obj, cells, conditions, include_object))

    meta: Obj = {}
    for key in ("resourceVersion", "continue", "remainingItemCount"):
        if list_metadata and list_metadata.get(key) not in (None, ""):
            meta[key] = list_metadata[key]
    table: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    if not no_headers:
        table["columnDefinitions"] = [dict(c) for c in columns]
    table["rows"] = rows
    return table


def _row(rtype: ResourceType, obj: Obj, cells: Cells, conditions: list[Obj] | None, include: str) -> Obj:
    row: Obj = {"cells": cells}
    if conditions:
        row["conditions"] = conditions
    row_obj = _row_object(rtype, obj, include)
    if row_obj is not None:
        row["object"] = row_obj
    return row
