"""infra/docker-compose.yml and the Grafana provisioning files, checked as data (no Docker here)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.dashboards import DASHBOARDS, DATASOURCES, INFRA, PROMETHEUS_YML, load_yaml

COMPOSE = INFRA / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = load_yaml(COMPOSE)
    assert set(compose) <= {"name", "services", "volumes"}
    return dict(compose["services"])


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path → host path, host paths resolved against infra/ (compose's project dir)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = str((INFRA / source).resolve()) if source.startswith(".") else source
    return found


def test_the_four_services_on_the_original_ports(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "prometheus", "grafana"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"].startswith("redis:7")
    expected = {
        "postgres": "127.0.0.1:5432:5432",
        "redis": "127.0.0.1:6379:6379",
        "prometheus": "127.0.0.1:9090:9090",
        "grafana": "127.0.0.1:3002:3000",
    }
    assert {name: s["ports"] for name, s in services.items()} == {
        name: [port] for name, port in expected.items()
    }


def test_prometheus_reads_our_config_and_reaches_the_host(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert "host.docker.internal:host-gateway" in prometheus["extra_hosts"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == str(PROMETHEUS_YML)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_mounts_the_provisioning_and_the_dashboards_it_names(
    services: dict[str, Any],
) -> None:
    mounts = _mounts(services["grafana"])
    assert mounts["/etc/grafana/provisioning"] == str(INFRA / "grafana" / "provisioning")
    provider_file = INFRA / "grafana" / "provisioning" / "dashboards" / "nautilus.yml"
    (provider,) = load_yaml(provider_file)["providers"]
    assert mounts[provider["options"]["path"]] == str(DASHBOARDS)
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    directory, _, file = home.rpartition("/")
    assert mounts[directory] == str(DASHBOARDS) and (DASHBOARDS / file).is_file()


def test_the_datasource_has_the_fixed_uid_and_points_at_the_prometheus_service(
    services: dict[str, Any],
) -> None:
    (source,) = load_yaml(DATASOURCES / "prometheus.yml")["datasources"]
    assert source["uid"] == "nautilus-prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    scrape = load_yaml(PROMETHEUS_YML)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape  # $__rate_interval spans 4 scrapes
