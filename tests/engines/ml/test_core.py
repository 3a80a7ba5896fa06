"""ML core against outside references: river (scaler, SGD logistic/linear regression, prequential
metrics with delayed labels, Page–Hinkley), scikit-learn (ROC AUC, TimeSeriesSplit, KFold),
pandas (EWMA volatility, daily design), AFML's triple-barrier code transcribed, scipy's normal
CDF for bet sizing; leakage tests; the vmapped JAX step against the per-symbol learner.

Tolerances: our learner and river's run the same arithmetic in the same order except for the dot
products (numpy's ``w @ z`` may sum in another order than river's ``VectorDict.dot``), so each
step differs by a few ulps; SGD at these rates is contractive, so the gap stays at rounding
level: ≤ 1e-12 absolute on probabilities, ≤ 1e-9 relative on regression predictions (measured
here: ~1e-16 and ~1e-14).
"""

# river ships no type hints: its calls are untyped here.
# mypy: disable-error-code="no-untyped-call,attr-defined,arg-type,unused-ignore"

from __future__ import annotations

import math

import jax
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift, evaluate, linear_model, metrics, optim, preprocessing
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, TimeSeriesSplit

from engines.marketdata.daily import daily_tickers
from engines.ml import core
from engines.ml.bundled import bundled_daily_design

jax.config.update("jax_enable_x64", True)

LOGISTIC = core.SgdParams(kind="logistic", lr=0.05, l2=0.01, intercept_lr=0.02)
LINEAR = core.SgdParams(kind="linear", lr=0.02, l2=0.001, intercept_lr=0.01)


