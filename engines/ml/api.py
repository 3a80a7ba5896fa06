"""ML REST: the model registry, predictions per model and symbol, walk-forward jobs.

* ``GET /ml/models`` — the model registry, ``models``: every online model (``source:
  online``; settings, features, label, per symbol: version, labels learned, drifts, prequential
  metrics), then every walk-forward model version (``source: walkforward``; name, version,
  ``created_ns``, job, training window, per-fold and mean metrics — ``service``'s docstring,
  "Model registry"); ``walkforward``: the jobs remembered;
* ``GET /ml/{model}/{symbol}/latest`` — the last published prediction (404 before the first);
* ``GET /ml/{model}/{symbol}/history?from=&to=&limit=&cursor=&version=`` — stored predictions
  by event time (each carries its model ``version``); an unknown model is a 400 naming
  ``model``. ``version`` (a positive integer, else 400 naming it) keeps that version's only: a
  page then reads at most ``VERSION_SCAN_ROWS`` stored rows in at most ``VERSION_SCAN_READS``
  store reads, so it may hold fewer than ``limit`` items (even none) while ``next_cursor`` is
  not null — follow it to the end. Online versions count from 1 again after a restart (models
  live in memory), so ``from``/``to`` tell one process's version 2 from another's;
* ``POST /ml/walkforward`` — cross-validated scikit-learn classifier (``estimator``: logistic,
  random_forest, kneighbors; ``params`` its constructor arguments) over posted rows ``{"x":
  [[...]], "y": [0|1, ...], "t1": [...]}`` (``t1[i]``: the row index its label resolves at,
  default ``i + horizon``), or over stored bars ``{"symbols": [...], "spec": "1d", "from",
  "to", "horizon"}`` (``core.daily_design`` per symbol, rows of all symbols in time order).
  ``scheme``: ``purged_kfold`` (AFML ch. 7, ``embargo`` a fraction of the rows) or
  ``walk_forward`` (expanding; ``max_train_size`` rolls it, ``test_size`` = refit every k rows,
  ``gap``); ``purge: false`` ignores label spans (the leaky baseline). Answers 202 with the job;
* ``GET /ml/jobs/{job}`` — ``status`` (running, done, failed), ``progress`` (folds done/total),
  ``result`` (per-fold and mean accuracy, log loss, AUC) or ``error``; once done, ``registered``
  names the model version it became (``{"model", "version"}``, listed by ``/ml/models``). A
  job fits ``walkforward_jobs`` folds at once on threads (``NAUTILUS_ML_WALKFORWARD_JOBS``,
  default one per CPU); its result is the sequential run's.

A 400 names the field at fault: ``x`` (ragged, non-finite, too many rows), ``y`` (length, not
0/1), ``t1``, ``estimator``, ``params``, ``n_splits`` (more splits than the rows allow),
``symbols``, ``spec``, ``from``/``to``, ``model``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import falcon.asgi
import msgspec
import numpy as np

from engines.ml import core
from engines.shell import Route, ValidationError
from engines.shell.errors import NotFoundError
from engines.shell.openapi import stored_answer
from engines.shell.params import query_int
from engines.shell.rest import HistoryResource, LatestResource, TimeRange, read_body
from protocol.records import Bar
from realtime.storage import MAX_PAGE_ROWS, Page, RecordStore

if TYPE_CHECKING:
    from engines.ml.service import MlEngine

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

#: A ``?version=`` history page reads at most this many stored rows, in at most this many reads.
VERSION_SCAN_ROWS = MAX_PAGE_ROWS
VERSION_SCAN_READS = 16


class WalkForwardBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    x: list[list[float]] | None = None
    y: list[int] | None = None
    t1: list[int] | None = None
    symbols: list[str] | None = None
    spec: str = "1d"
    from_ns: int | None = msgspec.field(name="from", default=None)
    to_ns: int | None = msgspec.field(name="to", default=None)
    horizon: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 1
    scheme: Literal["purged_kfold", "walk_forward"] = "purged_kfold"
    n_splits: Annotated[int, msgspec.Meta(ge=2, le=100)] = 5
    embargo: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.0
    purge: bool = True
    test_size: PositiveInt | None = None
    max_train_size: PositiveInt | None = None
    gap: Annotated[int, msgspec.Meta(ge=0)] = 0
    estimator: str = "logistic"
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelsResource:
    """``GET /ml/models``."""

    def __init__(self, engine: MlEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._engine.registry()


class PerModel:
    """``GET /ml/{model}/{symbol}/latest|history``: the model's resource, 400 for an unknown
    model."""

    def __init__(self, resources: dict[str, Any]) -> None:
        self._resources = resources

    @property
    def response_type(self) -> Any:
        """What the models' resources answer (every model's store holds ``ml`` payloads)."""
        return stored_answer(next(iter(self._resources.values()), None))

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model: str, symbol: str
    ) -> None:
        resource = self._resources.get(model)
        if resource is None:
            known = ", ".join(self._resources)
            raise ValidationError(f"unknown model {model!r} (known: {known})", parameter="model")
        await resource.on_get(req, resp, symbol=symbol)


class VersionedHistory(HistoryResource[dict[str, Any]]):
    """``GET /ml/{model}/{symbol}/history``, ``?version=`` keeping one model version's."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        version = query_int(req, "version", minimum=1)
        if version is None:
            await super().on_get(req, resp, **params)
            return
        key = params[self._key]
        page = await version_page(self._records, key, TimeRange.from_request(req), version)
        resp.media = {self._key: key, "items": page.items, "next_cursor": page.next_cursor}


