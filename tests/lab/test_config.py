"""Kind configs, read unchanged: the seed's three, kind's defaults, and one-line errors for bad input."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from submariner.lab.config import ConfigError, parse_config

BIN = Path(sys.executable).parent

SEED_C1 = """\
kind: Cluster
name: c1
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
networking:
  apiServerAddress: 192.168.1.20
  podSubnet: "10.8.0.0/16"
  serviceSubnet: "10.88.0.0/16"
"""

SEED_BROKER = """\
kind: Cluster
name: broker
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
networking:
  apiServerAddress: 192.168.1.20
  podSubnet: "10.7.0.0/16"
  serviceSubnet: "10.77.0.0/16"
"""


def test_seed_config() -> None:
    cfg = parse_config(SEED_C1)
    assert cfg.name == "c1"
    assert [(n.name, n.role) for n in cfg.nodes] == [("c1-control-plane", "control-plane"), ("c1-worker", "worker")]
    assert cfg.pod_subnet == ipaddress.ip_network("10.8.0.0/16")
    assert cfg.service_subnet == ipaddress.ip_network("10.88.0.0/16")
    assert [str(c) for c in cfg.pod_cidrs()] == ["10.8.0.0/24", "10.8.1.0/24"]
    assert str(cfg.dns_ip) == "10.88.0.10"
    assert cfg.ignored == ("networking.apiServerAddress",)
    assert cfg.control_plane.name == "c1-control-plane"


def test_single_node_broker() -> None:
    cfg = parse_config(SEED_BROKER)
    assert [n.name for n in cfg.nodes] == ["broker-control-plane"]
    assert str(cfg.dns_ip) == "10.77.0.10"


def test_kind_defaults() -> None:
    cfg = parse_config("")
    assert cfg.name == "sublab"
    assert [n.name for n in cfg.nodes] == ["sublab-control-plane"]
    assert str(cfg.pod_subnet) == "10.244.0.0/16"
    assert str(cfg.service_subnet) == "10.96.0.0/16"
    assert parse_config("", default_name="fromenv").name == "fromenv"


def test_name_flag_wins_and_node_names_like_kind() -> None:
    text = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: ignored
nodes:
- role: worker
  labels: {submariner.io/gateway: "true", tier: 1}
- role: control-plane
- role: worker
  image: kindest/node:v1.26.3
- role: control-plane
"""
    cfg = parse_config(text, name="x")
    assert [(n.name, n.role) for n in cfg.nodes] == [
        ("x-control-plane", "control-plane"), ("x-control-plane2", "control-plane"),
        ("x-worker", "worker"), ("x-worker2", "worker"),
    ]
    assert dict(cfg.nodes[2].labels) == {"submariner.io/gateway": "true", "tier": "1"}
    assert "nodes[2].image" in cfg.ignored


@pytest.mark.parametrize(("text", "fragment"), [
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes: [", "invalid YAML at line"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n", "apiVersion must be"),
    ("kind: Foo\napiVersion: kind.x-k8s.io/v1alpha4\n", "kind must be"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: master\n", "'master' is not a role"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: worker\n", "at least one node"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: 10.7.0/16\n", "is not a CIDR"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: 10.7.0.1/16\n", "host bits"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: fd00::/48\n", "IPv6"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  serviceSubnet: 10.244.0.0/20\n",
     "overlaps serviceSubnet"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: 198.18.0.0/16\n",
     "overlaps the lab underlay"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: 10.1.0.0/25\n", "too small"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  ipFamily: dual\n", "IPv4 only"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: Bad_Name\n", "invalid cluster name"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodez: []\n", "unknown field 'nodez'"),
    ("- just a list\n", "expected a mapping"),
])
def test_bad_configs_give_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml")
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and message.startswith("c.yaml")


def test_cli_rejects_bad_config_before_creating_anything(tmp_path: Path) -> None:
    """A bad config is reported in one line and nothing (not even the state directory) is created."""
    home = tmp_path / "home"
    env = {**os.environ, "SUBLAB_HOME": str(home), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    bad = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: boss\n"
    result = subprocess.run([str(BIN / "sublab"), "create", "cluster", "--config", "-"], input=bad, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ERROR: stdin: nodes[0].role: 'boss' is not a role; use 'control-plane' or 'worker'"
    ]
    assert not home.exists()
    assert not (tmp_path / "kubeconfig").exists()
