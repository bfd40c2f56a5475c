"""The broker syncer (Admiral's `syncer/broker`, lighthouse-agent.md §10.4).

Per resource type, two syncers: local→broker exports objects made on this cluster into the broker
namespace stamped with the local cluster ID; broker→local imports other clusters' objects into their
originating namespace (or a fixed local namespace). After start, each side deletes copies whose original
is gone (orphans left by a restart while the other side changed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from submariner.broker.api.meta import APIResource
from submariner.broker.kube.client import NAMESPACES, ClientFactory
from submariner.broker.kube.informer import Informer
from submariner.broker.sync.federate import CreateOrUpdateFederator
from submariner.broker.sync.syncer import (
    Direction,
    OnSuccessfulSync,
    ResourcesEquivalent,
    ResourceSyncer,
    ShouldProcess,
    SyncerConfig,
    Transform,
    default_resources_equivalent,
)

log = logging.getLogger(__name__)


@dataclass
class ResourceConfig:
    """One resource type to share through the broker."""

    resource: APIResource
    local_namespace: str = ""
    """Where local objects are exported from and imports land; "" = all namespaces, imports go to their
    originating namespace."""
    label_selector: str = ""
    field_selector: str = ""
    local_transform: Transform | None = None
    local_on_successful_sync: OnSuccessfulSync | None = None
    local_resources_equivalent: ResourcesEquivalent = default_resources_equivalent
    local_should_process: ShouldProcess | None = None
    local_wait_for_cache_sync: bool = True
    broker_transform: Transform | None = None
    broker_on_successful_sync: OnSuccessfulSync | None = None
    broker_resources_equivalent: ResourcesEquivalent = default_resources_equivalent
    broker_should_process: ShouldProcess | None = None
    broker_wait_for_cache_sync: bool = False
    """Off by default so an unreachable broker does not block start-up (exports retry meanwhile)."""


@dataclass
class BrokerSyncerConfig:
    local: ClientFactory
    broker: ClientFactory
    broker_namespace: str
    local_cluster_id: str
    resources: Sequence[ResourceConfig]
    park_missing_namespaces: bool = True
    """Watch local namespaces so an import into a missing namespace waits for it (else: retry)."""


class BrokerSyncer:
    """Local ⇄ broker sync for every configured resource type."""

    def __init__(self, config: BrokerSyncerConfig) -> None:
        self.config = config
        self._namespaces: Informer | None = None
        if config.park_missing_namespaces:
            self._namespaces = Informer(
                config.local.resource(NAMESPACES), name=f"{config.local_cluster_id}-namespaces"
            )
        self._pairs: dict[APIResource, tuple[ResourceSyncer, ResourceSyncer]] = {}
        for rc in config.resources:
            self._pairs[rc.resource] = (self._local_to_broker(rc), self._broker_to_local(rc))

    def _local_to_broker(self, rc: ResourceConfig) -> ResourceSyncer:
        c = self.config
        return ResourceSyncer(SyncerConfig(
            name=f"{rc.resource.plural}-local-to-broker",
            source=c.local.resource(rc.resource),
            source_namespace=rc.local_namespace,
            label_selector=rc.label_selector,
            field_selector=rc.field_selector,
            local_cluster_id=c.local_cluster_id,
            direction=Direction.LOCAL_TO_REMOTE,
            federator=CreateOrUpdateFederator(
                c.broker.resource(rc.resource), c.broker_namespace, c.local_cluster_id
            ),
            transform=rc.local_transform,
            on_successful_sync=rc.local_on_successful_sync,
            resources_equivalent=rc.local_resources_equivalent,
            should_process=rc.local_should_process,
            wait_for_cache_sync=rc.local_wait_for_cache_sync,
        ))

    def _broker_to_local(self, rc: ResourceConfig) -> ResourceSyncer:
        c = self.config
        return ResourceSyncer(SyncerConfig(
            name=f"{rc.resource.plural}-broker-to-local",
            source=c.broker.resource(rc.resource),
            source_namespace=c.broker_namespace,
            label_selector=rc.label_selector,
            field_selector=rc.field_selector,
            local_cluster_id=c.local_cluster_id,
            direction=Direction.REMOTE_TO_LOCAL,
            federator=CreateOrUpdateFederator(
                c.local.resource(rc.resource), rc.local_namespace, use_originating_namespace=True
            ),
            transform=rc.broker_transform,
            on_successful_sync=rc.broker_on_successful_sync,
            resources_equivalent=rc.broker_resources_equivalent,
            should_process=rc.broker_should_process,
            wait_for_cache_sync=rc.broker_wait_for_cache_sync,
            namespace_informer=self._namespaces,
        ))

    def start(self, timeout: float | None = None) -> None:
        """Start every syncer (waiting for local caches), then reconcile orphans in the background."""
        if self._namespaces is not None:
            self._namespaces.start()
        for local, _ in self._pairs.values():
            local.start(timeout)
        for _, remote in self._pairs.values():
            remote.start(timeout)
        for local, remote in self._pairs.values():
            remote.reconcile(local.list_resources)
            local.reconcile(remote.list_resources)
        log.info("broker syncer started cluster=%s broker_namespace=%s resources=%s",
                 self.config.local_cluster_id, self.config.broker_namespace,
                 ",".join(r.plural for r in self._pairs))

    def stop(self) -> None:
        for local, remote in self._pairs.values():
            local.stop()
            remote.stop()
        if self._namespaces is not None:
            self._namespaces.stop()

    def local_syncer(self, resource: APIResource) -> ResourceSyncer:
        """The local→broker syncer of a type (its cache = this cluster's objects)."""
        return self._pairs[resource][0]

    def broker_syncer(self, resource: APIResource) -> ResourceSyncer:
        """The broker→local syncer of a type (its cache = the broker's objects)."""
        return self._pairs[resource][1]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        for pair in self._pairs.values():
            for s in pair:
                if not s.wait_idle(max(0.0, deadline - time.monotonic())):
                    return False
        return True
