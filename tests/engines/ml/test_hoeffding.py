"""Hoeffding tree and Oza bagging against river: the same stream, hyper-parameters and seed give
the same class probabilities before every learning step, the same tree shapes, and the same
prequential metric series as ``evaluate.iter_progressive_val_score`` with a label delay.

Tolerance: ``engines.ml.hoeffding`` performs river's float operations in river's order, so the
probabilities are expected to be identical; the tests allow 1e-12 (absolute) so that a libm
difference in ``erf``/``log`` on another machine is not a failure, and check the measured
gap here is exactly 0 where that matters (tree structure: split features and thresholds equal).
"""

# river ships no type hints: its calls are untyped here.
# mypy: disable-error-code="no-untyped-call,attr-defined,arg-type,unused-ignore"

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import ensemble, evaluate, metrics, tree

from engines.ml import core, hoeffding

TOL = 1e-12


def stream(n: int = 4_000, seed: int = 3, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Five features of different scales; the label is an interaction of thresholds (a tree
    shape a linear model cannot learn) that changes meaning half-way, with 10 % label noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) * np.array([1, 10, 0.1, 3, 100]) + np.array([0, 5, 0, 1, 50])
    later = np.arange(n) > n // 2
    y = ((x[:, 0] > 0.2) ^ (x[:, 1] > 8) ^ (later & (x[:, 3] > 1))).astype(np.int64)
    if classes == 3:
        y = np.where(x[:, 4] > 120, 2, y)
    noise = rng.random(n) < 0.1
    return x, np.where(noise, rng.integers(0, classes, n), y)


def as_dict(row: np.ndarray) -> dict[str, float]:
    return {f"f{j}": float(v) for j, v in enumerate(row)}


def river_tree(params: hoeffding.TreeParams) -> Any:
    return tree.HoeffdingTreeClassifier(
        grace_period=params.grace_period,
        delta=params.delta,
        tau=params.tau,
        leaf_prediction=params.leaf_prediction,
        nb_threshold=params.nb_threshold,
        min_branch_fraction=params.min_branch_fraction,
        max_share_to_split=params.max_share_to_split,
        max_depth=params.max_depth,
        merit_preprune=params.merit_preprune,
        splitter=tree.splitter.GaussianSplitter(n_splits=params.n_splits),
    )


def river_splits(node: Any) -> list[tuple[int, float]]:
    """(feature index, threshold) of every branch, depth first, left before right."""
    if not hasattr(node, "children"):
        return []
    out = [(int(node.feature[1:]), float(node.threshold))]
    for child in node.children:
        out += river_splits(child)
    return out


def our_splits(node: hoeffding.Node | None) -> list[tuple[int, float]]:
    if not isinstance(node, hoeffding.Branch):
        return []
    out = [(node.feature, node.threshold)]
    for child in node.children:
        out += our_splits(child)
    return out


