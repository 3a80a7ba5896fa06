"""What every benchmark prints and writes: an aligned table and a JSON document."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


def aligned(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    lines = [tuple(head), *(tuple(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform()}


def write_results(
    name: str, document: dict[str, Any], started: dt.datetime, out: Path | None = None
) -> Path:
    """``results/<name>-<UTC stamp>.json`` and ``results/<name>-latest.json`` (or ``out``)."""
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamped = RESULTS / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    stamped.write_bytes(data)
    (RESULTS / f"{name}-latest.json").write_bytes(data)
    return stamped
