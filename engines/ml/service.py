"""ML engine (port 8400): ``features.*`` and ``bars.<spec>.*`` in, ``ml.<model>.SYM`` out.

Per symbol and configured model one learner runs test-then-train on the stream: ``logistic``
(P(up) of the sign label, SGD), ``linear`` (the forward return, SGD), ``hoeffding_tree`` (P(up),
a Hoeffding tree) and ``bagging`` (P(up), Oza bagging of ``bagging_models`` Hoeffding trees,
seeded per symbol from ``seed`` so a replay repeats itself) — each equal to its river
counterpart (``core``, ``hoeffding``):

1. each bar of the spec advances every pending sample's label (``core.ForwardReturnLabel`` at
   ``horizon`` bars, or ``core.TripleBarrierLabel``); a resolved label first scores the prediction
   made when the sample was seen (``core.Prequential``; the drift detector — Page–Hinkley, or
   ADWIN with ``drift_detector=adwin`` — watches its loss, and a drift counts only when the loss
   rose: Page–Hinkley in ``up`` mode, ADWIN when the window's mean loss after the cut is above
   the mean before), then the model learns it; a drift resets the model (``reset_on_drift``) and
   bumps its version;
2. then the features message of *that same bar* (its ``end_ns``) is predicted on and published:
   ``{"model", "symbol", "version", "prediction", "probability", "bet_size", "event_ns",
   "bar_end_ns", "learned", "drifts", "drift", "metrics"}``, stored per model, and queued as a
   sample whose label resolves later.

So a prediction at bar ``t`` only ever uses labels resolved by bars ending at or before ``t``,
whatever order the two input streams interleave in: a bar waits for its features message before
the next bar may resolve labels, until a later bar's features message shows it will not come
(features arrive in bar order) or ``features_wait_bars`` later bars are queued (a symbol without
features); a features message for a bar already passed is counted ``late`` and skipped.
``bet_size`` is AFML's ``2Φ(z) − 1`` (Strategy's ML-bet strategy reads it); ``event_ns`` the
newest input time behind the value (the bar's end). A sample with a missing (warm-up ``null``)
or non-finite configured feature is not predicted on (counted ``warming``); a tree model that has
learned nothing yet publishes nothing for the sample (counted ``untrained``) but learns it.

Bad input is counted by the shell and skipped: a bar or features message of another spec
(``wrong_spec``), a bar at or before the symbol's last (``out_of_order``), a non-positive close
(``invalid_value``), a features message without a configured key (``missing_feature``) or
for a bar already waiting (``duplicate_features``).

Limits: the learning runs on the event loop (two linear models of ten features: tens of µs a bar;
a Hoeffding tree ~0.1 ms and ten bagged trees ~0.3 ms, p99 ~0.9 ms, a bar in pure Python, see
loadtest/ml_bench); the vmapped many-symbol step (``core.make_batch_step``) serves the batch and
the benchmark, not the per-message path; models live in memory (a restart starts them afresh,
version 1).

Model registry (``GET /ml/models``): each entry's ``source`` tells the two kinds apart —
``online`` (the streaming models above, one per configured kind, versions per symbol, in memory)
and ``walkforward`` (one entry per completed ``POST /ml/walkforward`` job: a batch model version
named from its estimator and parameters, e.g. ``logistic(C=0.3)``, numbered 1, 2, … per name,
with its ``created_ns`` (the engine clock when the job completed), the job id, the scheme, the
training window — stored bars: symbols, spec, first row time ``from_ns`` and last label time
``to_ns``; posted rows: the row count only — and the per-fold and mean accuracy, log loss,
AUC). Walk-forward versions are stored (``ml.registry.walkforward`` in the signals table) and
read back at start, so a restart lists them and numbers on; the registry lists the newest
``max_model_versions`` of them (older ones stay stored, and their names keep counting).
"""

from __future__ import annotations

import json
import math
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter

