"""Online learning on a bar stream, pure: scaling, SGD linear models, delayed labels, prequential
metrics, drift detection, bet sizing, purged cross-validation splits, a vmapped many-symbol step.

What is here and where each piece comes from:

* ``StandardScaler`` — running mean and population variance per feature (Welford), transform
  ``(x − mean)/sqrt(var)`` (0 where the variance is 0): river's ``preprocessing.StandardScaler``.
* ``SgdLinearModel`` — logistic (log loss) or linear (squared loss) regression by plain SGD with
  an L2 penalty on the weights, the intercept on its own learning rate, the loss gradient clipped:
  river's ``linear_model.LogisticRegression`` / ``LinearRegression`` with ``optim.SGD(lr)``
  (same update order: gradient at the current weights, intercept step, then weight step).
* ``OnlineLearner`` — scaler + model as river's ``StandardScaler() | model`` pipeline: the scaler
  learns a sample's features when its *label* arrives (then the model learns the scaled sample);
  a prediction transforms with the statistics as they stand.
* Labels with an explicit delay: ``ForwardReturnLabel`` (sign and simple return ``h`` bars ahead)
  and ``TripleBarrierLabel`` (López de Prado, *Advances in Financial Machine Learning* (AFML),
  ch. 3, snippets 3.2 ``applyPtSlOnT1`` and 3.5 ``getBins``: first touch of
  ``ret > pt·width``, ``ret < −sl·width`` or the vertical barrier ``h`` bars ahead, on closes;
  label 1 when the return at the touch is > 0).
* ``Prequential`` — test-then-train metrics: accuracy, log loss (probabilities clamped to
  [1e-15, 1 − 1e-15] as river's ``metrics.LogLoss``), exact ROC AUC (Mann–Whitney, ties
  averaged) over the last ``auc_window`` predictions, MAE.
* ``PageHinkley`` — Page (1954) / Hinkley (1971) change test as river's ``drift.PageHinkley``.
* ``bet_size`` — AFML ch. 10, eq. 10.1 (snippet 10.1): ``2Φ(z) − 1`` with
  ``z = (p − 0.5)/sqrt(p(1 − p))``, signed by the side (p < 0.5 bets short).
* Splits — ``walk_forward_splits`` (expanding or rolling, refit every ``test_size`` bars, a gap;
  unpurged it equals scikit-learn's ``TimeSeriesSplit``), ``purged_kfold_splits`` (AFML ch. 7,
  snippets 7.1–7.3: purge training labels overlapping the test span, embargo after it).
* ``make_batch_step`` — one JAX ``vmap`` step of many symbols' scaler + linear model (x64), equal
  to ``OnlineLearner`` per symbol.

The online models the engine runs (``ONLINE_MODELS``): ``logistic`` and ``linear`` (above), and
``hoeffding_tree`` and ``bagging`` (Oza bagging of Hoeffding trees) from ``engines.ml.hoeffding``,
both equal to river's; ``make_learner`` builds any of them behind the ``Learner`` interface. ADWIN
drift detection is ``engines.ml.adwin``.

Limits: features are a fixed ordered vector (the service drops samples with a missing value); AUC
is over a bounded window of the newest predictions, not the whole history.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from engines.ml.hoeffding import TREE_KINDS, TreeLearner, TreeSpec

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ModelKind = Literal["logistic", "linear"]
MODEL_KINDS: tuple[ModelKind, ...] = ("logistic", "linear")
#: Every online model the engine can run; all but ``linear`` classify the 0/1 label.
ONLINE_MODELS: tuple[str, ...] = (*MODEL_KINDS, *TREE_KINDS)
CLASSIFIERS: tuple[str, ...] = ("logistic", *TREE_KINDS)

#: river's ``utils.math.sigmoid`` saturates beyond |x| > 30; ours does the same so both agree.
SIGMOID_LIMIT = 30.0
#: river's ``metrics.LogLoss`` clamps probabilities to [EPS, 1 − EPS].
LOG_LOSS_EPS = 1e-15


def sigmoid(x: float) -> float:
    if x < -SIGMOID_LIMIT:
        return 0.0
    if x > SIGMOID_LIMIT:
        return 1.0
    return 1.0 / (1.0 + math.exp(-x))


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def bet_size(p: float) -> float:
    """AFML eq. 10.1: ``2Φ(z) − 1``, ``z = (p − 0.5)/sqrt(p(1 − p))`` for ``p`` = P(up); the sign
    is the side (p < 0.5 is a short bet of the same size as 1 − p long). ``p`` of 0 or 1 gives
    ∓1/±1, 0.5 gives 0."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"probability must be in [0, 1], got {p!r}")
    if p in (0.0, 1.0):
        return 2.0 * p - 1.0
    z = (p - 0.5) / math.sqrt(p * (1.0 - p))
    return 2.0 * normal_cdf(z) - 1.0


