"""The dashboards as JSON: the provisioned datasource, recent schema, variables Grafana knows."""

from __future__ import annotations

import re

from tests.infra.dashboards import (
    CONCRETE,
    DATASOURCES,
    label_values_variables,
    load_dashboards,
    load_yaml,
    panel_queries,
    panels,
)

EXPECTED = {
    "latency-per-stage",
    "delivery",
    "drops-and-conflations",
    "connections",
    "engine-health-and-lag",
}
_WINDOW = re.compile(r"\[([^\]]+)\]")


def test_the_five_dashboards_have_unique_uids_and_a_recent_schema() -> None:
    boards = load_dashboards()
    assert set(boards) == EXPECTED
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for board in boards.values():
        assert board["schemaVersion"] >= 39
        ids = [p["id"] for p in panels(board)]
        assert len(set(ids)) == len(ids)
        for panel in panels(board):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_every_panel_and_variable_uses_the_provisioned_datasource() -> None:
    (source,) = load_yaml(DATASOURCES / "prometheus.yml")["datasources"]
    expected = {"type": "prometheus", "uid": source["uid"]}
    for name, board in load_dashboards().items():
        for panel in panels(board):
            assert panel["datasource"] == expected, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == expected, (name, panel["title"])
        for variable in board["templating"]["list"]:
            assert variable["datasource"] == expected, (name, variable["name"])


def test_every_range_uses_the_rate_interval_and_every_variable_is_defined() -> None:
    queries = panel_queries()
    assert len(queries) >= 40
    for query in queries:
        assert set(_WINDOW.findall(query.expr)) <= {"$__rate_interval"}, query
        query.concrete()  # asserts no unknown $variable is left
    defined = {v.variable for v in label_values_variables()}
    assert {f"${name}" for name in defined} <= set(CONCRETE)


def test_latency_panels_show_p50_p99_and_p99_9_of_every_stage() -> None:
    stage_histograms = (
        "nautilus_stage_event_to_send_seconds",
        "nautilus_stage_event_to_publish_seconds",
        "nautilus_stage_publish_to_hub_seconds",
        "nautilus_stage_hub_receive_to_send_seconds",
        "nautilus_hub_broadcast_seconds",
        "nautilus_engine_compute_seconds",
    )
    exprs = [q.expr for q in panel_queries() if q.dashboard == "latency-per-stage"]
    for histogram in stage_histograms:
        for quantile in ("0.5", "0.99", "0.999"):
            assert any(
                e.startswith(f"histogram_quantile({quantile},") and f"{histogram}_bucket" in e
                for e in exprs
            ), (histogram, quantile)


def test_latency_shows_end_to_end_by_kind_and_as_a_heatmap() -> None:
    board = load_dashboards()["latency-per-stage"]
    end_to_end = "nautilus_stage_event_to_send_seconds_bucket"
    (heatmap,) = [p for p in panels(board) if p["type"] == "heatmap"]
    (target,) = heatmap["targets"]
    assert end_to_end in target["expr"] and target["format"] == "heatmap"
    assert target["expr"].startswith("sum by (le) (increase(")  # counts per bucket, not rates
    assert heatmap["options"]["calculate"] is False  # Prometheus's buckets, not Grafana's
    assert heatmap["options"]["yAxis"]["unit"] == "s"
    by_kind = [
        q.expr
        for q in panel_queries()
        if q.dashboard == "latency-per-stage" and end_to_end in q.expr and "kind" in q.expr
    ]
    assert any("sum by (le, kind)" in e for e in by_kind)
    assert panels(board)[0]["title"].startswith("End to end")  # what a user feels, first
