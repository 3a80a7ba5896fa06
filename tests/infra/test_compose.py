"""infra/docker-compose.yml and the Grafana provisioning files, checked as data: Docker cannot run
where the suite runs, so nothing here starts a container."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.dashboards import (
    DASHBOARDS,
    DATASOURCES,
    INFRA,
    PROMETHEUS_YML,
    RULES_YML,
    load_yaml,
    scrape_jobs,
)

COMPOSE = INFRA / "docker-compose.yml"
#: Where each service listens on the host, as the README's table says.
LISTENS = {
    "postgres": "127.0.0.1:5432",
    "redis": "127.0.0.1:6379",
    "prometheus": "127.0.0.1:9090",
    "grafana": "127.0.0.1:3002",
}


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


def test_the_four_services_on_the_original_ports_of_127_0_0_1(services: dict[str, Any]) -> None:
    assert set(services) == set(LISTENS)
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis"):  # bridged: published on the host's loopback only
        port = LISTENS[name].rpartition(":")[2]
        assert services[name]["ports"] == [f"{LISTENS[name]}:{port}"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert f"--web.listen-address={LISTENS['prometheus']}" in prometheus["command"]
    address, _, port = LISTENS["grafana"].partition(":")
    assert grafana["environment"]["GF_SERVER_HTTP_ADDR"] == address
    assert grafana["environment"]["GF_SERVER_HTTP_PORT"] == port


def test_prometheus_and_grafana_share_the_hosts_network_where_the_platform_binds(
    services: dict[str, Any],
) -> None:
    # The platform binds 127.0.0.1 (the hub's and engines' default host): only a container on
    # the host's network reaches it; host.docker.internal would be the bridge's gateway instead.
    for name in ("prometheus", "grafana"):
        assert services[name]["network_mode"] == "host", name
        assert "ports" not in services[name] and "extra_hosts" not in services[name], name
    assert {host for host, _, _ in scrape_jobs().values()} == {"127.0.0.1"}


def test_prometheus_reads_our_config_and_rules(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == str(PROMETHEUS_YML)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # rule_files are relative to the config file: each must be mounted beside it
    for rule_file in load_yaml(PROMETHEUS_YML)["rule_files"]:
        assert mounts[f"/etc/prometheus/{rule_file}"] == str(PROMETHEUS_YML.parent / rule_file)
    assert mounts["/etc/prometheus/rules.yml"] == str(RULES_YML)


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
    assert source["url"] == f"http://{LISTENS['prometheus']}"
    scrape = load_yaml(PROMETHEUS_YML)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape  # $__rate_interval spans 4 scrapes
