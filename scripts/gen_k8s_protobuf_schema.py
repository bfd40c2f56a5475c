#!/usr/bin/env python3
"""Generate `broker/src/submariner/broker/apiserver/protobuf_schema.py` from Kubernetes' generated.proto files.

Why: kubectl sends typed objects as Kubernetes protobuf (`application/vnd.kubernetes.protobuf`), and
the API server decodes them with a small hand-written wire decoder.  The decoder needs, per message,
the field numbers, JSON names and types; this script extracts exactly that from the upstream
Apache-2.0 `generated.proto` files and writes it as a compact Python table, keeping only the messages
reachable from the top-level kinds the server accepts (see `TOP_LEVEL`).

Usage:

    python scripts/gen_k8s_protobuf_schema.py PROTO_ROOT [-o OUTPUT]

`PROTO_ROOT` is a directory laid out like the proto import paths, i.e. it contains
`k8s.io/api/core/v1/generated.proto`, `k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto`, ...
The `staging/src` directory of a kubernetes/kubernetes checkout has exactly this layout, so:

    git clone --depth 1 https://github.com/kubernetes/kubernetes /tmp/k8s
    python scripts/gen_k8s_protobuf_schema.py /tmp/k8s/staging/src

How the checked-in table was produced: the .proto files are not committed.  They were read from the
kubernetes/kubernetes repository (`staging/src/k8s.io/api/{core,apps,rbac,batch,discovery,coordination,
authentication}/v1/generated.proto` and `staging/src/k8s.io/apimachinery/pkg/{apis/meta/v1,util/intstr,
api/resource,runtime}/generated.proto`, the v1.35/v1.36 development line, which matches kubectl v1.37
for every field kubectl's generators set) and saved locally with comments stripped.  Where the stored
copy was older than the current API, the missing fields were filled in from the current upstream
definitions: `discovery.v1.EndpointHints.forNodes`/`ForNode`, `authentication.v1.TokenReviewSpec/Status
.audiences`, and the recent `meta.v1` file (`DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential`,
`FieldSelectorRequirement`).  Fields missing from the table are skipped by the decoder, never rejected.

Supported proto syntax (the subset go-to-protobuf emits): `syntax`, `package`, `import`, `option`,
`message` (nested too), `optional|required|repeated` fields with `[options]`, `map<K, V>` fields,
`oneof`, `enum`/`reserved`/`extensions` (skipped), and type references that are relative (resolved
through the enclosing scopes and the package, as protoc does) or fully qualified (with or without the
leading dot).

Things a .proto file cannot say and that are therefore declared below, each checked against the parsed
files so an upstream change fails loudly instead of silently producing a wrong table:

* `SPECIAL` - messages with a custom JSON form (Time → RFC 3339 string, IntOrString → int or string, ...).
* `INLINE` - fields that are Go-embedded with `json:",inline"`: their JSON properties are merged into
  the parent (e.g. `Volume.volumeSource`, `Probe.handler`, `ConfigMapKeySelector.localObjectReference`).
* `JSON_NAMES` - the few fields whose proto name differs from the JSON name (`aPIVersion`, `uID`).
  Everywhere else go-to-protobuf uses the JSON name as the proto field name (`generateName`, `Port`).
* `KEEP_ZERO` - fields whose zero value must survive.  gogo-protobuf always writes non-pointer scalars,
  so a `0`/`false`/`""` on the wire usually means "unset" and the decoder drops it (as Go's `omitempty`
  JSON would).  For Go pointer fields (`replicas: 0`, `allowPrivilegeEscalation: false`,
  `storageClassName: ""`) and a few non-omitempty status fields the zero value is meaningful; the
  table marks them and the decoder keeps them.  Message fields listed here (every `VolumeSource` member,
  every `LabelSelector`) keep an empty `{}` - `emptyDir: {}` and `namespaceSelector: {}` mean something.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "broker/src/submariner/broker/apiserver/protobuf_schema.py"

CORE = "k8s.io.api.core.v1."
APPS = "k8s.io.api.apps.v1."
RBAC = "k8s.io.api.rbac.v1."
BATCH = "k8s.io.api.batch.v1."
DISCOVERY = "k8s.io.api.discovery.v1."
COORDINATION = "k8s.io.api.coordination.v1."
AUTHN = "k8s.io.api.authentication.v1."
META = "k8s.io.apimachinery.pkg.apis.meta.v1."
INTSTR = "k8s.io.apimachinery.pkg.util.intstr."
RESOURCE = "k8s.io.apimachinery.pkg.api.resource."
RUNTIME = "k8s.io.apimachinery.pkg.runtime."

# (apiVersion, kind) -> message.  `*` as apiVersion: the kind is accepted under any group version
# (DeleteOptions and Status are registered into every group).
TOP_LEVEL: dict[tuple[str, str], str] = {
    **{("v1", k): CORE + k for k in ("Namespace", "Pod", "Service", "ConfigMap", "Secret", "ServiceAccount",
                                     "Endpoints", "Node", "Event")},
    **{("apps/v1", k): APPS + k for k in ("Deployment", "DaemonSet", "StatefulSet")},
    **{("rbac.authorization.k8s.io/v1", k): RBAC + k
       for k in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")},
    **{("batch/v1", k): BATCH + k for k in ("Job", "CronJob")},
    ("discovery.k8s.io/v1", "EndpointSlice"): DISCOVERY + "EndpointSlice",
    ("coordination.k8s.io/v1", "Lease"): COORDINATION + "Lease",
    # `kubectl create token` posts a TokenRequest to serviceaccounts/<name>/token.
    ("authentication.k8s.io/v1", "TokenRequest"): AUTHN + "TokenRequest",
    ("authentication.k8s.io/v1", "TokenReview"): AUTHN + "TokenReview",
    ("*", "DeleteOptions"): META + "DeleteOptions",
    ("*", "Status"): META + "Status",
}

# message -> (decoder kind, expected wire layout as {number: (proto name, proto type)})
SPECIAL: dict[str, tuple[str, dict[int, tuple[str, str]]]] = {
    META + "Time": ("time", {1: ("seconds", "int64"), 2: ("nanos", "int32")}),
    META + "MicroTime": ("microtime", {1: ("seconds", "int64"), 2: ("nanos", "int32")}),
    META + "Duration": ("duration", {1: ("duration", "int64")}),
    META + "FieldsV1": ("fieldsv1", {1: ("Raw", "bytes")}),
    META + "Verbs": ("stringlist", {1: ("items", "string")}),
    AUTHN + "ExtraValue": ("stringlist", {1: ("items", "string")}),
    INTSTR + "IntOrString": ("intorstring", {1: ("type", "int64"), 2: ("intVal", "int32"), 3: ("strVal", "string")}),
    RESOURCE + "Quantity": ("quantity", {1: ("string", "string")}),
    RUNTIME + "RawExtension": ("rawextension", {1: ("raw", "bytes")}),
}

INLINE: set[tuple[str, str]] = {
    *((CORE + m, "localObjectReference") for m in (
        "ConfigMapEnvSource", "ConfigMapKeySelector", "ConfigMapProjection", "ConfigMapVolumeSource",
        "SecretEnvSource", "SecretKeySelector", "SecretProjection")),
    (CORE + "Volume", "volumeSource"),
    (CORE + "Probe", "handler"),
    (CORE + "EphemeralContainer", "ephemeralContainerCommon"),
    (CORE + "PersistentVolumeSpec", "persistentVolumeSource"),
}

JSON_NAMES: dict[tuple[str, str], str] = {
    (AUTHN + "BoundObjectReference", "aPIVersion"): "apiVersion",
    (AUTHN + "BoundObjectReference", "uID"): "uid",
}


def _fields(prefix: str, spec: str) -> set[str]:
    """`"Msg.a Msg.b"` -> `{prefix+"Msg.a", prefix+"Msg.b"}`; `"Msg.a,b"` is shorthand for both."""
    out: set[str] = set()
    for item in spec.split():
        msg, _, names = item.partition(".")
        out.update(f"{prefix}{msg}.{n}" for n in names.split(","))
    return out


KEEP_ZERO: set[str] = (
    _fields(META, """
        ObjectMeta.deletionGracePeriodSeconds OwnerReference.controller,blockOwnerDeletion
        DeleteOptions.gracePeriodSeconds,orphanDependents,propagationPolicy
        DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential
        Preconditions.uid,resourceVersion ListMeta.remainingItemCount""")
    | _fields(CORE, """
        ConfigMap.immutable Secret.immutable
        ConfigMapEnvSource.optional ConfigMapKeySelector.optional ConfigMapProjection.optional
        ConfigMapVolumeSource.optional,defaultMode SecretEnvSource.optional SecretKeySelector.optional
        SecretProjection.optional SecretVolumeSource.optional,defaultMode FileKeySelector.optional
        KeyToPath.mode DownwardAPIVolumeFile.mode DownwardAPIVolumeSource.defaultMode
        ProjectedVolumeSource.defaultMode ServiceAccountTokenProjection.expirationSeconds
        ClusterTrustBundleProjection.name,signerName,optional PodCertificateProjection.maxExpirationSeconds
        CSIVolumeSource.readOnly,fsType ISCSIVolumeSource.initiatorName
        Container.restartPolicy EphemeralContainerCommon.restartPolicy Lifecycle.stopSignal
        SecurityContext.privileged,runAsUser,runAsGroup,runAsNonRoot,procMount
        SecurityContext.readOnlyRootFilesystem,allowPrivilegeEscalation
        PodSecurityContext.runAsUser,runAsGroup,runAsNonRoot,fsGroup,fsGroupChangePolicy
        PodSecurityContext.supplementalGroupsPolicy,seLinuxChangePolicy
        WindowsSecurityContextOptions.gmsaCredentialSpecName,gmsaCredentialSpec,runAsUserName,hostProcess
        SeccompProfile.localhostProfile AppArmorProfile.localhostProfile
        PodSpec.terminationGracePeriodSeconds,activeDeadlineSeconds,automountServiceAccountToken
        PodSpec.shareProcessNamespace,priority,runtimeClassName,enableServiceLinks,preemptionPolicy
        PodSpec.setHostnameAsFQDN,hostUsers,hostnameOverride
        ServiceAccount.automountServiceAccountToken Toleration.tolerationSeconds
        Probe.terminationGracePeriodSeconds GRPCAction.service
        ContainerStatus.ready,restartCount,started,stopSignal ContainerStateTerminated.exitCode
        LinuxContainerUser.uid,gid
        ServiceSpec.allocateLoadBalancerNodePorts,loadBalancerClass,internalTrafficPolicy
        ServiceSpec.ipFamilyPolicy,trafficDistribution
        ClientIPConfig.timeoutSeconds ServicePort.appProtocol EndpointPort.appProtocol EndpointAddress.nodeName
        LoadBalancerIngress.ipMode PortStatus.error
        PersistentVolumeClaimSpec.storageClassName,volumeMode,volumeAttributesClassName
        PersistentVolumeClaimStatus.currentVolumeAttributesClassName
        TypedLocalObjectReference.apiGroup TypedObjectReference.apiGroup,namespace
        TopologySpreadConstraint.minDomains,nodeAffinityPolicy,nodeTaintsPolicy
        VolumeMount.mountPropagation,recursiveReadOnly VolumeMountStatus.recursiveReadOnly
        PodResourceClaim.resourceClaimName,resourceClaimTemplateName PodResourceClaimStatus.resourceClaimName
        NodeSwapStatus.capacity NodeFeatures.supplementalGroupsPolicy,containerUlimits
        NodeRuntimeHandlerFeatures.recursiveReadOnlyMounts,userNamespaces""")
    | _fields(APPS, """
        DeploymentSpec.replicas,revisionHistoryLimit,progressDeadlineSeconds,podReplacementPolicy
        StatefulSetSpec.replicas,revisionHistoryLimit DaemonSetSpec.revisionHistoryLimit ReplicaSetSpec.replicas
        RollingUpdateStatefulSetStrategy.partition,maxUnavailable
        RollingUpdateDeployment.maxUnavailable,maxSurge RollingUpdateDaemonSet.maxUnavailable,maxSurge
        DeploymentStatus.collisionCount,terminatingReplicas DaemonSetStatus.collisionCount
        DaemonSetStatus.currentNumberScheduled,numberMisscheduled,desiredNumberScheduled,numberReady
        StatefulSetStatus.replicas,collisionCount ReplicaSetStatus.replicas,terminatingReplicas""")
    | _fields(BATCH, """
        JobSpec.parallelism,completions,activeDeadlineSeconds,backoffLimit,backoffLimitPerIndex
        JobSpec.maxFailedIndexes,manualSelector,ttlSecondsAfterFinished,completionMode,suspend
        JobSpec.podReplacementPolicy,managedBy
        CronJobSpec.timeZone,startingDeadlineSeconds,suspend,successfulJobsHistoryLimit,failedJobsHistoryLimit
        JobStatus.ready,terminating,failedIndexes PodFailurePolicyOnExitCodesRequirement.containerName
        SuccessPolicyRule.succeededIndexes,succeededCount""")
    | _fields(DISCOVERY, """
        Endpoint.hostname,nodeName,zone EndpointConditions.ready,serving,terminating
        EndpointPort.name,protocol,port,appProtocol""")
    | _fields(COORDINATION, "LeaseSpec.holderIdentity,leaseDurationSeconds,leaseTransitions,strategy,preferredHolder")
    | _fields(AUTHN, "TokenRequestSpec.expirationSeconds")
)

# Message types whose empty value `{}` is meaningful wherever they appear.
KEEP_EMPTY_TYPES = {META + "LabelSelector"}
# Messages all of whose (message-typed) members keep an empty `{}`: `emptyDir: {}` is a whole volume.
KEEP_EMPTY_MEMBERS_OF = {CORE + "VolumeSource", CORE + "VolumeProjection"}

SCALARS = {"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64",
           "sfixed32", "sfixed64", "bool", "string", "bytes"}

# --------------------------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<ident>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<symbol>[{}\[\]()<>;=,:])
""", re.S | re.X)


