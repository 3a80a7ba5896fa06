"""How the typed records were chosen: msgspec.Struct vs a slots dataclass with hand-written codecs.

    python -m loadtest.records_bench [--out PATH]

Times, per trade record, decoding a bus payload (a dict, as the in-process bus delivers it, and
JSON bytes, as Redis does), encoding it for the wire and building one. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from protocol.records import Trade, decode, encode

OUT = Path(__file__).resolve().parent / "results" / "records_bench.json"
PAYLOAD = {"s": "SPY", "t": 1381152600000000000, "r": 1381152600000000000, "p": 167.41,
           "q": 100.0, "a": None, "i": None, "x": "P", "c": 0}  # fmt: skip


@dataclass(slots=True)
class DataclassTrade:
    """The alternative: a slots dataclass, its codec written by hand (as before the kit)."""

    symbol: str
    event_ns: int
    receive_ns: int
    price: float
    size: float
    aggressor: str | None = None
    sequence: int | None = None
    exchange: str = ""
    condition: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {"s": self.symbol, "t": self.event_ns, "r": self.receive_ns, "p": self.price,
                "q": self.size, "a": self.aggressor, "i": self.sequence, "x": self.exchange,
                "c": self.condition}  # fmt: skip

    @classmethod
    def decode(cls, p: dict[str, Any]) -> DataclassTrade:
        try:
            symbol, t, r = p["s"], p["t"], p["r"]
            if not isinstance(symbol, str) or type(t) is not int or type(r) is not int:
                raise ValueError("bad types")
            side = p.get("a")
            if side not in (None, "buy", "sell"):
                raise ValueError("bad side")
            return cls(symbol, t, r, float(p["p"]), float(p["q"]), side, p.get("i"),
                       p.get("x", ""), p.get("c", 0))  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ValueError(str(exc)) from exc


def per_call_ns(fn: Any, number: int = 200_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    raw = orjson.dumps(PAYLOAD)
    record, plain = decode(Trade, PAYLOAD), DataclassTrade.decode(PAYLOAD)
    rows = {
        "decode dict": (
            per_call_ns(lambda: decode(Trade, PAYLOAD)),
            per_call_ns(lambda: DataclassTrade.decode(PAYLOAD)),
        ),
        "decode JSON bytes": (
            per_call_ns(lambda: decode(Trade, raw)),
            per_call_ns(lambda: DataclassTrade.decode(orjson.loads(raw))),
        ),
        "encode to bytes": (
            per_call_ns(lambda: msgspec.json.encode(record)),
            per_call_ns(lambda: orjson.dumps(plain.to_payload())),
        ),
        "encode to payload": (
            per_call_ns(lambda: encode(record)),
            per_call_ns(plain.to_payload),
        ),
        "build one": (
            per_call_ns(lambda: Trade("SPY", 1, 2, 3.0, 4.0)),
            per_call_ns(lambda: DataclassTrade("SPY", 1, 2, 3.0, 4.0)),
        ),
    }
    print(f"{'per trade record':<22}{'msgspec ns':>12}{'dataclass ns':>14}{'ratio':>8}")
    for name, (ours, theirs) in rows.items():
        print(f"{name:<22}{ours:>12.0f}{theirs:>14.0f}{theirs / ours:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({k: {"msgspec_ns": a, "dataclass_ns": b}
                                    for k, (a, b) in rows.items()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
