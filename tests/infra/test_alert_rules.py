"""infra/prometheus/rules.yml: promtool's checks and unit tests (rules_test.yml), and the rules'
shape: every alert tested firing, with a severity and a summary.

Whether each rule evaluates against real series is tests/infra/test_prometheus.py's part (the
platform running, Prometheus loading the rules through prometheus.yml).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.infra.dashboards import (
    PROMETHEUS_YML,
    RULES_TEST_YML,
    RULES_YML,
    alert_rules,
    load_yaml,
)

SEVERITIES = {"critical", "warning", "info"}


def _promtool(*args: str | Path) -> str:
    done = subprocess.run(
        ["promtool", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_the_rules(binaries: None) -> None:
    assert f"SUCCESS: {len(alert_rules())} rules found" in _promtool("check", "rules", RULES_YML)


def test_promtool_unit_tests_of_the_rules_pass(binaries: None) -> None:
    _promtool("test", "rules", RULES_TEST_YML)


def test_prometheus_yml_loads_the_rules() -> None:
    rule_files = load_yaml(PROMETHEUS_YML)["rule_files"]
    assert [PROMETHEUS_YML.parent / f for f in rule_files] == [RULES_YML]
    assert load_yaml(RULES_TEST_YML)["rule_files"] == [RULES_YML.name]


def test_every_alert_is_unit_tested_firing_and_some_not_firing() -> None:
    tests = load_yaml(RULES_TEST_YML)["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert set(names) - fired == set(), "alerts never tested firing"
    assert {case["alertname"] for case in cases} <= set(names), "tests of alerts that do not exist"
    # the negative cases: pending within `for`, recovered, or below a threshold
    assert len(quiet) >= len(names) // 2, sorted(set(names) - quiet)


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["alert"].startswith("Nautilus"), rule["alert"]


def test_the_required_conditions_have_alerts() -> None:
    """Issue 15: hub p99 over target, drops, slow-client disconnects, engine down or degraded,
    bus gaps and reconnects, the PostgreSQL write queue filling, supervisor restarts."""
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}

    def reads(metric: str) -> bool:
        return any(metric in expr for expr in exprs.values())

    for stage in ("hub_receive_to_send", "publish_to_hub", "event_to_send"):
        assert reads(f"nautilus_stage_{stage}_seconds_bucket"), stage
    for metric in (
        "nautilus_hub_dropped_messages_total",
        "nautilus_hub_slow_consumer_disconnects_total",
        'up{role="engine"}',
        'up{role="hub"}',
        "nautilus_engine_up",
        "nautilus_engine_degraded",
        "nautilus_hub_degraded",
        "nautilus_hub_bus_gap_messages_total",
        "nautilus_hub_bus_reconnects_total",
        "nautilus_storage_queued_rows",
        "nautilus_storage_dropped_rows_total",
        "nautilus_supervisor_restarts_total",
        "nautilus_supervisor_child_state",
    ):
        assert reads(metric), metric
