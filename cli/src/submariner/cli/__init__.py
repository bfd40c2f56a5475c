"""subctl: deploys the broker, joins clusters, exports services and shows the state (subctl.md).

There is no operator: `join` renders the component workloads itself (`manifests`) and applies them, the
same objects on a real cluster and in the lab.
"""

VERSION = "v0.19.0"
"""What `subctl version` prints; the component images are tagged with it (without the `v`)."""

IMAGE_TAG = VERSION.removeprefix("v")
DEFAULT_REPOSITORY = "quay.io/submariner"
OPERATOR_NAMESPACE = "submariner-operator"
BROKER_NAMESPACE = "submariner-k8s-broker"
