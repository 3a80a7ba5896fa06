"""Hoeffding tree classifier and Oza bagging of Hoeffding trees, pure, equal to river's.

* ``HoeffdingTree`` — the Very Fast Decision Tree (Domingos & Hulten 2000; Hulten, Spencer &
  Domingos 2001) as river's ``tree.HoeffdingTreeClassifier`` builds it (itself MOA's): numeric
  features watched per leaf by a Gaussian per class (river's ``tree.splitter.GaussianSplitter``:
  ``n_splits`` equally spaced candidate thresholds between the smallest and largest value seen,
  class weights left of a threshold from the Gaussian CDF), candidates scored by information gain
  (``split_criterion.InfoGainSplitCriterion``, a branch must hold more than
  ``min_branch_fraction`` of the weight; no candidates while one class holds more than
  ``max_share_to_split`` of the leaf), a split when the best merit beats the second by the
  Hoeffding bound ``sqrt(R² ln(1/δ) / 2n)`` or the bound falls below ``tau``, tried every
  ``grace_period`` weight at a leaf; leaves predict by majority class (``mc``), naive Bayes
  (``nb``) or whichever of the two was more often right at that leaf (``nba``, the default).
* ``OzaBagging`` — Oza & Russell (2001) online bagging as river's ``ensemble.BaggingClassifier``:
  each member learns each sample ``k ~ Poisson(1)`` times (Knuth's product-of-uniforms draw from
  one ``random.Random(seed)``, members in order), the prediction is the normalised sum of the
  members' class probabilities.

Both follow river's code operation by operation (the same float operations in the same order,
ties broken by the same dict and sort orders), so predictions agree to the last bit on the same
stream; the tests hold them to 1e-12.

Limits: features are a fixed-length vector of finite numbers (no nominal features, no missing
values: river's multiway nominal branches and most-common-path fallback are not here); the split
criterion is information gain only (no Gini, no Hellinger); river's memory management (it
estimates the Python size of the tree every ``memory_estimate_period`` = 10⁶ samples of weight
and may then deactivate leaves) is not reproduced, so the two agree for streams shorter than
that and a tree here grows without a size bound (``max_depth`` bounds it); ``remove_poor_attrs``
is off as in river's default. Learning is pure Python: ~10 µs per feature per sample per tree.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

LeafPrediction = Literal["mc", "nb", "nba"]
LEAF_PREDICTIONS: tuple[LeafPrediction, ...] = ("mc", "nb", "nba")
Distribution = dict[int, float]
_HALF_LOG_TAU = 0.5 * math.log(math.tau)


def _norm_cdf(x: float) -> float:
    """river ``utils.math.norm_cdf``."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _normalized(dist: Distribution) -> Distribution:
    """river ``utils.norm.normalize_values_in_dict(inplace=False)``: values × (1/sum), or the
    values unchanged when they sum to 0."""
    factor = sum(dist.values())
    if factor == 0 or math.isnan(factor):
        return dict(dist)
    scale = 1 / factor
    return {k: v * scale for k, v in dist.items()}


def _argmax(dist: Distribution) -> int:
    """``max(d, key=d.get)``: the first key holding the largest value."""
    return max(dist, key=dist.__getitem__)


class Gaussian:
    """river ``proba.Gaussian``: weighted Welford mean and variance (ddof 1).

    ``log_pdf`` is read far more often than the Gaussian changes (naive Bayes reads every class
    of every feature at each prediction and each ``nba`` learn; a learn updates one class), so
    its two terms of the variance, ``−2σ²`` and ``½·log σ²``, are kept until the next
    ``update`` — the same operations in the same order as river, so the same floats."""

    __slots__ = ("_half_log_var", "_neg_two_var", "mean", "n", "s")

    def __init__(self) -> None:
        self.n = 0.0
        self.mean = 0.0
        self.s = 0.0
        self._neg_two_var: float | None = None  # None: to compute; 0.0: no density (−∞)
        self._half_log_var = 0.0

    def update(self, x: float, w: float) -> None:
        old = self.mean
        self.n += w
        self.mean += (w / self.n) * (x - self.mean)
        self.s += w * (x - old) * (x - self.mean)
        self._neg_two_var = None

    def log_pdf(self, x: float) -> float:
        neg_two_var = self._neg_two_var
        if neg_two_var is None:
            neg_two_var = 0.0
            if self.n > 1:
                variance = self.s / (self.n - 1)
                if variance > 0.0:
                    neg_two_var = -2.0 * variance
                    self._half_log_var = 0.5 * math.log(variance)
            self._neg_two_var = neg_two_var
        if neg_two_var == 0.0:
            return -math.inf
        return (x - self.mean) ** 2 / neg_two_var - _HALF_LOG_TAU - self._half_log_var

    def cdf(self, x: float) -> float:
        sigma = (self.s / (self.n - 1) if self.n > 1 else 0.0) ** 0.5
        if sigma == 0.0:
            return 0.0
        return _norm_cdf((x - self.mean) / sigma)


