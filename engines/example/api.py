"""The example engine's REST: the shell's latest/history resources over its store.

* ``GET /vwap/{symbol}/latest`` — the newest value (404 before the first trade);
* ``GET /vwap/{symbol}/history?from=&to=&limit=&cursor=`` — stored values by trade time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engines.shell import Route
from engines.shell.rest import HistoryResource, LatestResource

if TYPE_CHECKING:
    from engines.example.service import ExampleEngine


def routes(engine: ExampleEngine) -> Sequence[Route]:
    return (
        ("/vwap/{symbol}/latest", LatestResource(engine.values)),
        ("/vwap/{symbol}/history", HistoryResource(engine.values)),
    )