class ProtoError(Exception):
    pass


def tokenize(text: str, origin: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise ProtoError(f"{origin}:{line}: unexpected character {text[pos]!r}")
        if m.lastgroup != "space":
            tokens.append(m.group())
        pos = m.end()
    return tokens


@dataclass
class FieldDef:
    name: str
    number: int
    label: str  # optional | required | repeated | map
    type: str  # proto type as written (map: value type)
    key_type: str = ""


@dataclass
class MessageDef:
    full_name: str
    package: str
    fields: list[FieldDef] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)  # field name -> resolved type (fq or scalar)


@dataclass
class ProtoFile:
    package: str = ""
    imports: list[str] = field(default_factory=list)
    messages: list[MessageDef] = field(default_factory=list)


class Parser:
    """Recursive descent over the token list; only what go-to-protobuf output needs."""

    def __init__(self, tokens: list[str], origin: str) -> None:
        self.toks = tokens
        self.i = 0
        self.origin = origin
        self.file = ProtoFile()

    def peek(self) -> str:
        return self.toks[self.i] if self.i < len(self.toks) else ""

    def next(self) -> str:
        if self.i >= len(self.toks):
            raise ProtoError(f"{self.origin}: unexpected end of file")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise ProtoError(f"{self.origin}: expected {tok!r}, got {got!r} (token {self.i})")

    def skip_statement(self) -> None:
        """Skip to the end of a `...;` statement or a balanced `{...}` block."""
        depth = 0
        while True:
            tok = self.next()
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if depth == 0:
                    return
            elif tok == ";" and depth == 0:
                return

    def parse(self) -> ProtoFile:
        while self.i < len(self.toks):
            tok = self.next()
            if tok == "syntax":
                self.expect("=")
                syntax = self.next().strip("\"'")
                self.expect(";")
                if syntax != "proto2":
                    raise ProtoError(f"{self.origin}: only proto2 is supported, got {syntax}")
            elif tok == "package":
                self.file.package = self.next()
                self.expect(";")
            elif tok == "import":
                path = self.next()
                if path in ("public", "weak"):
                    path = self.next()
                self.file.imports.append(path.strip("\"'"))
                self.expect(";")
            elif tok == "message":
                self.parse_message(self.file.package)
            elif tok in ("option", "enum", "service", "extend"):
                self.skip_statement()
            elif tok == ";":
                continue
            else:
                raise ProtoError(f"{self.origin}: unexpected {tok!r} at top level")
        return self.file

    def parse_message(self, scope: str) -> None:
        name = self.next()
        msg = MessageDef(f"{scope}.{name}" if scope else name, self.file.package)
        self.file.messages.append(msg)
        self.expect("{")
        self.parse_body(msg)

    def parse_body(self, msg: MessageDef) -> None:
        while True:
            tok = self.peek()
            if tok == "}":
                self.next()
                return
            if tok == "message":
                self.next()
                self.parse_message(msg.full_name)
            elif tok == "oneof":
                self.next()
                self.next()  # oneof name
                self.expect("{")
                while self.peek() != "}":
                    if self.peek() == "option":
                        self.skip_statement()
                    else:
                        self.parse_field(msg, "optional")
                self.next()
            elif tok in ("option", "enum", "reserved", "extensions", "extend"):
                self.skip_statement()
            elif tok == ";":
                self.next()
            else:
                self.parse_field(msg, None)

    def parse_field(self, msg: MessageDef, label: str | None) -> None:
        tok = self.next()
        key_type = ""
        if label is None and tok in ("optional", "required", "repeated"):
            label, tok = tok, self.next()
        if tok == "map":
            self.expect("<")
            key_type = self.next()
            self.expect(",")
            type_ = self.next()
            self.expect(">")
            label = "map"
        else:
            type_ = tok
            label = label or "optional"
        name = self.next()
        self.expect("=")
        number = int(self.next(), 0)
        if self.peek() == "[":
            while self.next() != "]":
                pass
        self.expect(";")
        msg.fields.append(FieldDef(name, number, label, type_, key_type))