async def version_page(
    records: RecordStore[dict[str, Any]], key: str, span: TimeRange, version: int
) -> Page[dict[str, Any]]:
    """The predictions of ``version`` in ``span``: each read asks for no more rows than the
    page still lacks, so every row read is either kept or passed, and the store's cursor after
    the last read is the page's ``next_cursor`` (bounded: ``VERSION_SCAN_ROWS``/``_READS``)."""
    items: list[dict[str, Any]] = []
    cursor = span.cursor
    scanned = 0
    for _ in range(VERSION_SCAN_READS):
        wanted = min(span.limit - len(items), VERSION_SCAN_ROWS - scanned)
        page = await records.query(key, span.from_ns, span.to_ns, wanted, cursor)
        items += [p for p in page.items if p.get("version") == version]
        scanned += len(page.items)
        cursor = page.next_cursor
        if cursor is None or len(items) >= span.limit or scanned >= VERSION_SCAN_ROWS:
            break
    return Page(items, cursor)


class JobResource:
    """``GET /ml/jobs/{job}``."""

    def __init__(self, engine: MlEngine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, job: str) -> None:
        found = self._engine.jobs.get(job)
        if found is None:
            raise NotFoundError(f"no walk-forward job {job!r}", parameter="job")
        resp.media = dict(found)


