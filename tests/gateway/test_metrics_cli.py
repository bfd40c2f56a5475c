"""Metrics rendering/serving, and the CLI's configuration errors and broker environment."""

from __future__ import annotations

import urllib.request

import pytest
from gwtest import spec

from submariner.gateway.cable.driver import connection
from submariner.gateway.cli import broker_from_env, main
from submariner.gateway.config import ConfigError
from submariner.gateway.metrics import MetricsServer, render, seconds


def status() -> dict:  # type: ignore[type-arg]
    conn = connection(spec("west", "192.168.2.20", hostname="west-gw"), "connected", "",  # type: ignore[arg-type]
                      using_ip="192.168.2.20")
    conn["latencyRTT"] = {"last": "1.5ms", "min": "1ms", "average": "1.2ms", "max": "2ms", "stdDev": "100µs"}
    return {"haStatus": "active", "localEndpoint": spec("east", "192.168.1.10", hostname="east-gw"),
            "connections": [conn]}


def test_seconds_parses_go_durations() -> None:
    assert seconds("1.5ms") == pytest.approx(0.0015)
    assert seconds("1m30s") == 90
    assert seconds("100µs") == pytest.approx(0.0001)


def test_render_and_serve() -> None:
    text = render(status(), driver="vxlan")
    assert "submariner_gateways 1" in text
    assert ('submariner_connections{local_cluster="east",local_hostname="east-gw",cable_driver="vxlan",'
            'local_endpoint_ip="192.168.1.10",remote_cluster="west",remote_hostname="west-gw",'
            'remote_endpoint_ip="192.168.2.20",status="connected"} 1') in text
    assert "submariner_connection_latency_seconds{" in text and text.rstrip().endswith("0.001500000")
    server = MetricsServer(0, status, driver="vxlan", host="127.0.0.1")
    server.start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        assert body == text
    finally:
        server.stop()


def test_broker_env_like_lighthouse_agent() -> None:
    broker, ns, url = broker_from_env({"BROKER_K8S_APISERVER": "198.18.0.1:6443", "BROKER_K8S_APISERVERTOKEN": "t",
                                       "BROKER_K8S_REMOTENAMESPACE": "submariner-k8s-broker",
                                       "BROKER_K8S_INSECURE": "true"})
    assert (ns, url) == ("submariner-k8s-broker", "https://198.18.0.1:6443")
    assert broker.name == "broker"
    with pytest.raises(ConfigError, match="BROKER_K8S_APISERVERTOKEN"):
        broker_from_env({"BROKER_K8S_APISERVER": "https://b:6443"})
    with pytest.raises(ConfigError, match="BROKER_K8S_APISERVER"):
        broker_from_env({})


def test_cli_config_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([], env={"NODE_NAME": "n"})
    assert e.value.code == 2
    assert "SUBMARINER_CLUSTERID is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([], env={"SUBMARINER_CLUSTERID": "east", "NODE_NAME": "n", "SUBMARINER_CLUSTERCIDR": "10.1.0.0/16"})
    assert e.value.code == 2
    assert "no broker given" in capsys.readouterr().err
