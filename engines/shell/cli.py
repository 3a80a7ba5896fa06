"""``nautilus``: the one command line. Reads the environment once, here, per process.

Part of the composition root (with ``engines.shell.platform``): it may import every engine
through the registry; ``realtime/`` never imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from realtime import __version__
from realtime.allocator import fix_mmap_threshold
from realtime.config import ConfigError, describe_settings
from realtime.supervisor import die_with_supervisor

DEFAULT_DSN_VAR = "NAUTILUS_DB_DSN"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows: the standard loop
        return None
    return uvloop.new_event_loop


def _run_async(coro_factory: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return int(_run_async_value(coro_factory))


def _cmd_up(args: argparse.Namespace, hub_only: bool = False) -> int:
    from engines.marketdata.service import FeedSource
    from engines.shell.platform import Settings, run_embedded
    from realtime.bus import BusUnavailable
    from realtime.clock import SystemClock
    from realtime.distributed import choose_bus, open_bus
    from realtime.ports import PortInUse
    from realtime.storage import StoreUnavailable

    environ = dict(os.environ)
    if getattr(args, "distributed", False):
        return _cmd_up_distributed(args, environ)
    hub = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    feed: dict[str, Any] = {}
    if getattr(args, "feed", None):
        feed["feed"] = FeedSource(args.feed)
    if getattr(args, "speed", None) is not None:
        feed["speed"] = args.speed
    try:
        settings = Settings.from_env(environ, **hub)
        choice = choose_bus(environ)
    except ConfigError as exc:
        print(f"nautilus: {exc}", file=sys.stderr)
        return 2
    if hub_only:
        _warn_if_alone(environ, choice.shared, "nautilus hub", "receives from no other process")

    async def run() -> int:
        clock = SystemClock()
        try:
            bus = await open_bus(choice, clock)
        except BusUnavailable as exc:
            print(f"nautilus {args.command}: {exc}", file=sys.stderr)
            return 1
        try:
            return await run_embedded(
                settings,
                environ,
                with_engines=not hub_only,
                engine_overrides={"marketdata": feed},
                bus=bus,
                clock=clock,
            )
        except PortInUse as exc:
            print(f"nautilus {args.command}: {exc}", file=sys.stderr)
            return 1
        except StoreUnavailable as exc:  # an engine that rebuilds from the store found none
            print(f"nautilus {args.command}: cannot start {exc}", file=sys.stderr)
            return 1
        except ConfigError as exc:  # an engine's own settings, read as the engines are built
            print(f"nautilus: {exc}", file=sys.stderr)
            return 2

    return _run_async(run)


def _warn_if_alone(environ: Mapping[str, str], shared: bool, command: str, what: str) -> None:
    """One line on stderr when a single component runs on an in-process bus it was not told to
    use: it is alone. ``NAUTILUS_BUS_URL=memory`` says so on purpose (and silences this)."""
    from realtime.distributed import BUS_URL_VARIABLE, MEMORY

    if shared or environ.get(BUS_URL_VARIABLE, "").strip() == MEMORY:
        return
    print(
        f"{command}: warning: {BUS_URL_VARIABLE} is unset, so it runs on its own in-process bus"
        f" and {what}; set {BUS_URL_VARIABLE}=redis://HOST:6379/0 to share one"
        f" ({BUS_URL_VARIABLE}={MEMORY} to run alone on purpose)",
        file=sys.stderr,
    )


def _cmd_up_distributed(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from engines.shell.platform import run_distributed

    if args.feed:
        environ["NAUTILUS_MARKETDATA_FEED"] = args.feed
    if args.speed is not None:
        environ["NAUTILUS_MARKETDATA_SPEED"] = str(args.speed)
    if args.port is not None:
        environ["NAUTILUS_HUB_PORT"] = str(args.port)
    if args.host is not None:
        environ["NAUTILUS_HUB_HOST"] = args.host
    engines = None if args.engines is None else [n for n in args.engines.split(",") if n]
    return _run_async(lambda: run_distributed(environ, hubs=args.hubs, engines=engines))


def _cmd_engine(args: argparse.Namespace) -> int:
    from engines.shell.server import main_engine
    from realtime.distributed import choose_bus, open_bus

    try:
        choice = choose_bus(os.environ)
    except ConfigError as exc:
        print(f"nautilus engine {args.name}: {exc}", file=sys.stderr)
        return 2
    _warn_if_alone(
        os.environ, choice.shared, f"nautilus engine {args.name}", "talks to no other process"
    )
    return main_engine(args.name, args.rest, bus_factory=lambda clock: open_bus(choice, clock))


#: ``nautilus db`` exit codes besides 0: a failure (a file's SQL failed, PostgreSQL cannot be
#: reached), a usage error, and (``status``) files pending or changed since they were applied.
DB_EXIT_FAILED = 1
DB_EXIT_USAGE = 2
DB_EXIT_PENDING = 3
#: A CLI run gives up on an unreachable PostgreSQL after this long (asyncpg's default is 60 s).
DB_CONNECT_TIMEOUT_S = 10.0


def _cmd_db(args: argparse.Namespace) -> int:
    """``nautilus db migrate|status``: every failure is one line (the file and PostgreSQL's
    error, or why the database could not be reached), never a traceback."""
    import asyncpg

    from realtime.bus.redis import redacted_url
    from realtime.storage.migrations import MigrationError

    command = f"nautilus db {args.db_command}"
    dsn = args.dsn or os.environ.get(DEFAULT_DSN_VAR)
    if not dsn:
        print(f"{command}: set {DEFAULT_DSN_VAR} or pass --dsn", file=sys.stderr)
        return DB_EXIT_USAGE
    where = f"{redacted_url(dsn)} schema {args.schema}"
    try:
        if args.db_command == "migrate":
            return _run_async(lambda: _db_migrate(dsn, args.schema, where))
        return _run_async(lambda: _db_status(dsn, args.schema, where, as_json=args.json))
    except MigrationError as exc:
        error = str(exc)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        error = f"PostgreSQL {where}: {type(exc).__name__}: {detail}"
    print(f"{command}: {error}", file=sys.stderr)
    if args.db_command == "status" and args.json:
        import orjson

        print(orjson.dumps({"database": where, "up_to_date": False, "error": error}).decode())
    return DB_EXIT_FAILED


async def _db_connect(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn, timeout=DB_CONNECT_TIMEOUT_S)


async def _db_migrate(dsn: str, schema: str, where: str) -> int:
    from realtime.storage.migrations import migrate

    applied = await migrate(dsn, schema, connect=lambda: _db_connect(dsn))
    if applied:
        print(f"{where}: applied {', '.join(f'{v:03d}' for v in applied)}")
    else:
        print(f"{where}: up to date")
    return 0


async def _db_status(dsn: str, schema: str, where: str, *, as_json: bool) -> int:
    import orjson

    from realtime.storage.migrations import migration_status

    states = await migration_status(dsn, schema, connect=lambda: _db_connect(dsn))
    up_to_date = all(s.state == "applied" for s in states if s.state != "unknown")
    if as_json:
        document = {
            "database": where,
            "up_to_date": up_to_date,
            "migrations": [
                {
                    "version": s.version,
                    "file": s.file_name,
                    "state": s.state,
                    "applied_at": s.applied_at.isoformat() if s.applied_at else None,
                }
                for s in states
            ],
        }
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        print(where)
        width = max((len(s.file_name) for s in states), default=0)
        for s in states:
            when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else ""
            print(f"  {s.file_name:<{width}}  {s.state:<8} {when}".rstrip())
        pending = sum(s.state == "pending" for s in states)
        changed = sum(s.state == "changed" for s in states)
        if up_to_date:
            print("up to date")
        if pending:
            print(f"{pending} pending: nautilus db migrate applies them")
        if changed:
            print(f"{changed} changed after being applied: add a new migration instead")
    return 0 if up_to_date else DB_EXIT_PENDING


#: Settings read outside any settings class (the CLI itself, and the bus choice).
LOG_PREFIX = "NAUTILUS_LOG_"
PROCESS_SETTINGS = (
    ("NAUTILUS_LOG_LEVEL", "str", "info", "debug, info, warning or error (any case)"),
    ("NAUTILUS_LOG_FORMAT", "str", "text", "text, or json (one object per line)"),
)


def _cmd_config(args: argparse.Namespace) -> int:
    """Every variable: type, default, the effective value and where it came from (env or
    default); ``--json`` for tools. ``NAUTILUS_BUS_URL`` unset means the in-process bus."""
    import orjson

    from engines.shell.config import describe_config, env_prefix
    from engines.shell.registry import ENGINES, start_order
    from engines.shell.status import STATUS_PREFIX, StatusConfig
    from realtime.bus.redis import RedisBusConfig
    from realtime.config import ConfigVariable
    from realtime.distributed import BUS_PREFIX, BUS_URL_VARIABLE, HUB_PREFIX, SUPERVISOR_PREFIX
    from realtime.hub import HubConfig
    from realtime.storage import STORAGE_PREFIX, StorageConfig
    from realtime.supervisor import SupervisorConfig

    rows = [ConfigVariable(*row) for row in PROCESS_SETTINGS]
    rows += describe_settings(HubConfig, HUB_PREFIX)
    rows += describe_settings(StorageConfig, STORAGE_PREFIX)
    rows += [
        ConfigVariable(r.variable, r.type, "", "unset: the in-process bus; set: this Redis")
        if r.variable == BUS_URL_VARIABLE
        else r
        for r in describe_settings(RedisBusConfig, BUS_PREFIX)
    ]
    rows += describe_settings(SupervisorConfig, SUPERVISOR_PREFIX)
    rows += describe_settings(StatusConfig, STATUS_PREFIX)
    for spec in (ENGINES[name] for name in start_order(ENGINES)):
        rows += describe_config(spec.load().config_type, defaults=spec.config_defaults())
    environ = os.environ
    known = sorted(r.variable for r in rows)
    prefixes = (LOG_PREFIX, HUB_PREFIX, STORAGE_PREFIX, BUS_PREFIX, SUPERVISOR_PREFIX,
                STATUS_PREFIX, *(env_prefix(name) for name in ENGINES))  # fmt: skip
    for variable in sorted(environ):  # a typo under a known prefix, as every component refuses
        if variable.startswith(prefixes) and variable not in known:
            near = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]}?)" if near else ""
            print(f"nautilus config: {variable}: unknown setting{hint}", file=sys.stderr)
            return 2
    table = [
        {
            "variable": r.variable,
            "type": r.type,
            "default": r.default,
            "value": environ.get(r.variable, r.default),
            "source": "env" if r.variable in environ else "default",
            "help": r.help,
        }
        for r in rows
    ]
    if args.json:
        print(orjson.dumps(table, option=orjson.OPT_INDENT_2).decode())
        return 0
    widths = {k: max(len(k), *(len(repr(t[k]) if k == "value" else t[k]) for t in table))
              for k in ("variable", "type", "value")}  # fmt: skip
    for t in table:
        value = repr(t["value"])
        print(
            f"{t['variable']:<{widths['variable']}}  {t['type']:<{widths['type']}}  "
            f"{value:<{widths['value']}}  {t['source']:<7}  {t['help']}"
        )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    """Ask the hub's ``/status``; when the hub does not answer, poll the engines directly (at
    their configured ports) and say the hub is down. Exit 0 only when everything is up."""
    import orjson

    from engines.shell.status import (
        STATUS_PREFIX,
        StatusConfig,
        collect_status,
        configured_targets,
        render_text,
    )
    from realtime.clock import SystemClock
    from realtime.config import load_settings
    from realtime.http import get_json

    environ = dict(os.environ)
    try:
        config = load_settings(StatusConfig, environ, STATUS_PREFIX)
    except ConfigError as exc:
        print(f"nautilus status: {exc}", file=sys.stderr)
        return 2
    url = args.url or f"http://127.0.0.1:{environ.get('NAUTILUS_HUB_PORT', '8600')}"

    async def run() -> dict[str, Any]:
        # the hub polls every engine within the config's timeout: allow for that, and a bit
        answer = await get_json(f"{url.rstrip('/')}/status", timeout_s=args.timeout)
        if answer.error is None and isinstance(answer.body, dict) and "engines" in answer.body:
            return answer.body
        reason = answer.error or f"malformed /status (HTTP {answer.status})"
        return await collect_status(
            configured_targets(environ, config), config, clock=SystemClock(), hub=None,
            hub_error=f"{url}: {reason}",
        )  # fmt: skip

    status = _run_async_value(run)
    if args.json:
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_text(status))
    return 0 if status["ok"] else 1


def _cmd_backtest(args: argparse.Namespace) -> int:
    from engines.backtesting.cli import run_config

    return run_config(args.config, out=args.out, report=args.report, environ=os.environ)


def _run_async_value(coro_factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro_factory())


def _feed_choices() -> list[str]:
    """From the feed enum itself, so a new feed is offered without touching the CLI."""
    from engines.marketdata.service import FeedSource

    return [feed.value for feed in FeedSource]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nautilus", description="Nautilus Realtime")
    parser.add_argument("--version", action="version", version=f"nautilus-realtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_hub_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", help="hub interface (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="hub port (default 8600)")

    up = sub.add_parser("up", help="embedded platform: hub and every engine in one process")
    up.add_argument("--feed", choices=_feed_choices(), help="MarketData feed (default: spy replay)")
    up.add_argument("--speed", type=float, help="replay speed (1 = as recorded, 0 = max)")
    add_hub_flags(up)
    up.add_argument(
        "--distributed",
        action="store_true",
        help="one process per engine and --hubs hubs on the Redis bus, under a supervisor",
    )
    up.add_argument(
        "--hubs", type=int, default=1, help="distributed: hubs on ports 8600, 8601, ..."
    )
    up.add_argument(
        "--engines", help="distributed: comma-separated engines to run (default: all registered)"
    )
    add_hub_flags(sub.add_parser("hub", help="the WebSocket hub alone, on the configured bus"))
    engine = sub.add_parser("engine", help="run one engine: nautilus engine NAME [--port P]")
    engine.add_argument("name")
    engine.add_argument("rest", nargs=argparse.REMAINDER)
    db = sub.add_parser("db", help="database tasks")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser(
        "migrate", help="apply pending SQL migrations (shipped in realtime/storage/sql)"
    )
    db_status = db_sub.add_parser(
        "status",
        help="each migration applied / pending / changed; exit 0 up to date, 3 pending or "
        "changed, 1 PostgreSQL unreachable",
    )
    db_status.add_argument("--json", action="store_true", help="as JSON (for tools)")
    for db_command in (migrate, db_status):
        db_command.add_argument("--dsn", help=f"PostgreSQL DSN (default ${DEFAULT_DSN_VAR})")
        db_command.add_argument("--schema", default="nautilus", help="default nautilus")
    config = sub.add_parser(
        "config", help="every configuration variable: type, effective value and its source"
    )
    config.add_argument("--json", action="store_true", help="as JSON (for tools)")
    sub.add_parser("version", help="print the version")
    status = sub.add_parser(
        "status", help="every engine, the hub, bus and storage; exit 0 only when all are up"
    )
    status.add_argument("--url", help="the hub (default http://127.0.0.1:$NAUTILUS_HUB_PORT)")
    status.add_argument("--json", action="store_true", help="the raw /status JSON")
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)"
    )
    backtest = sub.add_parser(
        "backtest", help="run one backtest job from a TOML or JSON file, with a progress bar"
    )
    backtest.add_argument("config", help="the POST /backtests body as .toml or .json")
    backtest.add_argument("--out", help="write the result document here (JSON)")
    backtest.add_argument("--report", help="write the HTML report here")
    return parser


#: Libraries whose per-connection / per-request / probe lines are DEBUG detail, not news.
CHATTY_LOGGERS = ("websockets", "uvicorn", "uvicorn.error", "jax._src.xla_bridge", "asyncio")
LOG_FORMATS = ("text", "json")


class JsonLogFormatter(logging.Formatter):
    """``NAUTILUS_LOG_FORMAT=json``: one JSON object per line (time, level, logger, message)."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(environ: Mapping[str, str]) -> None:
    """``NAUTILUS_LOG_LEVEL`` (any case: debug, info, warning, error) and
    ``NAUTILUS_LOG_FORMAT`` (text | json). Below DEBUG, chatty libraries log warnings only."""
    level_name = environ.get("NAUTILUS_LOG_LEVEL", "info").strip().upper()
    level = logging.getLevelNamesMapping().get(level_name)
    if level is None:
        raise ConfigError(
            "NAUTILUS_LOG_LEVEL",
            f"expected debug, info, warning or error, got {level_name.lower()!r}",
        )
    log_format = environ.get("NAUTILUS_LOG_FORMAT", "text").strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError("NAUTILUS_LOG_FORMAT", f"expected text or json, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if level > logging.DEBUG:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    die_with_supervisor()  # a supervised hub or engine goes when its supervisor goes
    args = _parser().parse_args(argv)
    try:
        configure_logging(os.environ)
        fix_mmap_threshold(os.environ)  # before the platform's threads allocate anything large
    except ConfigError as exc:
        print(f"nautilus: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        # Ctrl-C outside a running platform's own handler (imports, start, the event loop's
        # close): the exit code of an interrupt, without a traceback
        return EXIT_INTERRUPTED


#: 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        print(f"nautilus-realtime {__version__}")
        return 0
    if args.command == "up":
        return _cmd_up(args)
    if args.command == "hub":
        return _cmd_up(args, hub_only=True)
    if args.command == "engine":
        return _cmd_engine(args)
    if args.command == "db":
        return _cmd_db(args)
    if args.command == "status":
        return _cmd_status(args)
    if args.command == "backtest":
        return _cmd_backtest(args)
    return _cmd_config(args)


if __name__ == "__main__":
    sys.exit(main())