@dataclass(slots=True)
class SplitSuggestion:
    """river ``tree.utils.BranchFactory``: a candidate ``feature <= threshold`` split with the
    class weights it sends left and right; ``feature`` ``None`` is the null split (it wins when
    nothing else is proposed: the leaf is pre-pruned, and at once reactivated with fresh
    splitters, as river's idle memory manager does)."""

    merit: float = -math.inf
    feature: int | None = None
    threshold: float = math.nan
    children: tuple[Distribution, Distribution] | None = None


def _entropy(dist: Distribution) -> float:
    entropy = 0.0
    total = 0.0
    for d in dist.values():
        if d > 0.0:
            entropy -= d * math.log2(d)
            total += d
    return (entropy + total * math.log2(total)) / total if total > 0.0 else 0.0


def info_gain(pre: Distribution, post: tuple[Distribution, Distribution], min_frac: float) -> float:
    """river ``InfoGainSplitCriterion.merit_of_split``: −∞ unless two branches each hold more
    than ``min_frac`` of the weight, else H(pre) − Σ wᵢ H(postᵢ) / Σ wᵢ."""
    sums = [sum(d.values()) for d in post]
    total = 0.0
    for s in sums:
        total += s
    if total <= 0 or sum(1 for s in sums if s / total > min_frac) < 2:
        return -math.inf
    weighted = 0.0
    for s, d in zip(sums, post, strict=True):
        weighted += s * _entropy(d)
    return _entropy(pre) - weighted / total


class GaussianSplitter:
    """river ``tree.splitter.GaussianSplitter`` for one numeric feature at one leaf."""

    __slots__ = ("dists", "maxs", "mins", "n_splits")

    def __init__(self, n_splits: int) -> None:
        self.n_splits = n_splits
        self.dists: dict[int, Gaussian] = {}
        self.mins: dict[int, float] = {}
        self.maxs: dict[int, float] = {}

    def update(self, value: float, cls: int, w: float) -> None:
        dist = self.dists.get(cls)
        if dist is None:
            dist = self.dists[cls] = Gaussian()
            self.mins[cls] = value
            self.maxs[cls] = value
        else:
            if value < self.mins[cls]:
                self.mins[cls] = value
            if value > self.maxs[cls]:
                self.maxs[cls] = value
        dist.update(value, w)

    def log_proba(self, value: float, cls: int) -> float:
        dist = self.dists.get(cls)
        return -math.inf if dist is None else dist.log_pdf(value)

    def best_split(self, pre: Distribution, feature: int, min_frac: float) -> SplitSuggestion:
        best = SplitSuggestion()
        for threshold in self._thresholds():
            post = self._post_split(threshold)
            merit = info_gain(pre, post, min_frac)
            if merit > best.merit:
                best = SplitSuggestion(merit, feature, threshold, post)
        return best

    def _thresholds(self) -> list[float]:
        lo, hi = math.inf, -math.inf
        for cls in self.dists:
            if self.mins[cls] < lo:
                lo = self.mins[cls]
            if self.maxs[cls] > hi:
                hi = self.maxs[cls]
        out: list[float] = []
        if lo < math.inf:
            size = hi - lo
            size /= self.n_splits + 1.0
            for i in range(self.n_splits):
                value = lo + (size * (i + 1))
                if lo < value < hi:
                    out.append(value)
        return out

    def _post_split(self, threshold: float) -> tuple[Distribution, Distribution]:
        left: Distribution = {}
        right: Distribution = {}
        for cls, dist in self.dists.items():
            if threshold < self.mins[cls]:
                right[cls] = dist.n
            elif threshold >= self.maxs[cls]:
                left[cls] = dist.n
            else:
                left[cls] = dist.cdf(threshold) * dist.n
                right[cls] = dist.n - left[cls]
        return left, right


