"""Reading ``infra/``: the dashboards' queries, the Prometheus scrape jobs and the alert rules,
for the tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
DASHBOARDS = INFRA / "grafana" / "dashboards"
PROMETHEUS_YML = INFRA / "prometheus" / "prometheus.yml"
RULES_YML = INFRA / "prometheus" / "rules.yml"
RULES_TEST_YML = INFRA / "prometheus" / "rules_test.yml"
DATASOURCES = INFRA / "grafana" / "provisioning" / "datasources"

#: What the test puts in for Grafana's variables: a window of several 1 s scrapes, every value.
CONCRETE = {"$__rate_interval": "10s", "$instance": ".*", "$engine": ".*"}
_VARIABLE = re.compile(r"\$\{?\w+")
_LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


@dataclass(frozen=True, slots=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    def concrete(self) -> str:
        """The expression with every dashboard variable replaced; fails on one we don't know."""
        expr = self.expr
        for variable, value in CONCRETE.items():
            expr = expr.replace(variable, value)
        left = _VARIABLE.findall(expr)
        assert not left, f"{self}: unknown variables {left}"
        return expr

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


@dataclass(frozen=True, slots=True)
class LabelValues:
    """A ``label_values(metric, label)`` template variable."""

    dashboard: str
    variable: str
    metric: str
    label: str


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found = []
    for panel in board.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(name, panel["title"], target["refId"], target["expr"])
        for name, board in load_dashboards().items()
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def label_values_variables() -> list[LabelValues]:
    found = []
    for name, board in load_dashboards().items():
        for variable in board["templating"]["list"]:
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"{name}: variable {variable['name']} is not label_values(metric, label)"
            found.append(LabelValues(name, variable["name"], match[1], match[2]))
    return found


def scrape_jobs() -> dict[str, tuple[str, int, dict[str, str]]]:
    """job name → (host, port, target labels) from infra/prometheus/prometheus.yml."""
    jobs = {}
    for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]:
        (static,) = job["static_configs"]
        (target,) = static["targets"]
        host, _, port = target.rpartition(":")
        jobs[job["job_name"]] = (host, int(port), dict(static.get("labels", {})))
    return jobs


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of infra/prometheus/rules.yml, in file order."""
    groups = load_yaml(RULES_YML)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def scrape_config_for(ports: dict[str, int], interval_s: int = 1) -> dict[str, Any]:
    """infra/prometheus/prometheus.yml pointed at 127.0.0.1 and ``ports`` (job → port), scraping
    and evaluating its rules every ``interval_s``: the same jobs and labels the dashboards and the
    alert rules select on (jobs not in ``ports`` left out), the rule files by absolute path."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_YML)
    config["global"] = {
        "scrape_interval": f"{interval_s}s",
        "scrape_timeout": f"{interval_s}s",
        "evaluation_interval": f"{interval_s}s",
    }
    config["rule_files"] = [str(PROMETHEUS_YML.parent / f) for f in config["rule_files"]]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] in ports]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{ports[job['job_name']]}"]
    return config
