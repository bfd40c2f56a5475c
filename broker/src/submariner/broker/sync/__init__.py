"""Moving objects between clusters: the resource syncer, federators and the broker syncer pair."""

from submariner.broker.sync.broker import BrokerSyncer, BrokerSyncerConfig, ResourceConfig
from submariner.broker.sync.federate import (
    CreateOrUpdateFederator,
    Federator,
    NoopFederator,
    UpdateStatusFederator,
)
from submariner.broker.sync.syncer import (
    Direction,
    Lister,
    OnSuccessfulSync,
    Op,
    ResourcesEquivalent,
    ResourceSyncer,
    ShouldProcess,
    SyncerConfig,
    Transform,
    default_resources_equivalent,
    process_every_update,
)

__all__ = [
    "BrokerSyncer",
    "BrokerSyncerConfig",
    "CreateOrUpdateFederator",
    "Direction",
    "Federator",
    "Lister",
    "NoopFederator",
    "OnSuccessfulSync",
    "Op",
    "ResourceConfig",
    "ResourceSyncer",
    "ResourcesEquivalent",
    "ShouldProcess",
    "SyncerConfig",
    "Transform",
    "UpdateStatusFederator",
    "default_resources_equivalent",
    "process_every_update",
]