def stream(n: int = 3_000, d: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of very different scales and offsets, a class label that depends on them
    (with noise) and a real-valued target."""
    rng = np.random.default_rng(seed)
    x = (
        rng.normal(size=(n, d)) * np.array([1, 10, 0.1, 3, 100])[:d]
        + np.array([0, 5, 0, 1, 50])[:d]
    )
    z = (x - x.mean(0)) / x.std(0)
    beta = rng.normal(size=d)
    y_cls = (z @ beta + rng.normal(size=n) > 0).astype(np.int64)
    y_reg = 0.3 * (z @ beta) + 0.1 * rng.normal(size=n)
    return x, y_cls, y_reg


def as_dict(row: np.ndarray) -> dict[str, float]:
    return {f"f{j}": float(v) for j, v in enumerate(row)}


def river_model(params: core.SgdParams) -> object:
    kind = (
        linear_model.LogisticRegression
        if params.kind == "logistic"
        else linear_model.LinearRegression
    )
    return preprocessing.StandardScaler() | kind(
        optimizer=optim.SGD(params.lr), l2=params.l2, intercept_lr=params.intercept_lr
    )


# ── river: scaler, logistic and linear regression ──────────────────────────────────────────


def test_scaler_equals_river_standard_scaler() -> None:
    x, _, _ = stream(500)
    ours, ref = core.StandardScaler(x.shape[1]), preprocessing.StandardScaler()
    for row in x:
        ours.learn(row)
        ref.learn_one(as_dict(row))
        want = ref.transform_one(as_dict(row))
        np.testing.assert_allclose(
            ours.transform(row), [want[f"f{j}"] for j in range(len(row))], rtol=1e-13, atol=1e-13
        )
    # first sample: zero variance → 0 (river's safe division)
    one = core.StandardScaler(2)
    one.learn(np.array([3.0, 4.0]))
    assert one.transform(np.array([5.0, 1.0])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("params", [LOGISTIC, LINEAR], ids=["logistic", "linear"])
def test_online_learner_reproduces_river_predictions(params: core.SgdParams) -> None:
    x, y_cls, y_reg = stream()
    target = y_cls if params.kind == "logistic" else y_reg
    ours, ref = core.OnlineLearner(x.shape[1], params), river_model(params)
    got, want = [], []
    for row, y in zip(x, target, strict=True):
        xd = as_dict(row)
        got.append(ours.predict(row))
        want.append(
            ref.predict_proba_one(xd)[True] if params.kind == "logistic" else ref.predict_one(xd)
        )  # type: ignore[attr-defined]
        ours.learn(row, float(y))
        ref.learn_one(xd, bool(y) if params.kind == "logistic" else float(y))  # type: ignore[attr-defined]
    got_a, want_a = np.array(got), np.array(want)
    if params.kind == "logistic":
        np.testing.assert_allclose(got_a, want_a, rtol=0, atol=1e-12)
        assert np.mean((want_a > 0.01) & (want_a < 0.99)) > 0.9  # mostly unsaturated: a real test
    else:
        np.testing.assert_allclose(got_a, want_a, rtol=1e-9, atol=1e-12)
    # the models learned something: late predictions track the target
    late = slice(len(x) // 2, None)
    if params.kind == "logistic":
        assert roc_auc_score(y_cls[late], got_a[late]) > 0.8
    else:
        assert np.corrcoef(got_a[late], y_reg[late])[0, 1] > 0.8


def test_gradient_clipping_and_saturation_follow_river() -> None:
    params = core.SgdParams(kind="logistic", lr=0.5, l2=0.0, intercept_lr=0.5, clip_gradient=0.3)
    x, y, _ = stream(400, d=3, seed=5)
    ours = core.OnlineLearner(3, params)
    ref = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.5), intercept_lr=0.5, clip_gradient=0.3
    )
    for row, label in zip(x * 50, y, strict=True):
        assert ours.predict(row) == pytest.approx(
            ref.predict_proba_one(as_dict(row))[True], abs=1e-12
        )
        ours.learn(row, float(label))
        ref.learn_one(as_dict(row), bool(label))
    assert core.sigmoid(31.0) == 1.0 and core.sigmoid(-31.0) == 0.0


# ── prequential evaluation = river's progressive_val_score ──────────────────────────────────


@pytest.mark.parametrize("horizon", [1, 5])
def test_prequential_series_equal_river_progressive_val_score(horizon: int) -> None:
    x, y_cls, y_reg = stream(1_500, seed=3)
    n = len(x)
    due = np.arange(n) + horizon
    cls = core.prequential_run(x, y_cls.astype(float), due, LOGISTIC)
    reg = core.prequential_run(x, y_reg, due, LINEAR)
    assert cls.resolved == list(range(n - horizon))

    def river_series(params: core.SgdParams, target: np.ndarray, metric: object) -> list[float]:
        data = [
            (as_dict(r), bool(t) if params.kind == "logistic" else float(t))
            for r, t in zip(x, target, strict=True)
        ]
        steps = evaluate.iter_progressive_val_score(
            data, river_model(params), metric, delay=horizon, step=1
        )
        return [s[type(metric).__name__].get() for s in steps]

    for key, params, target, metric, run in (
        ("accuracy", LOGISTIC, y_cls, metrics.Accuracy(), cls),
        ("log_loss", LOGISTIC, y_cls, metrics.LogLoss(), cls),
        ("mae", LINEAR, y_reg, metrics.MAE(), reg),
    ):
        want = river_series(params, target, metric)[: n - horizon]
        got = [m[key] for m in run.metrics]
        assert len(got) == len(want) == n - horizon
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=key)


def test_auc_is_exact_mann_whitney_as_scikit_learn() -> None:
    x, y, _ = stream(2_000, seed=4)
    run = core.prequential_run(x, y.astype(float), np.arange(len(x)) + 3, LOGISTIC, auc=True)
    scored = run.resolved
    assert run.metrics[-1]["auc"] == pytest.approx(
        roc_auc_score(y[scored], run.predictions[scored]), abs=1e-12
    )
    # ties (the first predictions are all 0.5) are counted half, as scikit-learn does
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 300), rng.integers(0, 4, 300).astype(float)
    assert core.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-14)
    assert core.roc_auc([1, 1], [0.2, 0.3]) is None
    # a bounded window: the AUC of the last `auc_window` predictions only
    pre = core.Prequential("logistic", auc_window=100)
    for label, p in zip(labels, scores / 4, strict=True):
        pre.update(float(label), float(p))
    assert pre.auc() == pytest.approx(roc_auc_score(labels[-100:], scores[-100:]), abs=1e-14)


# ── leakage ──────────────────────────────────────────────────────────────────────────────────


def test_shuffled_future_labels_drive_auc_to_one_half() -> None:
    x, y, _ = stream(6_000, seed=7)
    due = np.arange(len(x)) + 5
    honest = core.prequential_run(x, y.astype(float), due, LOGISTIC, auc=True)
    shuffled_y = np.random.default_rng(8).permutation(y)
    shuffled = core.prequential_run(x, shuffled_y.astype(float), due, LOGISTIC)
    s = shuffled.resolved
    auc = roc_auc_score(shuffled_y[s], shuffled.predictions[s])
    n1 = int(shuffled_y[s].sum())
    n0 = len(s) - n1
    sd = math.sqrt((n0 + n1 + 1) / (12 * n0 * n1))  # AUC's sd under H0 (Mann–Whitney)
    assert honest.metrics[-1]["auc"] > 0.85  # type: ignore[operator]
    assert abs(auc - 0.5) < 4 * sd


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(8, 60),
    seed=st.integers(0, 2**32 - 1),
    t=st.integers(0, 59),
    max_delay=st.integers(1, 12),
)
def test_a_prediction_never_uses_a_label_unresolved_at_its_time(
    n: int, seed: int, t: int, max_delay: int
) -> None:
    """Change every label that resolves after step ``t``: no prediction up to ``t`` moves, and
    every label learned before a prediction had resolved by then."""
    t = min(t, n - 1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = rng.integers(0, 2, n).astype(float)
    due = np.arange(n) + rng.integers(1, max_delay + 1, n)
    base = core.prequential_run(x, y, due, LOGISTIC)
    changed = y.copy()
    future = due > t
    changed[future] = 1.0 - changed[future]
    other = core.prequential_run(x, changed, due, LOGISTIC)
    np.testing.assert_array_equal(base.predictions[: t + 1], other.predictions[: t + 1])
    assert all(due[j] <= n - 1 for j in base.resolved)
    assert [due[j] for j in base.resolved] == sorted(due[j] for j in base.resolved)


# ── drift, bet sizing ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("mode", ["up", "down", "both"])
def test_page_hinkley_equals_river(mode: str) -> None:
    rng = np.random.default_rng(11)
    values = np.concatenate(
        [rng.normal(0.5, 0.1, 800), rng.normal(1.5, 0.1, 800), rng.normal(0.2, 0.1, 800)]
    )
    ours, ref = (
        core.PageHinkley(threshold=20.0, mode=mode),
        drift.PageHinkley(threshold=20.0, mode=mode),
    )  # type: ignore[arg-type]
    got, want = [], []
    for v in values:
        got.append(ours.update(float(v)))
        ref.update(float(v))
        want.append(ref.drift_detected)
    assert got == want
    assert any(got[800:900]) if mode in ("up", "both") else any(got[1600:1700])


def test_bet_size_is_afml_2phi_z_minus_1() -> None:
    for p in (0.01, 0.3, 0.5, 0.55, 0.7, 0.9, 0.999):
        z = (p - 0.5) / math.sqrt(p * (1 - p))
        assert core.bet_size(p) == pytest.approx(2 * norm.cdf(z) - 1, abs=1e-15)
        assert core.bet_size(1 - p) == pytest.approx(-core.bet_size(p), abs=1e-15)
    assert core.bet_size(0.5) == 0.0 and core.bet_size(1.0) == 1.0 and core.bet_size(0.0) == -1.0
    with pytest.raises(ValueError):
        core.bet_size(1.5)


# ── labels ──────────────────────────────────────────────────────────────────────────────────


def afml_triple_barrier(
    close: pd.Series, trgt: pd.Series, horizon: int, pt: float, sl: float
) -> pd.DataFrame:
    """AFML snippets 3.2 (applyPtSlOnT1) and 3.5 (getBins) as printed, events at every bar with
    a vertical barrier ``horizon`` bars later; ``out`` holds the first touch and its return."""
    t1 = pd.Series(close.index[horizon:], index=close.index[:-horizon])
    events = pd.DataFrame({"t1": t1, "trgt": trgt.loc[t1.index]})
    out = events[["t1"]].copy(deep=True)
    pts = pt * events["trgt"] if pt > 0 else pd.Series(index=events.index, dtype=float)
    sls = -sl * events["trgt"] if sl > 0 else pd.Series(index=events.index, dtype=float)
    touch = {}
    for loc, t1v in events["t1"].fillna(close.index[-1]).items():
        df0 = close[loc:t1v]
        df0 = df0 / close[loc] - 1
        first_sl = df0[df0 < sls[loc]].index.min()
        first_pt = df0[df0 > pts[loc]].index.min()
        touch[loc] = pd.Series([t1v, first_sl, first_pt]).dropna().min()
    out["touch"] = pd.Series(touch)
    out["ret"] = close.loc[out["touch"].values].values / close.loc[out.index].values - 1
    out["bin"] = np.sign(out["ret"])
    return out


def test_triple_barrier_labels_equal_afml_code_and_forward_label() -> None:
    rng = np.random.default_rng(21)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    width = np.full(400, 0.012)
    width[200:] = 0.03
    horizon = 10
    touch, ret, cls = core.triple_barrier_labels(close, width, horizon, pt=1.0, sl=2.0)
    ref = afml_triple_barrier(pd.Series(close), pd.Series(width), horizon, 1.0, 2.0)
    m = len(ref)
    np.testing.assert_array_equal(touch[:m], ref["touch"].to_numpy())
    np.testing.assert_allclose(ret[:m], ref["ret"].to_numpy(), rtol=1e-13)
    np.testing.assert_array_equal(cls[:m], (ref["bin"].to_numpy() > 0).astype(int))
    assert (touch[:m] - np.arange(m) < horizon).mean() > 0.3  # barriers do get touched early
    assert (touch[m:] == -1).all()
    forward = core.ForwardReturnLabel(close[0], 3)
    assert forward.update(close[1]) is None and forward.update(close[2]) is None
    label = forward.update(close[3])
    assert (
        label is not None
        and label.ret == pytest.approx(close[3] / close[0] - 1)
        and label.bars == 3
    )


def test_ewma_volatility_equals_pandas_ewm_std() -> None:
    close = 50 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.02, 300)))
    vol = core.EwmaVolatility(span=20)
    got = [vol.update(float(c)) for c in close]
    want = pd.Series(close).pct_change().ewm(span=20).std().to_numpy()
    assert got[0] is None and got[1] is None  # one return has no spread
    np.testing.assert_allclose(np.array(got[2:], dtype=float), want[2:], rtol=1e-10)


def test_daily_design_equals_pandas() -> None:
    close = 20 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, 120)))
    x, y, rows = core.daily_design(close, 5)
    s = pd.Series(close)
    frame = pd.DataFrame(
        {
            "r1": s.pct_change(),
            "r5": s.pct_change(5),
            "r20": s.pct_change(20),
            "vol": s.pct_change().rolling(20).std(),
            "y": (s.shift(-5) > s).astype(int),
        }
    )
    want = frame.iloc[20:115]
    assert rows.tolist() == list(range(20, 115))
    np.testing.assert_allclose(x, want[["r1", "r5", "r20", "vol"]].to_numpy(), rtol=1e-12)
    assert y.tolist() == want["y"].tolist()


# ── splits ──────────────────────────────────────────────────────────────────────────────────


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(20, 300),
    n_splits=st.integers(2, 8),
    gap=st.integers(0, 5),
    max_train=st.one_of(st.none(), st.integers(1, 50)),
    test_size=st.one_of(st.none(), st.integers(1, 15)),
)
def test_unpurged_walk_forward_is_time_series_split(
    n: int, n_splits: int, gap: int, max_train: int | None, test_size: int | None
) -> None:
    size = n // (n_splits + 1) if test_size is None else test_size
    if n - n_splits * size - gap <= 0 or size < 1:
        with pytest.raises(ValueError):
            core.walk_forward_splits(
                n, n_splits, gap=gap, test_size=test_size, max_train_size=max_train
            )
        return
    ours = core.walk_forward_splits(
        n, n_splits, gap=gap, test_size=test_size, max_train_size=max_train
    )
    ref = TimeSeriesSplit(n_splits=n_splits, gap=gap, max_train_size=max_train, test_size=test_size)
    theirs = list(ref.split(np.zeros((n, 1))))
    assert len(ours) == len(theirs)
    for (a, b), (c, d) in zip(ours, theirs, strict=True):
        assert a.tolist() == c.tolist() and b.tolist() == d.tolist()


@pytest.mark.parametrize("horizon", [1, 4, 9])
def test_purging_a_walk_forward_equals_time_series_split_with_gap_horizon(horizon: int) -> None:
    n = 200
    t1 = np.arange(n) + horizon  # each label resolves `horizon` bars later
    ours = core.walk_forward_splits(n, 5, t1=t1)
    theirs = TimeSeriesSplit(n_splits=5, gap=horizon).split(np.zeros((n, 1)))
    for (a, b), (c, d) in zip(ours, theirs, strict=True):
        assert a.tolist() == c.tolist() and b.tolist() == d.tolist()


def test_purged_kfold_without_overlap_is_kfold_and_purges_and_embargoes() -> None:
    n = 103
    for k in (2, 5, 10):
        ours = core.purged_kfold_splits(np.arange(n), k)
        for (a, b), (c, d) in zip(ours, KFold(n_splits=k).split(np.zeros((n, 1))), strict=True):
            assert a.tolist() == c.tolist() and b.tolist() == d.tolist()
    horizon, embargo = 6, 0.05
    t1 = np.minimum(np.arange(n) + horizon, n - 1)
    for train, test in core.purged_kfold_splits(t1, 5, embargo):
        lo, hi = int(test[0]), int(t1[test].max())
        overlap = (np.arange(n)[train] <= hi) & (t1[train] >= lo)
        assert not overlap.any()  # no training label span touches the test span
        after = train[train > hi]
        if after.size:
            assert after.min() == hi + 1 + int(embargo * n)  # embargo: the next rows are dropped
        before = train[train < lo]
        if lo > 0:
            assert before.max() == lo - horizon - 1  # purge: the labels reaching into test


def test_turning_purge_and_embargo_off_inflates_the_score_on_a_leaky_label() -> None:
    """Features that drift slowly and say nothing about future returns (an 8-dimensional random
    walk), labels that overlap (sign of the next 20 returns), small test blocks (100 folds of
    20 rows): a 1-nearest-neighbour model finds each test row's neighbours in time in the
    training set and copies their overlapping labels — unless purged and embargoed (AFML 7.2)."""
    rng = np.random.default_rng(13)
    n, horizon = 2_000, 20
    r = rng.normal(0, 1, n + horizon)
    y = np.array([int(r[i + 1 : i + 1 + horizon].sum() > 0) for i in range(n)])
    x = np.cumsum(rng.normal(0, 1, (n, 8)), axis=0)
    t1 = np.minimum(np.arange(n) + horizon, n - 1)
    params = {"n_neighbors": 1}
    leaky = core.walk_forward(
        x, y, core.purged_kfold_splits(np.arange(n), 100), "kneighbors", params
    )
    clean = core.walk_forward(x, y, core.purged_kfold_splits(t1, 100, 0.01), "kneighbors", params)
    leaky_acc = np.mean([f.accuracy for f in leaky])
    clean_acc = np.mean([f.accuracy for f in clean])
    # 2000 test rows in all: accuracy's sd at 0.5 is ~0.011 (rows are dependent: allow more)
    assert leaky_acc > 0.65
    assert abs(clean_acc - 0.5) < 0.06
    assert leaky_acc - clean_acc > 0.1


def test_walk_forward_folds_equal_a_direct_scikit_learn_fit() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss

    x, y, _ = stream(600, d=3, seed=9)
    splits = core.walk_forward_splits(600, 4, test_size=50)
    progress: list[int] = []
    folds = core.walk_forward(x, y, splits, "logistic", {"C": 0.5}, progress.append)
    assert progress == [1, 2, 3, 4]
    for fold, (train, test) in zip(folds, splits, strict=True):
        p = LogisticRegression(C=0.5).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
        assert fold.accuracy == pytest.approx(accuracy_score(y[test], p > 0.5), abs=1e-12)
        assert fold.log_loss == pytest.approx(log_loss(y[test], p), rel=1e-9)
        assert fold.auc == pytest.approx(roc_auc_score(y[test], p), abs=1e-12)
    with pytest.raises(ValueError, match="unknown estimator"):
        core.make_estimator("svm", {})
    with pytest.raises(ValueError, match="logistic"):
        core.make_estimator("logistic", {"C": -1.0})
    with pytest.raises(ValueError, match="logistic"):
        core.make_estimator("logistic", {"nope": 1})


def test_pooled_daily_design_merges_symbols_in_time_order_as_pandas() -> None:
    """Two symbols on partly overlapping calendars: the pooled rows are pandas' concat of each
    symbol's frame sorted by observation time (stable, the first symbol first at a tie)."""
    rng = np.random.default_rng(5)
    days = {"AAA": np.arange(0, 90) * 2, "BBB": np.arange(30, 100) * 2 + 1}
    days["BBB"][:20] = days["AAA"][30:50]  # shared days: ties broken by symbol order
    closes = {s: 30 * np.exp(np.cumsum(rng.normal(0, 0.01, d.size))) for s, d in days.items()}
    design = core.pooled_daily_design({s: (closes[s], days[s]) for s in days}, 5)
    frames = []
    for g, s in enumerate(days):
        c = pd.Series(closes[s])
        frame = pd.DataFrame({"r1": c.pct_change(), "r5": c.pct_change(5),
                              "r20": c.pct_change(20), "vol": c.pct_change().rolling(20).std(),
                              "y": (c.shift(-5) > c).astype(int), "t0": days[s],
                              "t1": pd.Series(days[s]).shift(-5), "group": g})  # fmt: skip
        frames.append(frame.iloc[20:-5])
    want = pd.concat(frames).sort_values("t0", kind="stable")
    np.testing.assert_allclose(design.x, want[["r1", "r5", "r20", "vol"]].to_numpy(), rtol=1e-12)
    for column in ("y", "t0", "t1", "group"):
        assert getattr(design, column).tolist() == want[column].astype(int).tolist(), column
    with pytest.raises(ValueError, match="BBB"):
        core.pooled_daily_design(
            {"AAA": (closes["AAA"], days["AAA"]), "BBB": ([1.0] * 9, range(9))}, 5
        )


def afml_average_uniqueness(close_idx: pd.Index, t1: pd.Series) -> pd.Series:
    """AFML snippets 4.1 (mpNumCoEvents) and 4.2 (mpSampleTW) as printed, over every event."""
    count = pd.Series(0.0, index=close_idx[close_idx.searchsorted(t1.index[0]) :])
    count = count.loc[: t1.max()]
    for t_in, t_out in t1.items():
        count.loc[t_in:t_out] += 1.0
    weight = pd.Series(index=t1.index, dtype=float)
    for t_in, t_out in t1.items():
        weight.loc[t_in] = (1.0 / count.loc[t_in:t_out]).mean()
    return weight


def test_average_uniqueness_equals_afml_code_per_symbol() -> None:
    """Labels of two symbols, a row at every bar, horizons varying per row (triple-barrier-like
    spans): each row's uniqueness is AFML's computed on its own symbol's events alone."""
    rng = np.random.default_rng(9)
    t0s, t1s, groups, want = [], [], [], []
    for g, n in enumerate((150, 90)):
        bars = np.cumsum(rng.integers(1, 4, n))  # bar times, irregular gaps, a row at each
        start = np.arange(n)
        end = np.minimum(start + rng.integers(0, 12, n), n - 1)  # maybe at its own bar
        t1 = pd.Series(bars[end], index=pd.Index(bars[start]))
        want.append(afml_average_uniqueness(pd.Index(bars), t1).to_numpy())
        t0s.append(bars[start])
        t1s.append(bars[end])
        groups.append(np.full(n, g))
    # interleave the two symbols' rows in time order, as the pooled panel holds them
    t0 = np.concatenate(t0s)
    order = np.argsort(t0, kind="stable")
    got = core.average_uniqueness(
        t0[order], np.concatenate(t1s)[order], np.concatenate(groups)[order]
    )
    np.testing.assert_allclose(got, np.concatenate(want)[order], rtol=1e-13)
    assert got.min() < 0.2 and got.max() > 0.4  # overlapping and near-unique labels
    with pytest.raises(ValueError, match="t1"):
        core.average_uniqueness([3], [2], [0])


@pytest.mark.parametrize("scheme", ["purged_kfold", "walk_forward"])
def test_folds_in_parallel_equal_the_sequential_run(scheme: str) -> None:
    """A seeded random forest over 10 folds of bundled daily rows: folds fitted four at a time
    on threads give the sequential run's predictions and per-fold metrics exactly, in fold
    order; progress counts every fold once. The forest's own ``n_jobs`` matches to rounding."""
    x, y, t0, t1, _ = bundled_daily_design(daily_tickers()[:3], horizon=5)
    assert len(y) > 10_000
    if scheme == "purged_kfold":
        splits = core.purged_kfold_splits(t1, 10, 0.01, t0=t0)
    else:
        splits = core.walk_forward_splits(len(y), 10, t1=t1, t0=t0)
    params = {"n_estimators": 12, "max_depth": 6, "random_state": 0}
    sequential = core.walk_forward(x, y, splits, "random_forest", params)
    progress: list[int] = []
    threaded = core.walk_forward(x, y, splits, "random_forest", params, progress.append, n_jobs=4)
    forest_jobs = core.walk_forward(x, y, splits, "random_forest", {**params, "n_jobs": 2})
    assert progress == list(range(1, 11))
    assert [f.to_payload() for f in threaded] == [f.to_payload() for f in sequential]
    for a, b, c in zip(threaded, sequential, forest_jobs, strict=True):
        assert a.probability.size == b.test > 0
        np.testing.assert_array_equal(a.probability, b.probability)
        # the forest's own threads grow the same trees but add their votes up in the order the
        # threads finish: the last bit of a probability may differ
        np.testing.assert_allclose(c.probability, b.probability, rtol=1e-14, atol=0)
    # the forest did learn something to compare: its predictions are not constant
    assert np.std(np.concatenate([f.probability for f in sequential])) > 0.01
    with pytest.raises(ValueError, match="n_jobs"):
        core.walk_forward(x, y, splits, "random_forest", params, n_jobs=0)


def test_a_failing_fold_fails_the_parallel_run() -> None:
    x, y, _ = stream(300, d=2, seed=3)
    y = y.astype(np.int64)
    y[:100] = 0  # the first fold trains on one class
    splits = core.walk_forward_splits(300, 4, test_size=50)
    with pytest.raises(ValueError, match="fold 0"):
        core.walk_forward(x, y, splits, "logistic", {}, n_jobs=3)


# ── JAX: many symbols in one vmapped step ───────────────────────────────────────────────────


@pytest.mark.parametrize("params", [LOGISTIC, LINEAR], ids=["logistic", "linear"])
def test_vmapped_step_equals_the_per_symbol_learner(params: core.SgdParams) -> None:
    symbols, dim, steps = 7, 4, 120
    rng = np.random.default_rng(17)
    scales = rng.uniform(0.1, 50, (symbols, dim))
    step = core.make_batch_step(params)
    state = core.batch_state(symbols, dim)
    learners = [core.OnlineLearner(dim, params) for _ in range(symbols)]
    for _ in range(steps):
        x_learn = rng.normal(size=(symbols, dim)) * scales
        x_pred = rng.normal(size=(symbols, dim)) * scales
        y = (
            rng.integers(0, 2, symbols).astype(float)
            if params.kind == "logistic"
            else rng.normal(size=symbols)
        )
        mask = rng.random(symbols) < 0.7
        state, prediction = step(state, x_learn, y, mask, x_pred)
        want = []
        for s, learner in enumerate(learners):
            if mask[s]:
                learner.learn(x_learn[s], float(y[s]))
            want.append(learner.predict(x_pred[s]))
        np.testing.assert_allclose(np.asarray(prediction), want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        np.asarray(state.w), [lr.model.weights for lr in learners], rtol=1e-11, atol=1e-13
    )