class Leaf:
    """A learning leaf: class weights, one splitter per feature while active, and (for ``nba``)
    how often majority class and naive Bayes were right here."""

    __slots__ = ("depth", "last_split_at", "mc_correct", "nb_correct", "splitters", "stats")

    def __init__(self, stats: Distribution, depth: int) -> None:
        self.stats = stats
        self.depth = depth
        self.splitters: list[GaussianSplitter] | None = []
        self.last_split_at = self.total_weight
        self.mc_correct = 0.0
        self.nb_correct = 0.0

    @property
    def total_weight(self) -> float:
        return sum(self.stats.values()) if self.stats else 0

    @property
    def active(self) -> bool:
        return self.splitters is not None

    def naive_bayes(self, x: Sequence[float]) -> Distribution:
        """river ``tree.utils.do_naive_bayes_prediction``."""
        total = sum(self.stats.values())
        if not self.stats or total == 0:
            return {}
        splitters = self.splitters or []
        votes: Distribution = {}
        minus_inf = -math.inf
        for cls, weight in self.stats.items():
            if weight <= 0:
                votes[cls] = 0.0
                continue
            vote = math.log(weight / total)
            # splitter.log_proba, inlined; no splitters yet (nothing learned) or a full set
            for splitter, value in zip(splitters, x, strict=False):
                dist = splitter.dists.get(cls)
                if dist is not None:
                    lp = dist.log_pdf(value)
                    if lp > minus_inf:
                        vote += lp
            votes[cls] = vote
        top = max(votes.values())
        lse = top + math.log(sum(math.exp(v - top) for v in votes.values()))
        return {cls: math.exp(v - lse) for cls, v in votes.items()}

    def prediction(
        self, x: Sequence[float], mode: LeafPrediction, nb_threshold: float
    ) -> Distribution:
        if mode == "nba":
            if self.active and self.nb_correct >= self.mc_correct:
                return self.naive_bayes(x)
        elif mode == "nb" and self.active and self.total_weight >= nb_threshold:
            return self.naive_bayes(x)
        return _normalized(self.stats)

    def learn(
        self, x: Sequence[float], y: int, w: float, mode: LeafPrediction, n_splits: int
    ) -> None:
        if mode == "nba" and self.active:
            if not self.stats or _argmax(_normalized(self.stats)) == y:
                self.mc_correct += w
            nb = self.naive_bayes(x)
            if nb and _argmax(nb) == y:
                self.nb_correct += w
        self.stats[y] = self.stats[y] + w if y in self.stats else w
        if self.splitters is not None:
            if not self.splitters:
                self.splitters.extend(GaussianSplitter(n_splits) for _ in x)
            for splitter, value in zip(self.splitters, x, strict=True):
                splitter.update(value, y, w)

    def is_pure(self) -> bool:
        return sum(1 for weight in self.stats.values() if weight != 0) < 2


class Branch:
    """``x[feature] <= threshold`` goes to ``children[0]``, otherwise ``children[1]``."""

    __slots__ = ("children", "depth", "feature", "threshold")

    def __init__(self, feature: int, threshold: float, depth: int, left: Node, right: Node) -> None:
        self.feature = feature
        self.threshold = threshold
        self.depth = depth
        self.children = [left, right]

    def branch(self, x: Sequence[float]) -> int:
        return 0 if x[self.feature] <= self.threshold else 1


Node = Leaf | Branch