# ------------------------------------------------------------------------------------------- resolving


class Schema:
    """All messages of the loaded files, with type references resolved to fully-qualified names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages: dict[str, MessageDef] = {}
        self.loaded: set[str] = set()

    def load(self, rel: str) -> None:
        if rel in self.loaded:
            return
        self.loaded.add(rel)
        path = self.root / rel
        if not path.is_file():
            print(f"warning: {rel} not found under {self.root}; types from it cannot be resolved", file=sys.stderr)
            return
        pf = Parser(tokenize(path.read_text(encoding="utf-8"), rel), rel).parse()
        for msg in pf.messages:
            self.messages[msg.full_name] = msg
        for imp in pf.imports:
            self.load(imp)

    def resolve(self, scope: str, type_: str) -> str:
        if type_ in SCALARS:
            return type_
        if type_.startswith("."):
            if type_[1:] in self.messages:
                return type_[1:]
            raise ProtoError(f"unknown type {type_} (referenced from {scope})")
        # protoc scoping: innermost scope first, then each enclosing scope, then the bare name.
        parts = scope.split(".")
        while True:
            candidate = ".".join([*parts, type_]) if parts else type_
            if candidate in self.messages:
                return candidate
            if not parts:
                break
            parts.pop()
        raise ProtoError(f"unknown type {type_} (referenced from {scope})")


Field = tuple[str, str, str, bool, bool]


def build_table(schema: Schema) -> dict[str, dict[int, Field]]:
    """Walk from the top-level kinds; return message -> {number: (json, kind, type, repeated, keep_zero)}."""
    for name, (_, layout) in SPECIAL.items():
        msg = schema.messages.get(name)
        if msg is None:
            continue  # not loaded: fine as long as nothing references it
        got = {f.number: (f.name, f.type) for f in msg.fields}
        if got != layout:
            raise ProtoError(f"special message {name} changed upstream: {got} != {layout}")
    for msg_name, fname in [*INLINE, *JSON_NAMES]:
        msg = schema.messages.get(msg_name)
        if msg is not None and not any(f.name == fname for f in msg.fields):
            raise ProtoError(f"declared field {msg_name}.{fname} does not exist")
    for entry in sorted(KEEP_ZERO):
        msg_name, _, fname = entry.rpartition(".")
        if msg_name not in schema.messages:
            print(f"warning: KEEP_ZERO entry {entry} names a message that was not loaded", file=sys.stderr)
        elif not any(f.name == fname for f in schema.messages[msg_name].fields):
            raise ProtoError(f"KEEP_ZERO names a field that does not exist: {entry}")

    table: dict[str, dict[int, Field]] = {}
    pending = list(TOP_LEVEL.values())
    while pending:
        name = pending.pop()
        if name in table or name in SPECIAL:
            continue
        msg = schema.messages.get(name)
        if msg is None:
            raise ProtoError(f"message {name} not found in the proto files")
        entries: dict[int, Field] = {}
        for f in msg.fields:
            vtype = schema.resolve(name, f.type)
            json_name = "" if (name, f.name) in INLINE else JSON_NAMES.get((name, f.name), f.name)
            keep = (f"{name}.{f.name}" in KEEP_ZERO or vtype in KEEP_EMPTY_TYPES
                    or (name in KEEP_EMPTY_MEMBERS_OF and vtype not in SCALARS))
            if vtype in SCALARS:
                kind, type_name = vtype, ""
            elif vtype in SPECIAL:
                kind, type_name = SPECIAL[vtype][0], vtype
            else:
                kind, type_name = "message", vtype
                pending.append(vtype)
            if f.label == "map":
                if f.key_type != "string":
                    raise ProtoError(f"{name}.{f.name}: only string map keys are supported")
                kind = "map:" + kind
            entries[f.number] = (json_name, kind, type_name, f.label == "repeated", keep)
        table[name] = entries
    return table


# -------------------------------------------------------------------------------------------- output

HEADER = '''\
# ruff: noqa: E501
"""Wire schema of the Kubernetes protobuf messages the API server decodes (see protobuf.py).