# ── scaling and models ──────────────────────────────────────────────────────────────────────


class StandardScaler:
    """Running mean and population variance per feature (Welford's update as river writes it)."""

    __slots__ = ("mean", "n", "var")

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.mean = np.zeros(dim)
        self.var = np.zeros(dim)

    def learn(self, x: Array) -> None:
        self.n += 1
        old = self.mean.copy()
        self.mean += (x - old) / self.n
        self.var += ((x - old) * (x - self.mean) - self.var) / self.n

    def transform(self, x: Array) -> Array:
        std = np.sqrt(self.var)
        out = np.zeros_like(x)
        np.divide(x - self.mean, std, out=out, where=self.var != 0.0)
        return out


@dataclass(frozen=True, slots=True)
class SgdParams:
    """river's names: ``lr`` (``optim.SGD(lr)``), ``l2``, ``intercept_lr``, ``clip_gradient``."""

    kind: ModelKind = "logistic"
    lr: float = 0.01
    l2: float = 0.0
    intercept_lr: float = 0.01
    clip_gradient: float = 1e12

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        for name in ("lr", "l2", "intercept_lr", "clip_gradient"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


class SgdLinearModel:
    """Logistic or linear regression, one SGD step per sample (river's GLM ``learn_one``)."""

    __slots__ = ("intercept", "params", "weights")

    def __init__(self, dim: int, params: SgdParams) -> None:
        self.params = params
        self.weights = np.zeros(dim)
        self.intercept = 0.0

    def raw(self, z: Array) -> float:
        return float(self.weights @ z) + self.intercept

    def predict(self, z: Array) -> float:
        """P(y = 1) for logistic, E[y] for linear."""
        raw = self.raw(z)
        return sigmoid(raw) if self.params.kind == "logistic" else raw

    def loss_gradient(self, z: Array, y: float) -> float:
        raw = self.raw(z)
        if self.params.kind == "logistic":  # river optim.losses.Log, y in {0, 1} → {−1, 1}
            sign = 1.0 if y else -1.0
            m = raw * sign
            if m > 18.0:
                g = math.exp(-m) * -sign
            elif m < -18.0:
                g = -sign
            else:
                g = -sign / (math.exp(m) + 1.0)
        else:  # optim.losses.Squared
            g = 2.0 * (raw - y)
        clip = self.params.clip_gradient
        return min(max(g, -clip), clip)

    def learn(self, z: Array, y: float) -> None:
        p = self.params
        g = self.loss_gradient(z, y)
        gradient = g * z
        if p.l2:
            gradient += p.l2 * self.weights
        self.intercept -= p.intercept_lr * g
        self.weights -= p.lr * gradient


class OnlineLearner:
    """``StandardScaler() | model``: predict on the scaled features; ``learn`` updates the
    scaler with the sample's features first, then the model with the rescaled sample."""

    __slots__ = ("dim", "learned", "model", "params", "scaler")

    def __init__(self, dim: int, params: SgdParams) -> None:
        self.dim = dim
        self.params = params
        self.scaler = StandardScaler(dim)
        self.model = SgdLinearModel(dim, params)
        self.learned = 0

    def predict(self, x: Array) -> float:
        return self.model.predict(self.scaler.transform(x))

    def learn(self, x: Array, y: float) -> None:
        self.scaler.learn(x)
        self.model.learn(self.scaler.transform(x), y)
        self.learned += 1

    def reset(self) -> None:
        self.scaler = StandardScaler(self.dim)
        self.model = SgdLinearModel(self.dim, self.params)
        self.learned = 0


class Learner(Protocol):
    """What the engine asks of an online model: P(y = 1) (classifiers) or E[y] (``linear``)."""

    @property
    def learned(self) -> int: ...

    def predict(self, x: Array) -> float: ...

    def learn(self, x: Array, y: float) -> None: ...

    def reset(self) -> None: ...


ModelSpec = SgdParams | TreeSpec


def make_learner(dim: int, spec: ModelSpec) -> Learner:
    """``OnlineLearner`` for SGD parameters, ``TreeLearner`` for a tree spec."""
    if isinstance(spec, TreeSpec):
        return TreeLearner(spec)
    return OnlineLearner(dim, spec)


def metrics_kind(spec: ModelSpec) -> ModelKind:
    """``Prequential``'s kind for a model: ``linear`` (MAE) or ``logistic`` (classification)."""
    return "linear" if isinstance(spec, SgdParams) and spec.kind == "linear" else "logistic"


# ── labels that resolve later ───────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Label:
    """A resolved label: ``cls`` 1 if the return at resolution is > 0 else 0, ``ret`` the simple
    return from the entry close, ``bars`` how many bars after the entry it resolved, ``barrier``
    which one was touched (``upper``, ``lower``, ``vertical``)."""

    cls: int
    ret: float
    bars: int
    barrier: str


class ForwardReturnLabel:
    """Sign and simple return ``horizon`` closes after the entry close: a delay of exactly
    ``horizon`` bars."""

    __slots__ = ("bars", "entry", "horizon")

    def __init__(self, entry_close: float, horizon: int) -> None:
        self.entry = entry_close
        self.horizon = horizon
        self.bars = 0

    def update(self, close: float) -> Label | None:
        self.bars += 1
        if self.bars < self.horizon:
            return None
        ret = close / self.entry - 1.0
        return Label(int(ret > 0.0), ret, self.bars, "vertical")


class TripleBarrierLabel:
    """AFML snippet 3.2 on closes: after the entry, the first close with ``ret > pt·width``
    (upper), ``ret < −sl·width`` (lower), or the ``horizon``-th close (vertical). ``pt`` or
    ``sl`` of 0 disables that barrier (as in the book). The delay is at most ``horizon`` bars."""

    __slots__ = ("bars", "entry", "horizon", "lower", "upper")

    def __init__(
        self, entry_close: float, horizon: int, width: float, pt: float, sl: float
    ) -> None:
        self.entry = entry_close
        self.horizon = horizon
        self.upper = pt * width if pt > 0 else math.inf
        self.lower = -sl * width if sl > 0 else -math.inf
        self.bars = 0

    def update(self, close: float) -> Label | None:
        self.bars += 1
        ret = close / self.entry - 1.0
        if ret > self.upper:
            return Label(int(ret > 0.0), ret, self.bars, "upper")
        if ret < self.lower:
            return Label(int(ret > 0.0), ret, self.bars, "lower")
        if self.bars >= self.horizon:
            return Label(int(ret > 0.0), ret, self.bars, "vertical")
        return None


class EwmaVolatility:
    """EWMA standard deviation of simple close-to-close returns (pandas ``ewm(span).std()``,
    bias-corrected, as AFML snippet 3.1 ``getDailyVol`` uses for the barrier width)."""

    __slots__ = ("alpha", "last", "sw", "sw2", "swx", "swx2")

    def __init__(self, span: int) -> None:
        if span < 1:
            raise ValueError("span must be >= 1")
        self.alpha = 2.0 / (span + 1.0)
        self.last: float | None = None
        self.sw = self.sw2 = self.swx = self.swx2 = 0.0

    def update(self, close: float) -> float | None:
        """Feed a close; the volatility after it (``None`` until two returns are seen)."""
        last, self.last = self.last, close
        if last is None:
            return None
        r = close / last - 1.0
        decay = 1.0 - self.alpha
        self.sw = decay * self.sw + 1.0
        self.sw2 = decay * decay * self.sw2 + 1.0
        self.swx = decay * self.swx + r
        self.swx2 = decay * self.swx2 + r * r
        denom = self.sw * self.sw - self.sw2
        if denom <= 0.0:
            return None
        mean = self.swx / self.sw
        var = (self.swx2 / self.sw - mean * mean) * self.sw * self.sw / denom
        return math.sqrt(max(var, 0.0))


def triple_barrier_labels(
    close: Array, width: Array, horizon: int, pt: float, sl: float
) -> tuple[IntArray, Array, IntArray]:
    """Batch triple-barrier labels for every bar that has ``horizon`` bars after it, by the same
    streaming labeler: ``(touch index, return at touch, class)``; -1 / NaN where unresolved."""
    n = len(close)
    touch = np.full(n, -1, dtype=np.int64)
    ret = np.full(n, np.nan)
    cls = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        labeler = TripleBarrierLabel(float(close[i]), horizon, float(width[i]), pt, sl)
        for j in range(i + 1, n):
            label = labeler.update(float(close[j]))
            if label is not None:
                touch[i], ret[i], cls[i] = j, label.ret, label.cls
                break
    return touch, ret, cls


# ── prequential evaluation, drift ───────────────────────────────────────────────────────────


def roc_auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float | None:
    """Exact ROC AUC = Mann–Whitney U / (n₁n₀), ties counted ½ (average ranks); ``None`` while
    one class is absent."""
    from scipy.stats import rankdata

    labels = np.asarray(y, dtype=bool)
    scores = np.asarray(score, dtype=np.float64)
    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


class Prequential:
    """Test-then-train metrics, updated once per resolved label with the prediction made before
    the model saw it: accuracy / log loss / AUC (classification) or MAE (regression)."""

    __slots__ = ("_labels", "_scores", "abs_error_sum", "correct", "kind", "log_loss_sum", "n")

    def __init__(self, kind: ModelKind, auc_window: int = 5_000) -> None:
        self.kind = kind
        self.n = 0
        self.correct = 0
        self.log_loss_sum = 0.0
        self.abs_error_sum = 0.0
        self._labels: deque[int] = deque(maxlen=auc_window)
        self._scores: deque[float] = deque(maxlen=auc_window)

    def update(self, y: float, prediction: float) -> float:
        """Record one (label, prediction before learning it); returns the sample's loss (log
        loss or absolute error), the series the drift detector watches. A NaN prediction (a
        model that had no answer yet) is not scored and gives a NaN loss."""
        if math.isnan(prediction):
            return math.nan
        self.n += 1
        if self.kind == "logistic":
            cls = int(y)
            self.correct += int((prediction > 0.5) == bool(cls))
            p = min(max(prediction, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
            loss = -math.log(p) if cls else -math.log(1.0 - p)
            self.log_loss_sum += loss
            self._labels.append(cls)
            self._scores.append(prediction)
            return loss
        loss = abs(y - prediction)
        self.abs_error_sum += loss
        return loss

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n and self.kind == "logistic" else None

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.n if self.n and self.kind == "logistic" else None

    @property
    def mae(self) -> float | None:
        return self.abs_error_sum / self.n if self.n and self.kind == "linear" else None

    def auc(self) -> float | None:
        if self.kind != "logistic":
            return None
        return roc_auc(np.fromiter(self._labels, dtype=np.int64), np.fromiter(self._scores, float))

    def to_payload(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
            "auc": self.auc(),
            "mae": self.mae,
        }


@dataclass(slots=True)
class PrequentialRun:
    """``prequential_run``'s answer: the prediction made at each step, and the metrics after
    each resolved label (in resolution order)."""

    predictions: Array
    resolved: list[int]
    metrics: list[dict[str, float | int | None]]


def prequential_run(
    x: Array, y: Array, resolve_at: npt.ArrayLike, params: ModelSpec, *, auc: bool = False
) -> PrequentialRun:
    """Test-then-train over a stream with label delays, as the engine runs it: at step ``t``
    every sample whose label resolves at or before ``t`` (``resolve_at[j] > j``) is scored with
    the prediction made at its own step and learned, oldest resolution first (ties by index),
    then ``x[t]`` is predicted. Samples resolving after the last step are never learned."""
    due = np.asarray(resolve_at, dtype=np.int64)
    n, dim = x.shape
    if np.any(due <= np.arange(n)):
        raise ValueError("resolve_at[j] must be > j (a label comes from later bars)")
    learner = make_learner(dim, params)
    metrics = Prequential(metrics_kind(params))
    predictions = np.empty(n)
    order = sorted(range(n), key=lambda j: (due[j], j))
    run = PrequentialRun(predictions, [], [])
    k = 0
    for t in range(n):
        while k < n and due[order[k]] <= t:
            j = order[k]
            metrics.update(float(y[j]), float(predictions[j]))
            learner.learn(x[j], float(y[j]))
            run.resolved.append(j)
            run.metrics.append(
                metrics.to_payload()
                if auc
                else {
                    "accuracy": metrics.accuracy,
                    "log_loss": metrics.log_loss,
                    "mae": metrics.mae,
                }
            )
            k += 1
        predictions[t] = learner.predict(x[t])
    return run


class PageHinkley:
    """Page–Hinkley test as river's ``drift.PageHinkley`` (same defaults and update): cumulative
    deviations from the running mean, less ``delta``, faded by ``alpha``; drift when the
    increase (``mode`` ``up``), decrease (``down``) or either (``both``) statistic passes
    ``threshold`` after ``min_instances`` values. The next update after a drift starts afresh."""

    __slots__ = ("alpha", "delta", "detected", "max_dec", "mean", "min_inc", "min_instances",
                 "mode", "n", "sum_dec", "sum_inc", "threshold")  # fmt: skip

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Literal["up", "down", "both"] = "both",
    ) -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError(f"mode must be up, down or both, got {mode!r}")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self.detected = False
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sum_inc = 0.0
        self.sum_dec = 0.0
        self.min_inc = math.inf
        self.max_dec = -1.0
        self.detected = False

    def update(self, x: float) -> bool:
        if self.detected:
            self._reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        dev = x - self.mean
        self.sum_inc = self.alpha * self.sum_inc + dev - self.delta
        self.sum_dec = self.alpha * self.sum_dec + dev + self.delta
        self.min_inc = min(self.min_inc, self.sum_inc)
        self.max_dec = max(self.max_dec, self.sum_dec)
        if self.n >= self.min_instances:
            up = self.sum_inc - self.min_inc > self.threshold
            down = self.max_dec - self.sum_dec > self.threshold
            self.detected = {"up": up, "down": down, "both": up or down}[self.mode]
        return self.detected


# ── cross-validation splits (AFML ch. 7) ────────────────────────────────────────────────────

Split = tuple[IntArray, IntArray]


def walk_forward_splits(
    n: int,
    n_splits: int,
    *,
    gap: int = 0,
    test_size: int | None = None,
    max_train_size: int | None = None,
    t1: npt.ArrayLike | None = None,
    t0: npt.ArrayLike | None = None,
) -> list[Split]:
    """Expanding (or, with ``max_train_size``, rolling) walk-forward: ``n_splits`` consecutive
    test blocks of ``test_size`` (default ``n // (n_splits + 1)``) ending at ``n``, each trained
    on what precedes it less ``gap`` rows — scikit-learn ``TimeSeriesSplit`` exactly when ``t1``
    is ``None``. With ``t1`` (when each row's label resolves; ``t0``, when the row is observed,
    defaults to its index), training rows whose label resolves at or after the test block's
    first observation are purged too."""
    size = n // (n_splits + 1) if test_size is None else test_size
    if n_splits < 1 or size < 1 or gap < 0 or n - n_splits * size - gap <= 0:
        raise ValueError(
            f"cannot make {n_splits} walk-forward splits of {size} over {n} samples (gap {gap})"
        )
    ends = None if t1 is None else np.asarray(t1)
    starts = np.arange(n) if t0 is None else np.asarray(t0)
    out: list[Split] = []
    for start in range(n - n_splits * size, n, size):
        end = start - gap
        lo = 0 if max_train_size is None else max(0, end - max_train_size)
        train = np.arange(lo, end, dtype=np.int64)
        if ends is not None:
            train = train[ends[train] < starts[start]]
        out.append((train, np.arange(start, start + size, dtype=np.int64)))
    return out


def purged_kfold_splits(
    t1: npt.ArrayLike, n_splits: int, embargo: float = 0.0, t0: npt.ArrayLike | None = None
) -> list[Split]:
    """AFML snippet 7.3 ``PurgedKFold``: row ``i`` is observed at ``t0[i]`` (default ``i``;
    non-decreasing) and its label resolves at ``t1[i] >= t0[i]``. ``n_splits`` contiguous test
    blocks (``np.array_split``); training keeps the rows whose label resolves before the block's
    first observation, and the rows observed after the block's last label resolves, less an
    embargo of ``int(embargo · n)`` rows (snippet 7.2). With ``t1 = t0`` and no embargo it is
    scikit-learn's unshuffled ``KFold``."""
    ends = np.asarray(t1)
    n = ends.size
    starts = np.arange(n) if t0 is None else np.asarray(t0)
    if n_splits < 2 or n_splits > n:
        raise ValueError(f"n_splits must be in [2, {n}], got {n_splits}")
    if not 0.0 <= embargo < 1.0:
        raise ValueError(f"embargo must be in [0, 1), got {embargo}")
    if starts.size != n or np.any(np.diff(starts) < 0):
        raise ValueError("t0 must be non-decreasing, one per row")
    if np.any(ends < starts):
        raise ValueError("t1[i] must be >= t0[i] (a label resolves at or after its bar)")
    gap = int(embargo * n)
    index = np.arange(n, dtype=np.int64)
    out: list[Split] = []
    for block in np.array_split(index, n_splits):
        first, last = int(block[0]), int(block[-1])
        right = int(np.searchsorted(starts, ends[first : last + 1].max(), side="right")) + gap
        train = index[(ends < starts[first]) | (index >= right)]
        out.append((train, block))
    return out


# ── walk-forward with scikit-learn estimators ───────────────────────────────────────────────

ESTIMATORS = ("logistic", "random_forest", "kneighbors")


def make_estimator(name: str, params: dict[str, Any]) -> Any:
    """A scikit-learn classifier by name with ``params``; ``ValueError`` if either is bad (the
    parameters are validated by scikit-learn's own constraint tables)."""
    if name == "logistic":
        from sklearn.linear_model import LogisticRegression as Estimator
    elif name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier as Estimator
    elif name == "kneighbors":
        from sklearn.neighbors import KNeighborsClassifier as Estimator
    else:
        raise ValueError(f"unknown estimator {name!r} (known: {', '.join(ESTIMATORS)})")
    try:
        estimator = Estimator(**params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    return estimator


@dataclass(slots=True)
class FoldResult:
    fold: int
    train: int
    test: int
    accuracy: float
    log_loss: float
    auc: float | None
    #: P(y = 1) of each test row (not in the payload)
    probability: Array = field(default_factory=lambda: np.empty(0), repr=False)

    def to_payload(self) -> dict[str, Any]:
        return {"fold": self.fold, "train": self.train, "test": self.test,
                "accuracy": self.accuracy, "log_loss": self.log_loss, "auc": self.auc}  # fmt: skip


def fit_fold(
    k: int, x: Array, y: IntArray, split: Split, estimator: str, params: dict[str, Any]
) -> FoldResult:
    """One fold: a fresh estimator fitted on the training rows, scored on the test rows."""
    train, test = split
    model = make_estimator(estimator, params)
    if train.size == 0 or np.unique(y[train]).size < 2:
        raise ValueError(f"fold {k}: the training rows hold a single class")
    model.fit(x[train], y[train])
    column = list(model.classes_).index(1)
    p = np.asarray(model.predict_proba(x[test])[:, column], dtype=np.float64)
    truth = y[test]
    clamped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return FoldResult(
        fold=k,
        train=int(train.size),
        test=int(test.size),
        accuracy=float(np.mean((p > 0.5) == (truth == 1))),
        log_loss=float(-np.mean(np.where(truth == 1, np.log(clamped), np.log1p(-clamped)))),
        auc=roc_auc(truth, p),
        probability=p,
    )


def walk_forward(
    x: Array,
    y: IntArray,
    splits: Sequence[Split],
    estimator: str,
    params: dict[str, Any],
    progress: Callable[[int], None] | None = None,
    *,
    n_jobs: int = 1,
) -> list[FoldResult]:
    """Fit a fresh estimator per split on its training rows, score its test rows: accuracy, log
    loss (clamped like river's) and AUC (``None`` when the test block has one class).

    ``n_jobs`` folds are fitted at once on threads (scikit-learn's tree, forest and linear
    solvers release the GIL while they fit): the folds are independent — each its own estimator
    built from the same ``params``, on its own rows — so the results are the ones of the
    sequential run, in fold order, whatever order the folds finish in (a seeded estimator
    gives the same predictions; an unseeded one is random either way). ``progress`` is told
    the count of finished folds."""
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    if n_jobs == 1 or len(splits) < 2:
        results: list[FoldResult] = []
        for k, split in enumerate(splits):
            results.append(fit_fold(k, x, y, split, estimator, params))
            if progress is not None:
                progress(k + 1)
        return results
    done = 0
    lock = threading.Lock()

    def one(k: int) -> FoldResult:
        nonlocal done
        result = fit_fold(k, x, y, splits[k], estimator, params)
        with lock:
            done += 1
            if progress is not None:
                progress(done)
        return result

    # the largest training sets first: an expanding walk-forward's last fold is its longest
    order = sorted(range(len(splits)), key=lambda k: -splits[k][0].size)
    with ThreadPoolExecutor(max_workers=min(n_jobs, len(splits))) as pool:
        futures = {k: pool.submit(one, k) for k in order}
        try:
            return [futures[k].result() for k in range(len(splits))]
        finally:
            for future in futures.values():
                future.cancel()


def default_jobs() -> int:
    """The CPUs this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def daily_design(close: npt.ArrayLike, horizon: int) -> tuple[Array, IntArray, IntArray]:
    """Features and labels from one symbol's daily closes: at day ``i`` the 1-, 5- and 20-day
    returns and the 20-day volatility (sample std) of daily returns, all known at the close of
    ``i``; label 1 when ``close[i + horizon] > close[i]``. Rows are the days with every feature
    and a label: ``(x, y, day index of each row)``; a row's label resolves at index + horizon."""
    prices = np.asarray(close, dtype=np.float64)
    n = prices.size
    first, last = 20, n - horizon
    if horizon < 1 or last - first < 2:
        raise ValueError(f"need more than {first + horizon + 2} closes, got {n}")
    r1 = np.full(n, np.nan)
    r1[1:] = prices[1:] / prices[:-1] - 1.0
    rows = np.arange(first, last, dtype=np.int64)
    ret = {k: prices[rows] / prices[rows - k] - 1.0 for k in (1, 5, 20)}
    windows = np.lib.stride_tricks.sliding_window_view(r1[1:], 20)  # window j: r1[j+1..j+20]
    vol = windows[rows - 20].std(axis=1, ddof=1)
    x = np.column_stack([ret[1], ret[5], ret[20], vol])
    y = (prices[rows + horizon] > prices[rows]).astype(np.int64)
    return x, y, rows


class Design(NamedTuple):
    """A walk-forward's rows: features ``x``, 0/1 labels ``y``, when each row is observed
    (``t0``, non-decreasing) and when its label resolves (``t1``), and which series it came
    from (``group``: the position of its symbol in the input)."""

    x: Array
    y: IntArray
    t0: IntArray
    t1: IntArray
    group: IntArray


def pooled_daily_design(
    series: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]], horizon: int
) -> Design:
    """``daily_design`` per symbol of ``series`` (``symbol → (closes, bar times)``, times as
    integers), the rows of all symbols merged in time order (a stable sort: at one time, the
    symbols in the mapping's order) — the panel ``POST /ml/walkforward`` fits over stored bars.
    A row is observed at its bar's time and resolves at the time of the bar ``horizon`` later.
    ``ValueError`` names the symbol whose closes are too few."""
    parts: list[tuple[Array, IntArray, IntArray, IntArray]] = []
    for symbol, (close, times) in series.items():
        try:
            x, y, rows = daily_design(close, horizon)
        except ValueError as exc:
            raise ValueError(f"{symbol}: {exc}") from None
        at = np.asarray(times, dtype=np.int64)
        parts.append((x, y, at[rows], at[rows + horizon]))
    if not parts:
        raise ValueError("no series to build rows from")
    t0 = np.concatenate([p[2] for p in parts])
    order = np.argsort(t0, kind="stable")
    group = np.repeat(np.arange(len(parts), dtype=np.int64), [p[1].size for p in parts])
    return Design(
        x=np.concatenate([p[0] for p in parts])[order],
        y=np.concatenate([p[1] for p in parts])[order],
        t0=t0[order],
        t1=np.concatenate([p[3] for p in parts])[order],
        group=group[order],
    )


def average_uniqueness(t0: npt.ArrayLike, t1: npt.ArrayLike, group: npt.ArrayLike) -> Array:
    """Each label's average uniqueness, AFML ch. 4, snippets 4.1 (``mpNumCoEvents``) and 4.2
    (``mpSampleTW``): within its group (one instrument), the number of labels concurrent at each
    observed time ``c_t`` (labels with ``t0 <= t <= t1``), and per label the mean of ``1/c_t``
    over the observed times of its span ``[t0, t1]``. The observed times of a group are its rows'
    ``t0`` and ``t1``: AFML's bar index when every bar is some row's (as in ``daily_design``,
    a row at each bar). Its mean over the training rows is AFML's ``avgU``, the fraction of rows
    a bootstrap should draw when labels overlap (AFML 4.5, 6.4: ``max_samples=avgU``)."""
    starts, ends, groups = (np.asarray(a, dtype=np.int64) for a in (t0, t1, group))
    if not starts.shape == ends.shape == groups.shape or starts.ndim != 1:
        raise ValueError("t0, t1 and group must be 1-d and of one length")
    if np.any(ends < starts):
        raise ValueError("t1[i] must be >= t0[i] (a label resolves at or after its bar)")
    out = np.empty(starts.size)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        times = np.unique(np.concatenate([starts[rows], ends[rows]]))
        first = np.searchsorted(times, starts[rows])
        last = np.searchsorted(times, ends[rows])
        change = np.zeros(times.size + 1, dtype=np.int64)
        np.add.at(change, first, 1)
        np.add.at(change, last + 1, -1)
        concurrency = np.cumsum(change[:-1])
        inverse = np.concatenate([[0.0], np.cumsum(1.0 / concurrency)])
        out[rows] = (inverse[last + 1] - inverse[first]) / (last + 1 - first)
    return out


# ── many symbols in one vmapped JAX step ────────────────────────────────────────────────────


class BatchState(NamedTuple):
    """Per symbol (leading axis S): scaler count/mean/var and model weights/intercept."""

    n: Any  # (S,)
    mean: Any  # (S, d)
    var: Any  # (S, d)
    w: Any  # (S, d)
    b: Any  # (S,)


def batch_state(symbols: int, dim: int) -> BatchState:
    import jax.numpy as jnp

    zeros = jnp.zeros((symbols, dim), dtype=jnp.float64)
    return BatchState(
        jnp.zeros(symbols, dtype=jnp.float64), zeros, zeros, zeros, jnp.zeros(symbols)
    )


@dataclass(frozen=True, slots=True)
class BatchStep:
    """A compiled ``step(state, x_learn, y_learn, learn_mask, x_pred) → (state, prediction)``
    over S symbols: where ``learn_mask`` is set, ``OnlineLearner.learn(x_learn, y_learn)``; then
    every symbol predicts ``x_pred`` (probability or value) with the updated state."""

    params: SgdParams
    fn: Callable[..., tuple[BatchState, Any]] = field(repr=False)

    def __call__(
        self, state: BatchState, x_learn: Any, y_learn: Any, learn_mask: Any, x_pred: Any
    ) -> tuple[BatchState, Any]:
        return self.fn(state, x_learn, y_learn, learn_mask, x_pred)


def make_batch_step(params: SgdParams) -> BatchStep:
    """The vmapped step for ``params`` (float64: call after ``jax.config.update("jax_enable_x64",
    True)``, as the platform does at start)."""
    import jax
    import jax.numpy as jnp

    logistic = params.kind == "logistic"

    def scale(mean: Any, var: Any, x: Any) -> Any:
        safe = jnp.where(var != 0.0, var, 1.0)
        return jnp.where(var != 0.0, (x - mean) / jnp.sqrt(safe), 0.0)

    def predict(w: Any, b: Any, z: Any) -> Any:
        raw = w @ z + b
        if not logistic:
            return raw
        p = 1.0 / (1.0 + jnp.exp(-jnp.clip(raw, -SIGMOID_LIMIT, SIGMOID_LIMIT)))
        return jnp.where(raw < -SIGMOID_LIMIT, 0.0, jnp.where(raw > SIGMOID_LIMIT, 1.0, p))

    def one(
        n: Any, mean: Any, var: Any, w: Any, b: Any, x: Any, y: Any, learn: Any, xp: Any
    ) -> tuple[tuple[Any, ...], Any]:
        n1 = n + 1.0
        mean1 = mean + (x - mean) / n1
        var1 = var + ((x - mean) * (x - mean1) - var) / n1
        z = scale(mean1, var1, x)
        raw = w @ z + b
        if logistic:
            sign = jnp.where(y > 0, 1.0, -1.0)
            m = raw * sign
            g = jnp.where(
                m > 18.0,
                jnp.exp(-jnp.minimum(m, 700.0)) * -sign,
                jnp.where(m < -18.0, -sign, -sign / (jnp.exp(jnp.clip(m, -18.0, 18.0)) + 1.0)),
            )
        else:
            g = 2.0 * (raw - y)
        g = jnp.clip(g, -params.clip_gradient, params.clip_gradient)
        w1 = w - params.lr * (g * z + params.l2 * w)
        b1 = b - params.intercept_lr * g

        def pick(new: Any, old: Any) -> Any:
            return jnp.where(learn, new, old)

        n, mean, var, w, b = (
            pick(n1, n), pick(mean1, mean), pick(var1, var), pick(w1, w), pick(b1, b)
        )  # fmt: skip
        return (n, mean, var, w, b), predict(w, b, scale(mean, var, xp))

    stepped = jax.vmap(one)

    @jax.jit
    def step(
        state: BatchState, x_learn: Any, y_learn: Any, learn_mask: Any, x_pred: Any
    ) -> tuple[BatchState, Any]:
        new, prediction = stepped(*state, x_learn, y_learn, learn_mask, x_pred)
        return BatchState(*new), prediction

    return BatchStep(params, step)


def warm_up_batch_step(step: BatchStep, symbols: int, dim: int) -> None:
    """Compile ``step`` for ``symbols × dim`` (at start, off the loop), so no live call waits."""
    import jax.numpy as jnp

    state = batch_state(symbols, dim)
    zeros = jnp.zeros((symbols, dim))
    _, out = step(state, zeros, jnp.zeros(symbols), jnp.zeros(symbols, dtype=bool), zeros)
    out.block_until_ready()