@dataclass(frozen=True, slots=True)
class TreeParams:
    """river ``HoeffdingTreeClassifier``'s parameters and defaults (``max_depth`` ``None``:
    unbounded)."""

    grace_period: int = 200
    delta: float = 1e-7
    tau: float = 0.05
    leaf_prediction: LeafPrediction = "nba"
    nb_threshold: int = 0
    n_splits: int = 10
    min_branch_fraction: float = 0.01
    max_share_to_split: float = 0.99
    max_depth: int | None = None
    merit_preprune: bool = True

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise ValueError(f"grace_period must be >= 1, got {self.grace_period}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not math.isfinite(self.tau) or self.tau < 0:
            raise ValueError(f"tau must be finite and >= 0, got {self.tau}")
        if self.leaf_prediction not in LEAF_PREDICTIONS:
            raise ValueError(f"leaf_prediction must be one of {LEAF_PREDICTIONS}")
        if self.n_splits < 1 or self.nb_threshold < 0:
            raise ValueError("n_splits must be >= 1 and nb_threshold >= 0")
        if not 0.0 <= self.min_branch_fraction < 0.5:
            raise ValueError("min_branch_fraction must be in [0, 0.5)")
        if not 0.0 < self.max_share_to_split <= 1.0:
            raise ValueError("max_share_to_split must be in (0, 1]")
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")


class HoeffdingTree:
    """A Hoeffding tree classifier over fixed-length numeric feature vectors and int classes."""

    __slots__ = ("classes", "n_active", "n_inactive", "params", "root", "weight_seen")

    def __init__(self, params: TreeParams | None = None) -> None:
        self.params = params or TreeParams()
        self.root: Node | None = None
        self.classes: set[int] = set()
        self.weight_seen = 0.0
        self.n_active = 0
        self.n_inactive = 0

    def predict_proba(self, x: Sequence[float]) -> Distribution:
        """Class probabilities, every class seen so far present (0 when the tree says so)."""
        proba: Distribution = {c: 0.0 for c in sorted(self.classes)}
        if self.root is not None:
            node = self.root
            while isinstance(node, Branch):
                node = node.children[node.branch(x)]
            p = self.params
            proba.update(node.prediction(x, p.leaf_prediction, p.nb_threshold))
        return proba

    def learn(self, x: Sequence[float], y: int, w: float = 1.0) -> None:
        p = self.params
        self.classes.add(y)
        self.weight_seen += w
        if self.root is None:
            self.root = Leaf({}, 0)
            self.n_active = 1
        parent: Branch | None = None
        node = self.root
        while isinstance(node, Branch):
            parent, node = node, node.children[node.branch(x)]
        node.learn(x, y, w, p.leaf_prediction, p.n_splits)
        if not node.active:
            return
        if p.max_depth is not None and node.depth >= p.max_depth:
            node.splitters = None
            self.n_active -= 1
            self.n_inactive += 1
            return
        seen = node.total_weight
        if seen - node.last_split_at >= p.grace_period:
            self._attempt_split(node, parent, None if parent is None else parent.branch(x))
            node.last_split_at = seen

    def _attempt_split(self, leaf: Leaf, parent: Branch | None, slot: int | None) -> None:
        """river ``HoeffdingTreeClassifier._attempt_to_split``."""
        if leaf.is_pure():
            return
        p = self.params
        majority = max(leaf.stats.values())
        if majority and majority / leaf.total_weight > p.max_share_to_split:
            suggestions = [SplitSuggestion()]  # one class dominates: only the null split
        else:
            suggestions = [SplitSuggestion()] if p.merit_preprune else []
            for feature, splitter in enumerate(leaf.splitters or []):
                suggestions.append(splitter.best_split(leaf.stats, feature, p.min_branch_fraction))
        suggestions.sort(key=lambda s: s.merit)
        if len(suggestions) < 2:
            should_split = len(suggestions) > 0
        else:
            classes = max(len(leaf.stats), 2)
            span = math.log2(classes)
            bound = math.sqrt((span * span * math.log(1.0 / p.delta)) / (2.0 * leaf.total_weight))
            gap = suggestions[-1].merit - suggestions[-2].merit
            should_split = gap > bound or bound < p.tau
        if not should_split:
            return
        decision = suggestions[-1]
        if decision.feature is None or decision.children is None:
            leaf.splitters = None  # pre-pruned: the null split won
            self.n_inactive += 1
            self.n_active -= 1
        else:
            left, right = (Leaf(stats, leaf.depth + 1) for stats in decision.children)
            branch = Branch(decision.feature, decision.threshold, leaf.depth, left, right)
            self.n_active += 1
            if parent is None or slot is None:
                self.root = branch
            else:
                parent.children[slot] = branch
        self._reactivate()

    def _reactivate(self) -> None:
        """What river's ``_enforce_size_limit`` does while its size estimates are still 0 (before
        the first ``memory_estimate_period``): every inactive leaf above ``max_depth`` becomes
        active again, with fresh splitters."""
        if self.n_inactive == 0 or self.root is None:
            return
        max_depth = self.params.max_depth
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Branch):
                stack.extend(node.children)
            elif not node.active and (max_depth is None or node.depth < max_depth):
                node.splitters = []
                self.n_active += 1
                self.n_inactive -= 1

    @property
    def n_leaves(self) -> int:
        return sum(1 for _ in self.leaves())

    @property
    def depth(self) -> int:
        return max((leaf.depth for leaf in self.leaves()), default=0)

    def leaves(self) -> list[Leaf]:
        out: list[Leaf] = []
        stack: list[Node] = [] if self.root is None else [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Branch):
                stack.extend(node.children)
            else:
                out.append(node)
        return out