GENERATED by scripts/gen_k8s_protobuf_schema.py from the upstream Kubernetes generated.proto files
(kubernetes/kubernetes staging/src/k8s.io/{api,apimachinery}, Apache License 2.0).  Do not edit by hand;
re-run the script instead.

MESSAGES: fully-qualified message -> {field number: (json name, kind, type name, repeated, keep zero)}.
  json name ""      the field is Go-embedded (`json:",inline"`): merge its properties into the parent.
  kind              a proto scalar (string, bytes, bool, int32, int64, ...), "message", a special JSON
                    form (time, microtime, duration, intorstring, quantity, rawextension, fieldsv1,
                    stringlist), or "map:<value kind>" (keys are always strings).
  type name         the message for "message"/special kinds, "" for scalars.
  keep zero         keep a zero/false/""/{} value instead of dropping it (Go pointer fields and the like).
TOP_LEVEL: (apiVersion, kind) -> message; apiVersion "*" matches any group version.
"""

from __future__ import annotations

Field = tuple[str, str, str, bool, bool]

'''


def render(table: dict[str, dict[int, Field]]) -> str:
    lines = [HEADER, "TOP_LEVEL: dict[tuple[str, str], str] = {"]
    for (api_version, kind), msg in sorted(TOP_LEVEL.items()):
        lines.append(f"    ({api_version!r}, {kind!r}): {msg!r},")
    lines.append("}\n")
    lines.append("MESSAGES: dict[str, dict[int, Field]] = {")
    for name in sorted(table):
        fields = ", ".join(f"{num}: {entry!r}" for num, entry in table[name].items())
        lines.append(f"    {name!r}: {{{fields}}},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("proto_root", type=Path, help="directory containing k8s.io/api/... and k8s.io/apimachinery/...")
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    schema = Schema(args.proto_root)
    for rel in ("k8s.io/api/core/v1/generated.proto", "k8s.io/api/apps/v1/generated.proto",
                "k8s.io/api/rbac/v1/generated.proto", "k8s.io/api/batch/v1/generated.proto",
                "k8s.io/api/discovery/v1/generated.proto", "k8s.io/api/coordination/v1/generated.proto",
                "k8s.io/api/authentication/v1/generated.proto",
                "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto"):
        schema.load(rel)
    try:
        table = build_table(schema)
    except ProtoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    args.output.write_text(render(table), encoding="utf-8")
    nfields = sum(len(v) for v in table.values())
    print(f"wrote {args.output} ({len(table)} messages, {nfields} fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