from engines.ml import core
from engines.ml.adwin import Adwin
from engines.ml.hoeffding import LEAF_PREDICTIONS, TreeParams, TreeSpec
from engines.shell import Engine, EngineConfig, StreamInfo
from engines.shell.lifecycle import Input, on
from protocol.channels import DeliveryClass
from protocol.records import BadInput, Bar, Record
from realtime.bus import Bus, Envelope
from realtime.clock import Clock
from realtime.config import described
from realtime.storage import RecordStore, Storage

#: A published prediction, as stored and served.
Prediction = dict[str, Any]

DEFAULT_FEATURES = ("rsi", "rocp", "willr", "bop", "natr", "cci", "adx", "stoch.slowk",
                    "aroonosc", "realized_vol")  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class MlConfig(EngineConfig):
    """Which inputs, which models and labels, the SGD and drift settings, the batch limits."""

    name: str = field(default="ml", metadata={"help": "engine name", "env": False})
    bar_spec: str = field(default="1m", metadata=described("bar spec of bars.<spec>.* labels"))
    features: tuple[str, ...] = field(
        default=DEFAULT_FEATURES, metadata=described("feature keys the models read, in order")
    )
    models: tuple[str, ...] = field(
        default=core.ONLINE_MODELS,
        metadata=described("online models run: logistic, linear, hoeffding_tree, bagging"),
    )
    label: str = field(
        default="forward",
        metadata=described("forward: sign/return at horizon; triple_barrier: AFML ch. 3"),
    )
    horizon: int = field(default=5, metadata=described("label horizon (vertical barrier), bars"))
    barrier_pt: float = field(default=1.0, metadata=described("upper barrier, × volatility"))
    barrier_sl: float = field(default=1.0, metadata=described("lower barrier, × volatility"))
    vol_span: int = field(default=100, metadata=described("EWMA span of the barrier volatility"))
    lr: float = field(default=0.01, metadata=described("SGD learning rate of the weights"))
    l2: float = field(default=1e-4, metadata=described("L2 penalty on the weights"))
    intercept_lr: float = field(default=0.01, metadata=described("SGD rate of the intercept"))
    auc_window: int = field(default=5_000, metadata=described("predictions the AUC covers"))
    tree_grace_period: int = field(
        default=200, metadata=described("Hoeffding tree: weight between split attempts")
    )
    tree_delta: float = field(
        default=1e-7, metadata=described("Hoeffding tree: split confidence δ")
    )
    tree_tau: float = field(default=0.05, metadata=described("Hoeffding tree: tie threshold τ"))
    tree_leaf_prediction: str = field(
        default="nba", metadata=described("Hoeffding tree leaves: mc, nb or nba (adaptive)")
    )
    tree_max_depth: int = field(
        default=0, metadata=described("Hoeffding tree: deepest leaf (0: unbounded)")
    )
    bagging_models: int = field(default=10, metadata=described("trees in the bagging model"))
    seed: int = field(default=0, metadata=described("seed of the bagging draws (per symbol)"))
    drift_detector: str = field(
        default="page_hinkley", metadata=described("drift test on the loss: page_hinkley, adwin")
    )
    adwin_delta: float = field(default=0.002, metadata=described("ADWIN confidence δ"))
    drift_threshold: float = field(default=50.0, metadata=described("Page–Hinkley λ"))
    drift_delta: float = field(default=0.005, metadata=described("Page–Hinkley δ"))
    drift_min_instances: int = field(
        default=30, metadata=described("labels before drift is tested")
    )
    reset_on_drift: bool = field(
        default=True, metadata=described("reset a model (new version) when drift is detected")
    )
    features_wait_bars: int = field(
        default=10_000,
        metadata=described("later bars a bar waits for its features message (bounds memory)"),
    )
    max_pending: int = field(
        default=10_000, metadata=described("unresolved samples kept per symbol")
    )
    max_walkforward_rows: int = field(
        default=500_000, metadata=described("most rows one POST /ml/walkforward may use")
    )
    max_jobs: int = field(default=32, metadata=described("walk-forward jobs remembered"))
    max_model_versions: int = field(
        default=256,
        metadata=described("walk-forward model versions GET /ml/models lists (newest kept)"),
    )
    walkforward_jobs: int = field(
        default=0,
        metadata=described("folds a walk-forward job fits at once, on threads (0 = the CPUs)"),
    )

    def __post_init__(self) -> None:
        EngineConfig.__post_init__(self)
        if not self.features or len(set(self.features)) != len(self.features):
            raise ValueError("features must be a non-empty list of distinct keys")
        unknown = set(self.models) - set(core.ONLINE_MODELS)
        if not self.models or unknown or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be among {core.ONLINE_MODELS}, got {self.models}")
        if self.drift_detector not in ("page_hinkley", "adwin"):
            raise ValueError(
                f"drift_detector must be page_hinkley or adwin, got {self.drift_detector!r}"
            )
        if self.tree_leaf_prediction not in LEAF_PREDICTIONS:
            raise ValueError(f"tree_leaf_prediction must be one of {LEAF_PREDICTIONS}")
        if not 0.0 < self.adwin_delta < 1.0:
            raise ValueError("adwin_delta must be in (0, 1)")
        if self.tree_max_depth < 0:
            raise ValueError("tree_max_depth must be >= 0")
        if self.label not in ("forward", "triple_barrier"):
            raise ValueError(f"label must be forward or triple_barrier, got {self.label!r}")
        for name in ("horizon", "vol_span", "auc_window", "drift_min_instances", "max_pending",
                     "max_walkforward_rows", "max_jobs", "bagging_models",
                     "max_model_versions"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.walkforward_jobs < 0:
            raise ValueError("walkforward_jobs must be >= 0 (0: one per CPU)")
        if self.features_wait_bars < 0:
            raise ValueError("features_wait_bars must be >= 0")
        for name in ("barrier_pt", "barrier_sl", "drift_threshold", "drift_delta"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be finite and >= 0")
        for kind in self.models:
            self.model_spec(kind, "")  # validates the rates and the tree settings

    def model_spec(self, kind: str, symbol: str) -> core.ModelSpec:
        """The SGD parameters or tree spec of model ``kind`` for ``symbol`` (the bagging seed
        mixes ``seed`` with the symbol, so symbols draw apart and a replay draws the same)."""
        if kind in core.MODEL_KINDS:
            return self.sgd(kind)
        tree = TreeParams(
            grace_period=self.tree_grace_period,
            delta=self.tree_delta,
            tau=self.tree_tau,
            leaf_prediction=self.tree_leaf_prediction,  # type: ignore[arg-type]
            max_depth=self.tree_max_depth or None,
        )
        seed = zlib.crc32(f"{self.seed}:{symbol}".encode())
        return TreeSpec(kind, tree, self.bagging_models, seed)  # type: ignore[arg-type]

    def fold_jobs(self) -> int:
        """``walkforward_jobs``, 0 resolved to the CPUs this process may use."""
        return self.walkforward_jobs or core.default_jobs()

    def sgd(self, kind: str) -> core.SgdParams:
        return core.SgdParams(
            kind=kind,  # type: ignore[arg-type]
            lr=self.lr,
            l2=self.l2,
            intercept_lr=self.intercept_lr,
        )


class FeaturesInput(Record, frozen=True, kw_only=True):
    """The part of a ``features.SYM`` message (engines/features) the models read."""

    KIND = "features"
    symbol: str
    spec: str
    end_ns: int
    event_ns: int
    values: dict[str, float | None]


@dataclass(slots=True)
class ModelState:
    """One model of one symbol: learner, prequential metrics, drift detector, version."""

    learner: core.Learner
    metrics: core.Prequential
    drift: core.PageHinkley | Adwin
    version: int = 1
    drifts: int = 0
    drift_now: bool = False

    def to_payload(self) -> dict[str, Any]:
        return {"version": self.version, "learned": self.learner.learned,
                "drifts": self.drifts, "metrics": self.metrics.to_payload()}  # fmt: skip


@dataclass(slots=True)
class Sample:
    """A predicted sample waiting for its label."""

    end_ns: int
    x: np.ndarray
    labeler: core.ForwardReturnLabel | core.TripleBarrierLabel
    predictions: dict[str, float]


@dataclass(slots=True)
class SymbolState:
    models: dict[str, ModelState]
    vol: core.EwmaVolatility
    bars: deque[tuple[int, float]] = field(default_factory=deque)  # waiting for features
    features: dict[int, FeaturesInput] = field(default_factory=dict)  # by bar end
    pending: deque[Sample] = field(default_factory=deque)
    last_bar_ns: int | None = None
    newest_features_ns: int | None = None
    done_ns: int | None = None  # newest bar whose step ran
    width: float | None = None  # barrier volatility at the newest bar


class MlEngine(Engine[MlConfig]):
    """Online models per symbol on ``ml.<model>.SYM``; predictions stored per model."""

    config_type = MlConfig

    def __init__(
        self, config: MlConfig, *, bus: Bus, clock: Clock, storage: Storage | None = None
    ) -> None:
        super().__init__(config, bus=bus, clock=clock, storage=storage)
        self.symbols: dict[str, SymbolState] = {}
        self.dim = len(config.features)
        self.params = {kind: config.model_spec(kind, "") for kind in config.models}
        self.predictions: dict[str, RecordStore[Prediction]] = {
            model: self.storage.records(self.name, f"ml.{model}", dict, key=_symbol, time=_event_ns)
            for model in config.models
        }
        #: walk-forward jobs by id (``api``), oldest first
        self.jobs: dict[str, dict[str, Any]] = {}
        #: walk-forward model versions (module docstring, "Model registry"), oldest first
        self.model_versions: deque[dict[str, Any]] = deque(maxlen=config.max_model_versions)
        self._last_version: dict[str, int] = {}  # newest version number per name, ever
        self.version_records: RecordStore[dict[str, Any]] = self.records(
            "ml.registry", dict, key=_walkforward_key, time=_created_ns
        )
        self._job_seq = 0
        self.counts = {"warming": 0, "late": 0, "features_missing": 0, "pending_dropped": 0,
                       "untrained": 0}  # fmt: skip
        registry = self.metrics.registry
        self.predictions_total = Counter(
            "nautilus_ml_predictions", "predictions published", ["model"], registry=registry
        )
        self.labels_total = Counter(
            "nautilus_ml_labels", "labels resolved and learned", registry=registry
        )
        self.drift_total = Counter(
            "nautilus_ml_drifts", "drifts detected", ["model"], registry=registry
        )

    # ── hooks ──────────────────────────────────────────────────────────────────────────────

    def inputs(self) -> Mapping[str, Input[Any]]:
        return {
            "features.*": on(FeaturesInput, self.on_features),
            f"bars.{self.config.bar_spec}.*": on(Bar, self.on_bar),
        }

    def streams(self) -> Sequence[StreamInfo]:
        return tuple(
            StreamInfo(
                f"ml.{model}.*",
                DeliveryClass.LATEST_VALUE,
                f"{model} prediction, probability, bet size, version per features message",
            )
            for model in self.config.models
        )

    def health_extra(self) -> Mapping[str, object]:
        return {
            "symbols": len(self.symbols),
            "samples": dict(self.counts),
            "drift": {
                model: {s: st.models[model].drifts for s, st in self.symbols.items()}
                for model in self.config.models
            },
        }

    async def on_start(self) -> None:
        """Read the stored walk-forward model versions back (module docstring, "Model
        registry"): the newest ``max_model_versions`` listed, every name's count kept. The
        online models need no store: with PostgreSQL still unreachable the engine starts at
        once and reads the registry back when the store comes up (a job finishing before that
        may reuse a stored version number)."""
        if self.storage.ready.is_set():
            await self._read_registry()
        else:
            self.spawn(self._read_registry_when_ready, name="registry")

    async def _read_registry_when_ready(self) -> None:
        await self.storage.ready.wait()
        await self._read_registry()

    async def _read_registry(self) -> None:
        async for version in self.version_records.scan(WALKFORWARD):
            self._remember_version(version)

    def _remember_version(self, version: dict[str, Any]) -> None:
        self.model_versions.append(version)
        name = str(version["model"])
        self._last_version[name] = max(self._last_version.get(name, 0), int(version["version"]))

    def register_walkforward(self, job: dict[str, Any]) -> dict[str, Any]:
        """A completed job as the next version of its model name: listed, stored."""
        name = model_name(job["estimator"], job.get("params", {}))
        result = job["result"]
        version: dict[str, Any] = {
            "model": name,
            "source": WALKFORWARD,
            "version": self._last_version.get(name, 0) + 1,
            "created_ns": self.clock.now_ns(),
            "job": job["job"],
            "estimator": job["estimator"],
            "params": job.get("params", {}),
            "scheme": job["scheme"],
            "purge": job["purge"],
            "embargo": job["embargo"],
            "window": job.get("window", {"rows": job["rows"]}),
            "folds": result["folds"],
            "mean": result["mean"],
        }
        self._remember_version(version)
        self.version_records.append([version])
        return version

    def registry(self) -> dict[str, Any]:
        """``GET /ml/models``: every online model (``source: online``) with its settings and
        per-symbol versions, then the walk-forward model versions (``source: walkforward``),
        oldest first; ``walkforward``: the walk-forward jobs remembered."""
        label: dict[str, Any] = {"kind": self.config.label, "horizon": self.config.horizon}
        if self.config.label == "triple_barrier":
            label |= {"pt": self.config.barrier_pt, "sl": self.config.barrier_sl,
                      "vol_span": self.config.vol_span}  # fmt: skip
        return {
            "models": [
                {
                    "model": model,
                    "source": "online",
                    "kind": model,
                    "params": _spec_payload(p),
                    "drift_detector": self.config.drift_detector,
                    "features": list(self.config.features),
                    "label": label,
                    "symbols": {s: st.models[model].to_payload() for s, st in self.symbols.items()},
                }
                for model, p in self.params.items()
            ]
            + list(self.model_versions),
            "walkforward": [
                {k: job[k] for k in ("job", "status", "estimator", "scheme")}
                for job in self.jobs.values()
            ],
        }

    # ── per message ────────────────────────────────────────────────────────────────────────

    async def on_bar(self, bar: Bar, envelope: Envelope) -> None:
        if bar.spec != self.config.bar_spec:
            raise BadInput("wrong_spec", f"bar spec {bar.spec!r} is not {self.config.bar_spec!r}")
        if not (math.isfinite(bar.close) and bar.close > 0):
            raise BadInput("invalid_value", f"close must be finite and > 0: {bar.close}", "$.c")
        state = self._state(bar.symbol)
        if state.last_bar_ns is not None and bar.end_ns <= state.last_bar_ns:
            reason = "duplicate_bar" if bar.end_ns == state.last_bar_ns else "out_of_order"
            raise BadInput(reason, f"{bar.symbol} bar ending {bar.end_ns}", "$.te")
        state.last_bar_ns = bar.end_ns
        state.bars.append((bar.end_ns, bar.close))
        await self._advance(bar.symbol, state)

    async def on_features(self, message: FeaturesInput, envelope: Envelope) -> None:
        if message.spec != self.config.bar_spec:
            raise BadInput(
                "wrong_spec", f"features of {message.spec!r} bars, not {self.config.bar_spec!r}"
            )
        missing = [k for k in self.config.features if k not in message.values]
        if missing:
            raise BadInput("missing_feature", f"no {missing[0]!r} in values", "$.values")
        state = self._state(message.symbol)
        if state.done_ns is not None and message.end_ns <= state.done_ns:
            self.counts["late"] += 1
            return
        if message.end_ns in state.features:
            raise BadInput("duplicate_features", f"{message.symbol} features of {message.end_ns}")
        state.features[message.end_ns] = message
        state.newest_features_ns = max(message.end_ns, state.newest_features_ns or 0)
        if len(state.features) > self.config.max_pending:
            del state.features[min(state.features)]
            self.counts["features_missing"] += 1
        await self._advance(message.symbol, state)

    def _state(self, symbol: str) -> SymbolState:
        state = self.symbols.get(symbol)
        if state is None:
            c = self.config
            models: dict[str, ModelState] = {}
            for kind in self.params:
                spec = c.model_spec(kind, symbol)
                models[kind] = ModelState(
                    core.make_learner(self.dim, spec),
                    core.Prequential(core.metrics_kind(spec), c.auc_window),
                    Adwin(c.adwin_delta)
                    if c.drift_detector == "adwin"
                    else core.PageHinkley(
                        c.drift_min_instances, c.drift_delta, c.drift_threshold, mode="up"
                    ),
                )
            state = self.symbols[symbol] = SymbolState(
                models=models,
                vol=core.EwmaVolatility(c.vol_span),
            )
        return state

    async def _advance(self, symbol: str, state: SymbolState) -> None:
        """Run every bar whose features message is here, or that waited long enough."""
        while state.bars:
            end_ns, close = state.bars[0]
            message = state.features.pop(end_ns, None)
            if (
                message is None
                and (state.newest_features_ns is None or state.newest_features_ns <= end_ns)
                and len(state.bars) <= self.config.features_wait_bars
            ):
                return  # its features may still come: they arrive in bar order
            state.bars.popleft()
            if message is None:
                self.counts["features_missing"] += 1
            for stale in [t for t in state.features if t < end_ns]:
                del state.features[stale]
                self.counts["late"] += 1
            state.done_ns = end_ns
            self._resolve(state, close)
            if message is not None:
                await self._predict(symbol, state, message, close)

    def _resolve(self, state: SymbolState, close: float) -> None:
        """Advance every pending label by this close; learn the resolved ones, oldest first."""
        state.width = state.vol.update(close)
        resolved: list[tuple[Sample, core.Label]] = []
        still: deque[Sample] = deque()
        for sample in state.pending:
            label = sample.labeler.update(close)
            if label is None:
                still.append(sample)
            else:
                resolved.append((sample, label))
        state.pending = still
        for sample, label in resolved:
            self.labels_total.inc()
            for model, ms in state.models.items():
                target = float(label.cls) if model in core.CLASSIFIERS else label.ret
                loss = ms.metrics.update(target, sample.predictions[model])
                ms.learner.learn(sample.x, target)
                if not math.isnan(loss) and _drift_rose(ms.drift, loss):
                    ms.drifts += 1
                    ms.drift_now = True
                    self.drift_total.labels(model).inc()
                    if self.config.reset_on_drift:
                        ms.learner.reset()
                        ms.version += 1

    async def _predict(
        self, symbol: str, state: SymbolState, message: FeaturesInput, close: float
    ) -> None:
        values = [message.values[k] for k in self.config.features]
        if any(v is None or not math.isfinite(v) for v in values):
            self.counts["warming"] += 1
            return
        x = np.array(values, dtype=np.float64)
        event_ns = max(message.event_ns, message.end_ns)
        predictions: dict[str, float] = {}
        for model, ms in state.models.items():
            value = ms.learner.predict(x)
            predictions[model] = value
            if math.isnan(value):  # a tree that has learned nothing yet: no answer to publish
                self.counts["untrained"] += 1
                continue
            classifier = model in core.CLASSIFIERS
            payload: Prediction = {
                "model": model,
                "symbol": symbol,
                "version": ms.version,
                "prediction": int(value > 0.5) if classifier else value,
                "probability": value if classifier else None,
                "bet_size": core.bet_size(value) if classifier else None,
                "event_ns": event_ns,
                "bar_end_ns": message.end_ns,
                "learned": ms.learner.learned,
                "drifts": ms.drifts,
                "drift": ms.drift_now,
                "metrics": ms.metrics.to_payload(),
            }
            ms.drift_now = False
            published = await self.publish(f"ml.{model}.{symbol}", payload, event_ns=event_ns)
            self.predictions[model].append([payload], seqs=[published.seq])
            self.predictions_total.labels(model).inc()
        if self.config.label == "triple_barrier":
            if state.width is None or state.width <= 0:
                self.counts["warming"] += 1
                return
            labeler: core.ForwardReturnLabel | core.TripleBarrierLabel = core.TripleBarrierLabel(
                close, self.config.horizon, state.width,
                self.config.barrier_pt, self.config.barrier_sl,
            )  # fmt: skip
        else:
            labeler = core.ForwardReturnLabel(close, self.config.horizon)
        state.pending.append(Sample(message.end_ns, x, labeler, predictions))
        if len(state.pending) > self.config.max_pending:
            state.pending.popleft()
            self.counts["pending_dropped"] += 1

    # ── walk-forward jobs (REST) ───────────────────────────────────────────────────────────

    def submit_job(
        self, description: dict[str, Any], work: Callable[[Callable[[int], None]], Any], total: int
    ) -> dict[str, Any]:
        """Start ``work(progress)`` on the compute threads as a job; returns its record, which
        ``GET /ml/jobs/{id}`` reads (status, folds done, result or error)."""
        self._job_seq += 1
        job_id = f"wf-{self._job_seq}"
        job: dict[str, Any] = {"job": job_id, "status": "running", **description,
                               "progress": {"done": 0, "total": total}}  # fmt: skip
        self.jobs[job_id] = job
        while len(self.jobs) > self.config.max_jobs:
            oldest = next((k for k, j in self.jobs.items() if j["status"] != "running"), None)
            if oldest is None:
                break
            del self.jobs[oldest]

        def progress(done: int) -> None:
            job["progress"] = {"done": done, "total": total}

        async def run() -> None:
            try:
                job["result"] = await self.run_in_executor(work, progress)
                registered = self.register_walkforward(job)
                job["registered"] = {k: registered[k] for k in ("model", "version")}
                job["status"] = "done"
            except ValueError as exc:
                job["status"], job["error"] = "failed", str(exc)
            except Exception as exc:
                job["status"], job["error"] = "failed", repr(exc)
                self.record_error(f"walk-forward {job_id} failed")

        self.spawn(run, name=f"walkforward {job_id}")
        return job


def _drift_rose(detector: core.PageHinkley | Adwin, loss: float) -> bool:
    """Feed the detector one loss; ``True`` on a drift toward a higher loss (Page–Hinkley runs in
    ``up`` mode; ADWIN reports changes both ways, so its window mean must have risen)."""
    if isinstance(detector, Adwin):
        before = detector.estimation
        return detector.update(loss) and detector.estimation > before
    return detector.update(loss)


def _spec_payload(spec: core.ModelSpec) -> dict[str, Any]:
    if isinstance(spec, core.SgdParams):
        return {"lr": spec.lr, "l2": spec.l2, "intercept_lr": spec.intercept_lr}
    t = spec.tree
    out: dict[str, Any] = {
        "grace_period": t.grace_period,
        "delta": t.delta,
        "tau": t.tau,
        "leaf_prediction": t.leaf_prediction,
        "max_depth": t.max_depth,
    }
    if spec.kind == "bagging":
        out["n_models"] = spec.n_models
    return out


#: ``source`` of the walk-forward model versions, and their stored channel's key
WALKFORWARD = "walkforward"


def model_name(estimator: str, params: Mapping[str, Any]) -> str:
    """A walk-forward model's name: the estimator, its parameters sorted (values as JSON),
    ``logistic(C=0.3)``, ``random_forest(criterion="gini",n_estimators=50)``; ``logistic``
    with none."""
    if not params:
        return estimator
    args = ",".join(f"{k}={_json(v)}" for k, v in sorted(params.items()))
    return f"{estimator}({args})"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _walkforward_key(version: dict[str, Any]) -> str:
    return WALKFORWARD


def _created_ns(version: dict[str, Any]) -> int:
    return int(version["created_ns"])


def _symbol(p: Prediction) -> str:
    return str(p["symbol"])


def _event_ns(p: Prediction) -> int:
    return int(p["event_ns"])