class WalkForwardResource:
    """``POST /ml/walkforward``: validate, build the rows and splits, start the job."""

    body_type = WalkForwardBody

    def __init__(self, engine: MlEngine) -> None:
        self._engine = engine
        self._max_rows = engine.config.max_walkforward_rows

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, WalkForwardBody)
        if (body.x is None) == (body.symbols is None):
            raise ValidationError(
                "give either x and y, or symbols with from and to", parameter="body"
            )
        try:
            core.make_estimator(body.estimator, body.params)
        except ValueError as exc:
            field = "estimator" if body.estimator not in core.ESTIMATORS else "params"
            raise ValidationError(str(exc), parameter=field) from None
        if body.x is not None:
            x, y, t0, t1 = self._posted(body)
        else:
            x, y, t0, t1 = await self._stored(body)
        window = _window(body, t0, t1)
        if not body.purge:
            t1 = t0
        try:
            if body.scheme == "purged_kfold":
                splits = core.purged_kfold_splits(t1, body.n_splits, body.embargo, t0=t0)
            else:
                splits = core.walk_forward_splits(
                    len(y), body.n_splits, gap=body.gap, test_size=body.test_size,
                    max_train_size=body.max_train_size, t1=t1, t0=t0,
                )  # fmt: skip
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="n_splits") from None
        for k, (train, _) in enumerate(splits):
            if train.size == 0 or np.unique(y[train]).size < 2:
                raise ValidationError(
                    f"fold {k} would train on a single class (or nothing): fewer splits, a "
                    "smaller embargo or more rows",
                    parameter="n_splits",
                )
        description = {"estimator": body.estimator, "params": body.params,
                       "scheme": body.scheme, "rows": int(y.size), "purge": body.purge,
                       "embargo": body.embargo, "window": window}  # fmt: skip
        jobs = self._engine.config.fold_jobs()
        work = _work(x, y, splits, body.estimator, body.params, jobs)
        job = self._engine.submit_job(description, work, total=len(splits))
        resp.status = falcon.HTTP_202
        resp.media = dict(job)

    def _posted(self, body: WalkForwardBody) -> tuple[Any, Any, Any, Any]:
        assert body.x is not None
        if body.y is None:
            raise ValidationError("y is required with x", parameter="y")
        n = len(body.x)
        if n == 0 or n > self._max_rows:
            raise ValidationError(f"x must hold 1..{self._max_rows} rows", parameter="x")
        width = len(body.x[0])
        if width == 0:
            raise ValidationError("x rows must hold at least one feature", parameter="x[0]")
        for i, row in enumerate(body.x):
            if len(row) != width:
                raise ValidationError(
                    f"x[{i}] has {len(row)} values, {width} expected (ragged)", parameter=f"x[{i}]"
                )
        x = np.asarray(body.x, dtype=np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise ValidationError(f"x[{i}][{j}] is not finite", parameter=f"x[{i}][{j}]")
        if len(body.y) != n:
            raise ValidationError(f"y has {len(body.y)} labels for {n} rows", parameter="y")
        y = np.asarray(body.y, dtype=np.int64)
        if not np.isin(y, (0, 1)).all():
            raise ValidationError("y labels must be 0 or 1", parameter="y")
        t0 = np.arange(n, dtype=np.int64)
        if body.t1 is None:
            t1 = t0 + body.horizon
        else:
            if len(body.t1) != n:
                raise ValidationError(f"t1 has {len(body.t1)} values for {n} rows", parameter="t1")
            t1 = np.asarray(body.t1, dtype=np.int64)
            if np.any(t1 < t0):
                i = int(np.flatnonzero(t1 < t0)[0])
                raise ValidationError(f"t1[{i}] = {t1[i]} is before its row", parameter="t1")
        return x, y, t0, t1

    async def _stored(self, body: WalkForwardBody) -> tuple[Any, Any, Any, Any]:
        assert body.symbols is not None
        if not body.symbols or not all(body.symbols):
            raise ValidationError("symbols must be non-empty names", parameter="symbols")
        for name, value in (("from", body.from_ns), ("to", body.to_ns)):
            if value is None:
                raise ValidationError(f"{name} (ns since the epoch) is required", parameter=name)
        assert body.from_ns is not None and body.to_ns is not None
        if body.horizon < 1:
            raise ValidationError("horizon must be >= 1 bar for stored bars", parameter="horizon")
        series = {}
        total = 0
        for symbol in body.symbols:
            rows = await self._bars(symbol, body.spec, body.from_ns, body.to_ns)
            total += len(rows)
            if total > self._max_rows:
                raise ValidationError(f"more than {self._max_rows} bars in range", parameter="to")
            closes = np.array([r.close for r in rows])
            series[symbol] = (closes, np.array([r.start_ns for r in rows], dtype=np.int64))
        try:
            design = core.pooled_daily_design(series, body.horizon)
        except ValueError as exc:
            raise ValidationError(str(exc), parameter="symbols") from None
        return design.x, design.y, design.t0, design.t1

    async def _bars(self, symbol: str, spec: str, from_ns: int, to_ns: int) -> list[Bar]:
        rows: list[Bar] = []
        cursor: str | None = None
        try:
            while True:
                page = await self._engine.storage.store.fetch_bars(
                    symbol, spec, from_ns, to_ns, MAX_PAGE_ROWS, cursor
                )
                rows += page.items
                cursor = page.next_cursor
                if cursor is None or len(rows) > self._max_rows:
                    return rows
        except ValueError as exc:  # the store's InvalidQuery (a bad spec or range)
            raise ValidationError(str(exc), parameter="spec") from None


def _window(body: WalkForwardBody, t0: Any, t1: Any) -> dict[str, Any]:
    """The training window of a job: the rows; over stored bars also the symbols, the spec, the
    first row's bar time ``from_ns`` and the last label's ``to_ns``."""
    window: dict[str, Any] = {"rows": int(t0.size)}
    if body.symbols is not None:
        window |= {"symbols": list(body.symbols), "spec": body.spec,
                   "from_ns": int(t0.min()), "to_ns": int(t1.max())}  # fmt: skip
    return window


def _work(
    x: Any,
    y: Any,
    splits: list[core.Split],
    estimator: str,
    params: dict[str, Any],
    n_jobs: int,
) -> Callable[[Callable[[int], None]], dict[str, Any]]:
    def run(progress: Callable[[int], None]) -> dict[str, Any]:
        folds = core.walk_forward(x, y, splits, estimator, params, progress, n_jobs=n_jobs)
        aucs = [f.auc for f in folds if f.auc is not None]
        return {
            "folds": [f.to_payload() for f in folds],
            "mean": {
                "accuracy": float(np.mean([f.accuracy for f in folds])),
                "log_loss": float(np.mean([f.log_loss for f in folds])),
                "auc": float(np.mean(aucs)) if aucs else None,
            },
        }

    return run


def routes(engine: MlEngine) -> Sequence[Route]:
    latest = {m: LatestResource(store) for m, store in engine.predictions.items()}
    history = {m: VersionedHistory(store) for m, store in engine.predictions.items()}
    return (
        ("/ml/models", ModelsResource(engine)),
        ("/ml/walkforward", WalkForwardResource(engine)),
        ("/ml/jobs/{job}", JobResource(engine)),
        ("/ml/{model}/{symbol}/latest", PerModel(latest)),
        ("/ml/{model}/{symbol}/history", PerModel(history)),
    )
