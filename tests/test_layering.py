"""The layers import only downwards (STYLE.md, conventions 1 and 2; issue 8).

* ``protocol/`` imports no I/O (tests/protocol/test_purity.py);
* ``realtime/`` imports nothing from ``engines/``: the composition root lives in
  ``engines/shell/platform.py`` and ``engines/shell/cli.py``;
* every ``engines/*/core.py`` is pure: no falcon, no asyncio, no realtime, no uvicorn;
* no engine imports another engine's ``service`` or ``api`` (shared machinery is the shell's;
  an engine may read another's pure ``core``, ``config`` or declared bodies). One exception:
  ``engines/backtesting/replay.py`` is the composition root of a backtest (as
  ``engines/shell/platform.py`` is of the live platform) and imports the ``service`` modules of
  Strategy, Risk and Portfolio, so a backtest runs the live engines' own objects
  (docs/architecture.md, "Live and backtest are one code path"); never their ``api``.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (importing file, engine whose ``service`` it may import): composition roots besides the shell.
COMPOSITION_ROOTS = {
    ("engines/backtesting/replay.py", engine) for engine in ("strategy", "risk", "portfolio")
}
CORE_FORBIDDEN = ("falcon", "asyncio", "realtime", "uvicorn", "websockets", "asyncpg", "redis")


def module_imports(source: str, filename: str) -> list[str]:
    """Every module ``source`` imports, at any depth (lazy imports inside functions too)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += (f"{node.module}.{alias.name}" for alias in node.names)
    return found


@functools.cache
def _imports_of_tree() -> dict[str, list[str]]:
    """Every file's imports, parsed in a fresh interpreter: CPython 3.11 before 3.11.8 can leave
    ``ast``'s recursion bookkeeping wrong in a long process ("SystemError: AST constructor
    recursion depth mismatch", python/cpython gh-106905), which a full suite run did hit here."""
    program = (
        "import json, sys; from pathlib import Path; from tests.test_layering import *;"
        "print(json.dumps({p: module_imports(Path(p).read_text(), p) for p in sys.argv[1:]}))"
    )
    files = [
        str(p) for top in ("protocol", "realtime", "engines") for p in (ROOT / top).rglob("*.py")
    ]
    done = subprocess.run(
        [sys.executable, "-c", program, *files],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    parsed: dict[str, list[str]] = json.loads(done.stdout)
    return parsed


def imports(path: Path) -> Iterator[str]:
    """Every module ``path`` (under protocol/, realtime/ or engines/) imports."""
    yield from _imports_of_tree()[str(path)]


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_realtime_imports_no_engine() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "realtime").rglob("*.py")
        for module in imports(path)
        if under(module, "engines")
    ]
    assert found == []


def test_engine_cores_are_pure() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "engines").glob("*/core.py")
        for module in imports(path)
        if any(under(module, bad) for bad in CORE_FORBIDDEN)
    ]
    assert found == []


def test_no_engine_imports_another_engines_service_or_api() -> None:
    found = []
    for path in (ROOT / "engines").glob("*/*.py"):
        own = path.parent.name
        for module in imports(path):
            parts = module.split(".")
            foreign = (
                own != "shell"  # the composition root may import every engine
                and len(parts) >= 3
                and parts[0] == "engines"
                and parts[1] not in (own, "shell")
            )
            if (
                foreign
                and parts[2] == "service"
                and ((str(path.relative_to(ROOT)), parts[1]) in COMPOSITION_ROOTS)
            ):
                continue
            if foreign and parts[2] in ("service", "api"):
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    assert found == []


def test_the_layering_test_sees_imports() -> None:
    """The checks above would pass vacuously if ``imports`` found nothing."""
    assert "engines.vpin.core" in set(imports(ROOT / "engines" / "vpin" / "service.py"))
    assert any(under(m, "realtime") for m in imports(ROOT / "engines" / "shell" / "server.py"))