def assert_same_run(ours: Any, ref: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Predict-then-learn over the stream with both; the largest probability gap."""
    worst = 0.0
    for row, label in zip(x, y, strict=True):
        want = ref.predict_proba_one(as_dict(row))
        got = ours.predict_proba(row.tolist())
        assert list(got) == list(want)
        for cls, p in want.items():
            worst = max(worst, abs(got[cls] - p))
        ref.learn_one(as_dict(row), int(label))
        ours.learn(row.tolist(), int(label))
    assert worst <= TOL
    return worst


PARAMS = {
    "defaults": hoeffding.TreeParams(),
    "grace-50": hoeffding.TreeParams(grace_period=50),
    "majority-class": hoeffding.TreeParams(grace_period=50, leaf_prediction="mc"),
    "naive-bayes-depth-1": hoeffding.TreeParams(
        grace_period=50, leaf_prediction="nb", nb_threshold=20, max_depth=1
    ),
    "eager": hoeffding.TreeParams(grace_period=30, delta=0.01, tau=0.1, n_splits=4),
    "no-preprune": hoeffding.TreeParams(
        grace_period=40,
        delta=0.05,
        merit_preprune=False,
        min_branch_fraction=0.2,
        max_share_to_split=0.8,
    ),
}


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
def test_hoeffding_tree_reproduces_river(params: hoeffding.TreeParams) -> None:
    x, y = stream()
    ours, ref = hoeffding.HoeffdingTree(params), river_tree(params)
    assert_same_run(ours, ref, x, y)
    assert our_splits(ours.root) == river_splits(ref._root)
    assert ours.n_leaves == ref.n_leaves and ref.n_leaves > 1
    assert (ours.n_active, ours.n_inactive) == (ref.n_active_leaves, ref.n_inactive_leaves)
    if params.max_depth is not None:  # leaves at the limit stop learning splits
        assert ours.depth == params.max_depth and ours.n_inactive == ours.n_leaves


def test_three_classes_and_many_splits_reproduce_river() -> None:
    x, y = stream(3_000, seed=5, classes=3)
    params = hoeffding.TreeParams(grace_period=25, delta=0.05, tau=0.2)
    ours, ref = hoeffding.HoeffdingTree(params), river_tree(params)
    assert_same_run(ours, ref, x, y)
    assert our_splits(ours.root) == river_splits(ref._root) and ours.n_leaves > 10


@given(
    seed=st.integers(0, 10_000),
    grace=st.integers(5, 60),
    delta=st.sampled_from([1e-7, 1e-3, 0.1]),
    mode=st.sampled_from(hoeffding.LEAF_PREDICTIONS),
)
@settings(max_examples=40, deadline=None)
def test_random_streams_reproduce_river(seed: int, grace: int, delta: float, mode: str) -> None:
    """Short random streams with duplicated values and constant features (zero variances, ties
    in split merits, pure leaves, pre-pruning) keep river's exact answers."""
    rng = np.random.default_rng(seed)
    n = 300
    x = np.column_stack([rng.integers(0, 3, n).astype(float), rng.normal(size=n), np.full(n, 2.0)])
    y = ((x[:, 0] + rng.normal(scale=0.5, size=n)) > 1).astype(np.int64)
    params = hoeffding.TreeParams(grace_period=grace, delta=delta, leaf_prediction=mode)  # type: ignore[arg-type]
    assert_same_run(hoeffding.HoeffdingTree(params), river_tree(params), x, y)


@pytest.mark.parametrize("n_models, seed", [(3, 7), (6, 42)])
def test_oza_bagging_reproduces_river_bagging_classifier(n_models: int, seed: int) -> None:
    x, y = stream(6_000)
    params = hoeffding.TreeParams(grace_period=50)
    ours = hoeffding.OzaBagging(n_models, params, seed=seed)
    ref = ensemble.BaggingClassifier(river_tree(params), n_models=n_models, seed=seed)
    assert_same_run(ours, ref, x, y)
    got = [our_splits(m.root) for m in ours.models]
    assert got == [river_splits(m._root) for m in ref]
    assert len({str(s) for s in got}) > 1 and any(got)  # the bootstrap made members differ


def test_poisson_draw_is_rivers_and_has_mean_one() -> None:
    import random

    from river.utils.random import poisson

    a, b = random.Random(1), random.Random(1)
    draws = [hoeffding.poisson(1.0, a) for _ in range(20_000)]
    assert draws == [poisson(1, b) for _ in range(20_000)]
    assert np.mean(draws) == pytest.approx(1.0, abs=0.03)
    assert np.mean(np.array(draws) == 0) == pytest.approx(math.exp(-1), abs=0.01)


@pytest.mark.parametrize("kind", hoeffding.TREE_KINDS)
def test_prequential_series_equal_river_progressive_val_score(kind: str) -> None:
    """Test-then-train with the label ``delay`` bars late: our accuracy and log-loss series
    equal river's ``iter_progressive_val_score`` (which scores ``predict_proba_one``)."""
    x, _ = stream(1_500, seed=9)
    noise = np.random.default_rng(9).random(len(x)) < 0.1
    y = ((x[:, 0] > 0.2) & (x[:, 1] > 5)) ^ noise  # a conjunction: trees learn it quickly
    delay = 4
    spec = hoeffding.TreeSpec(kind, hoeffding.TreeParams(grace_period=40), 5, seed=3)  # type: ignore[arg-type]
    run = core.prequential_run(x, y.astype(float), np.arange(len(x)) + delay, spec)
    tree_ref = river_tree(spec.tree)
    model = (
        ensemble.BaggingClassifier(tree_ref, n_models=5, seed=3) if kind == "bagging" else tree_ref
    )
    data = [(as_dict(r), int(t)) for r, t in zip(x, y, strict=True)]
    for key, metric in (("accuracy", metrics.Accuracy()), ("log_loss", metrics.LogLoss())):
        steps = evaluate.iter_progressive_val_score(
            data, model.clone(), metric, delay=delay, step=1
        )
        want = [s[type(metric).__name__].get() for s in steps][: len(x) - delay]
        got = [m[key] for m in run.metrics]
        unscored = sum(1 for g in got if g is None)  # no answer yet: river's metric reads 0
        assert 0 < unscored < delay + 3 and want[:unscored] == [0.0] * unscored
        np.testing.assert_allclose(got[unscored:], want[unscored:], rtol=1e-12, atol=TOL)
    assert (run.metrics[-1]["accuracy"] or 0.0) > 0.75  # the tree learns the interaction


def test_tree_learner_is_probability_of_class_one() -> None:
    learner = hoeffding.TreeLearner(hoeffding.TreeSpec("hoeffding_tree"))
    assert math.isnan(learner.predict(np.zeros(2)))  # nothing learned: no answer
    learner.learn(np.array([0.0, 1.0]), 0.0)
    assert learner.predict(np.array([0.0, 1.0])) == 0.0  # only class 0 seen
    learner.learn(np.array([1.0, 0.0]), 1.0)
    assert 0.0 < learner.predict(np.array([1.0, 0.0])) <= 1.0 and learner.learned == 2
    learner.reset()
    assert learner.learned == 0 and math.isnan(learner.predict(np.zeros(2)))


def test_bad_settings_are_refused() -> None:
    for bad in ({"grace_period": 0}, {"delta": 0.0}, {"delta": 1.0}, {"tau": -1.0},
                {"leaf_prediction": "x"}, {"n_splits": 0}, {"max_depth": 0},
                {"min_branch_fraction": 0.5}):  # fmt: skip
        with pytest.raises(ValueError):
            hoeffding.TreeParams(**bad)
    with pytest.raises(ValueError):
        hoeffding.OzaBagging(0)
    with pytest.raises(ValueError):
        hoeffding.TreeSpec("forest")  # type: ignore[arg-type]
