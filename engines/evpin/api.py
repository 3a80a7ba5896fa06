"""Enhanced VPIN REST: latest bucket, stored history, batch compute, classifier accuracy.

* ``GET /evpin/{symbol}/latest``, ``GET /evpin/{symbol}/history?from=&to=&limit=&cursor=`` and
  ``POST /evpin/batch`` — as VPIN's (``engines.vpin.api``), with Enhanced VPIN's numbers and
  parameters (``t_df``, ``fit_t_df``, ``band_z`` besides VPIN's);
* ``GET /evpin/accuracy?bar_ms=1000&quote_lag_ms=50&spy_days=1`` answers
  ``{"binance": {"trades", "classifiers": [{"classifier", "trades", "volume"}]},
  "spy": {"days", "buckets", "vpin": {classifier: {"mean", "last"}}}}``: each classifier's share
  of trades and of volume signed as Binance's aggressor flag says (bundled BTCUSDT file), and the
  VPIN each classifier gives on the same SPY buckets (the first ``spy_days`` bundled days, engine
  parameters). Computed once per query on the compute threads, then cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import falcon.asgi

from engines.shell import Route
from engines.shell.params import query_int
from engines.shell.rest import HistoryResource, LatestResource
from engines.vpin.batch import BatchResource

if TYPE_CHECKING:
    from engines.evpin.service import EnhancedVpinEngine


def routes(engine: EnhancedVpinEngine) -> Sequence[Route]:
    return (
        ("/evpin/{symbol}/latest", LatestResource(engine.buckets)),
        ("/evpin/{symbol}/history", HistoryResource(engine.buckets)),
        ("/evpin/batch", BatchResource.of(engine)),
        ("/evpin/accuracy", AccuracyResource(engine)),
    )


class AccuracyResource:
    def __init__(self, engine: EnhancedVpinEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        bar_ms = query_int(req, "bar_ms", default=1_000, minimum=1, maximum=3_600_000)
        lag_ms = query_int(req, "quote_lag_ms", default=50, minimum=0, maximum=60_000)
        spy_days = query_int(req, "spy_days", default=1, minimum=0, maximum=5)
        resp.media = await self._engine.accuracy_report(bar_ms, lag_ms, spy_days)
