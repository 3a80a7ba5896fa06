"""VPIN REST: latest bucket, stored history (range + cursor), batch compute.

* ``GET /vpin/{symbol}/latest`` — the last published bucket (404 before the first);
* ``GET /vpin/{symbol}/history?from=&to=&limit=&cursor=`` — stored buckets by end time,
  ``from <= end_ns < to``, a page of ``limit`` (≤ 10 000) and ``next_cursor``;
* ``POST /vpin/batch`` — ``{"trades": [{"t": ns, "p": price, "q": size}, ...], "params": {...}}``,
  or ``{"symbol", "from", "to", "params"}`` over trades in the store, or many symbols at once
  ``{"symbols": {"SPY": [...], "QQQ": [...]}, "params": {...}}`` (one vectorized call, same
  parameters for all). Answers the numbers the realtime stream gives for the same trades: V is
  ``params.bucket_volume`` if given, else the symbol's (the engine's rule; a posted list without
  a symbol, or a symbol without a V or reference ADV: the probe over the posted trades), and
  ``params`` says which (``bucket_volume_source``); a many-symbol answer carries each symbol's
  ``params`` and, at the top, those common to all (``bucket_volume`` null when V differ). Limits
  (config): ``max_batch_symbols`` symbols and ``max_batch_trades`` trades over all symbols; a 400
  names the field at fault (``trades[3].q``, ``symbols.SPY[1].q``, ``params``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engines.shell import Route
from engines.shell.rest import HistoryResource, LatestResource
from engines.vpin.batch import BatchResource

if TYPE_CHECKING:
    from engines.vpin.service import VpinEngine


def routes(engine: VpinEngine) -> Sequence[Route]:
    return (
        ("/vpin/{symbol}/latest", LatestResource(engine.buckets)),
        ("/vpin/{symbol}/history", HistoryResource(engine.buckets)),
        ("/vpin/batch", BatchResource.of(engine)),
    )