def poisson(rate: float, rng: random.Random) -> int:
    """river ``utils.random.poisson``: Knuth's draw, the product of uniforms until ≤ e^−rate."""
    limit = math.exp(-rate)
    k = 0
    p = 1.0
    while p > limit:
        k += 1
        p *= rng.random()
    return k - 1


class OzaBagging:
    """Online bagging of ``n_models`` Hoeffding trees (river ``ensemble.BaggingClassifier``)."""

    __slots__ = ("models", "params", "rng", "seed")

    def __init__(self, n_models: int = 10, params: TreeParams | None = None, seed: int = 0) -> None:
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        self.params = params or TreeParams()
        self.seed = seed
        self.rng = random.Random(seed)
        self.models = [HoeffdingTree(self.params) for _ in range(n_models)]

    def learn(self, x: Sequence[float], y: int) -> None:
        for model in self.models:
            for _ in range(poisson(1.0, self.rng)):
                model.learn(x, y)

    def predict_proba(self, x: Sequence[float]) -> Distribution:
        votes: Distribution = {}
        for model in self.models:
            for cls, p in model.predict_proba(x).items():
                votes[cls] = p + votes.get(cls, 0)
        total = sum(votes.values())
        if total > 0:
            return {cls: p / total for cls, p in votes.items()}
        return votes


TreeKind = Literal["hoeffding_tree", "bagging"]
TREE_KINDS: tuple[TreeKind, ...] = ("hoeffding_tree", "bagging")


@dataclass(frozen=True, slots=True)
class TreeSpec:
    """Which tree model to build: one ``HoeffdingTree`` or ``OzaBagging`` of ``n_models`` trees
    drawn from ``seed``."""

    kind: TreeKind = "hoeffding_tree"
    tree: TreeParams = TreeParams()
    n_models: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TREE_KINDS:
            raise ValueError(f"kind must be one of {TREE_KINDS}, got {self.kind!r}")
        if self.n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {self.n_models}")

    def build(self) -> HoeffdingTree | OzaBagging:
        if self.kind == "bagging":
            return OzaBagging(self.n_models, self.tree, self.seed)
        return HoeffdingTree(self.tree)


class TreeLearner:
    """A tree model on 0/1 labels behind the online learner's interface: ``predict`` is
    P(class 1), NaN while the model has no answer (nothing learned yet: river's
    ``predict_proba_one`` is then empty, and its ``progressive_val_score`` skips the sample);
    ``learn`` takes the label as a float."""

    __slots__ = ("learned", "model", "spec")

    def __init__(self, spec: TreeSpec) -> None:
        self.spec = spec
        self.model = spec.build()
        self.learned = 0

    def predict(self, x: Iterable[float]) -> float:
        proba = self.model.predict_proba([float(v) for v in x])
        if sum(proba.values()) <= 0:
            return math.nan
        return proba.get(1, 0.0)

    def learn(self, x: Iterable[float], y: float) -> None:
        self.model.learn([float(v) for v in x], int(y))
        self.learned += 1

    def reset(self) -> None:
        self.model = self.spec.build()
        self.learned = 0
