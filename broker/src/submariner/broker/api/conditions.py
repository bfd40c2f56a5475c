"""Condition types and reasons written into status; users and tests match on these exact strings."""

from __future__ import annotations

from typing import Final


class ExportCondition:
    """ServiceExport condition types (lighthouse-agent.md §6)."""

    VALID: Final = "Valid"
    READY: Final = "Ready"
    CONFLICT: Final = "Conflict"
    SYNCED: Final = "Synced"
    """Legacy predecessor of Ready; replaced in place when found."""


class ExportReason:
    """ServiceExport condition reasons; "" is also used (Valid=True, Ready=True)."""

    SERVICE_UNAVAILABLE: Final = "ServiceUnavailable"
    UNSUPPORTED_SERVICE_TYPE: Final = "UnsupportedServiceType"
    SERVICE_GLOBAL_IP_UNAVAILABLE: Final = "ServiceGlobalIPUnavailable"
    SERVICE_RETRIEVAL_FAILED: Final = "ServiceRetrievalFailed"
    AWAITING_EXPORT: Final = "AwaitingExport"
    EXPORT_FAILED: Final = "ExportFailed"
    NO_SERVICE_IMPORT: Final = "NoServiceImport"
    CONFLICTING_TYPE: Final = "ConflictingType"
    CONFLICTING_PORTS: Final = "ConflictingPorts"
    CONFLICTING_SESSION_AFFINITY: Final = "ConflictingSessionAffinity"
    CONFLICTING_SESSION_AFFINITY_CONFIG: Final = "ConflictingSessionAffinityConfig"
    CONFLICTING_CLUSTERSET_IP_ENABLEMENT: Final = "ConflictingClusterSetIPEnablement"


class GlobalnetCondition:
    """Condition types of GlobalEgressIP, ClusterGlobalEgressIP and GlobalIngressIP (dataplane.md §1)."""

    ALLOCATED: Final = "Allocated"
    UPDATED: Final = "Updated"


class GlobalnetReason:
    SUCCESS: Final = "Success"
    ZERO_INPUT: Final = "ZeroInput"
    INVALID_INPUT: Final = "InvalidInput"
    INVALID_INSTANCE: Final = "InvalidInstance"
    IP_POOL_ALLOCATION_FAILED: Final = "IPPoolAllocationFailed"
    PROGRAM_IPTABLE_RULES_FAILED: Final = "ProgramIPTableRulesFailed"
    RESERVE_ALLOCATED_IPS_FAILED: Final = "ReserveAllocatedIPsFailed"
    INTERNAL_SERVICE_CREATION_FAILED: Final = "InternalServiceCreationFailed"
    POD_SELECTOR_UPDATE_NOT_SUPPORTED: Final = "PodSelectorUpdateNotSupported"


EXPORT_CONDITION_TYPES: Final = (
    ExportCondition.VALID,
    ExportCondition.READY,
    ExportCondition.CONFLICT,
    ExportCondition.SYNCED,
)
GLOBALNET_CONDITION_TYPES: Final = (GlobalnetCondition.ALLOCATED, GlobalnetCondition.UPDATED)
