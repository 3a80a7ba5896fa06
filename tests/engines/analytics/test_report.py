"""The tear sheet: a self-contained page whose four charts carry data (no JS)."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from engines.analytics import core, report


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_has_the_four_charts_with_data() -> None:
    rng = np.random.default_rng(7)
    r = rng.normal(0.0004, 0.01, 600)
    dates = np.datetime64("2019-01-02") + np.arange(600)
    page = report.render_report(r, dates, title="SPY <buy & hold>", rolling_window=63)
    parser = _Tags()
    parser.feed(page)
    svgs = [a.get("class") for t, a in parser.tags if t == "svg"]
    assert svgs == ["chart equity", "chart underwater", "chart heatmap", "chart rolling-sharpe"]
    assert sum(t == "polyline" for t, _ in parser.tags) == 2
    assert sum(t == "polygon" for t, _ in parser.tags) == 1
    months = core.monthly_returns(r, dates)
    assert sum(t == "rect" for t, _ in parser.tags) == months.values.size
    assert "<script" not in page
    assert "SPY &lt;buy &amp; hold&gt;" in page and "<buy" not in page
    polyline = next(a["points"] for t, a in parser.tags if t == "polyline")
    assert polyline is not None and len(polyline.split()) == 600


def test_report_rejects_bad_input() -> None:
    with pytest.raises(core.AnalyticsInputError) as info:
        report.render_report(np.zeros(3), np.arange(2).astype("datetime64[D]"))
    assert info.value.parameter == "dates"
