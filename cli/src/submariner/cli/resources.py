"""Where the kinds subctl touches are served (no discovery round trips)."""

from __future__ import annotations

from submariner.broker.api.meta import APIResource
from submariner.broker.api.multicluster import SERVICE_EXPORTS, SERVICE_IMPORTS
from submariner.broker.api.operator import BROKERS, SERVICE_DISCOVERIES, SUBMARINERS
from submariner.broker.api.submariner import CLUSTERS, ENDPOINTS, GATEWAYS, ROUTE_AGENTS
from submariner.broker.kube import CONFIGMAPS, CRDS, LEASES, NAMESPACES, SECRETS, SERVICES

NODES = APIResource("", "v1", "Node", "nodes", "node", False)
PODS = APIResource("", "v1", "Pod", "pods", "pod", True)
SERVICE_ACCOUNTS = APIResource("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True)
DAEMON_SETS = APIResource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True)
DEPLOYMENTS = APIResource("apps", "v1", "Deployment", "deployments", "deployment", True)
_RBAC = "rbac.authorization.k8s.io"
ROLES = APIResource(_RBAC, "v1", "Role", "roles", "role", True)
ROLE_BINDINGS = APIResource(_RBAC, "v1", "RoleBinding", "rolebindings", "rolebinding", True)
CLUSTER_ROLES = APIResource(_RBAC, "v1", "ClusterRole", "clusterroles", "clusterrole", False)
CLUSTER_ROLE_BINDINGS = APIResource(_RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding",
                                    False)
OPENSHIFT_NETWORKS = APIResource("config.openshift.io", "v1", "Network", "networks", "network", False)

BY_KIND: dict[str, APIResource] = {
    r.kind: r for r in (
        NODES, PODS, SERVICE_ACCOUNTS, DAEMON_SETS, DEPLOYMENTS, ROLES, ROLE_BINDINGS, CLUSTER_ROLES,
        CLUSTER_ROLE_BINDINGS, NAMESPACES, CONFIGMAPS, SECRETS, SERVICES, LEASES, CRDS, SUBMARINERS,
        SERVICE_DISCOVERIES, BROKERS, CLUSTERS, ENDPOINTS, GATEWAYS, ROUTE_AGENTS, SERVICE_EXPORTS, SERVICE_IMPORTS,
    )
}
"""Kind → resource, for applying rendered manifest lists."""

__all__ = [
    "BROKERS", "BY_KIND", "CLUSTERS", "CLUSTER_ROLES", "CLUSTER_ROLE_BINDINGS", "CONFIGMAPS", "CRDS",
    "DAEMON_SETS", "DEPLOYMENTS", "ENDPOINTS", "GATEWAYS", "LEASES", "NAMESPACES", "NODES", "OPENSHIFT_NETWORKS",
    "PODS", "ROLES", "ROLE_BINDINGS", "ROUTE_AGENTS", "SECRETS", "SERVICES", "SERVICE_ACCOUNTS",
    "SERVICE_DISCOVERIES", "SERVICE_EXPORTS", "SERVICE_IMPORTS", "SUBMARINERS",
]
