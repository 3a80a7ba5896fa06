"""The ``nautilus`` command's entry point (and ``python -m nautilus_realtime``): checks that the
product's packages are its own, then hands over to ``engines.shell.cli``.

The product's import names (``protocol``, ``realtime``, ``engines``) are generic and another
distribution may ship the same ones (PyPI's ``realtime``, a dependency of ``supabase``, is a
top-level ``realtime`` package): installed into one environment, pip silently overwrites one
with the other. This module is the one name nothing else claims, and it imports nothing but the
standard library before the check, so a clash is one line naming the other distribution instead
of an ImportError from deep inside someone else's ``__init__``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

#: The product's top-level packages (``loadtest/`` runs from the checkout, it is not installed).
PACKAGES = ("protocol", "realtime", "engines")
DISTRIBUTION = "nautilus-realtime"
#: The exit code of a broken installation (as for a configuration error).
EXIT_CLASH = 2


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installation_problems(root: Path | None = None) -> list[str]:
    """Why the product's packages here are not (only) its own: empty when all is well.

    Each of ``PACKAGES`` must be found beside this module (not shadowed by one earlier on
    ``sys.path``), with its ``__init__.py`` present and, in an installed wheel, the one this
    release installed (its hash in the distribution's RECORD). Another distribution installed
    later overwrites that file: it is then named. Reads metadata and three small files; nothing
    of the packages is imported (a few milliseconds)."""
    root = (root or Path(__file__).resolve().parent).resolve()
    problems: list[str] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            problems.append(f"the Python package {name!r} is missing from {root}")
        elif Path(locations[0]).resolve().parent != root:
            problems.append(
                f"the Python package {name!r} is imported from {locations[0]}, not from {root}"
            )
        elif spec is None or spec.origin is None:  # a namespace: its __init__.py was removed
            problems.append(
                f"{root / name / '__init__.py'} is missing (removed by another distribution's "
                "uninstall?)"
            )
    if problems:
        return problems
    overwritten = _overwritten(root)
    owners = importlib.metadata.packages_distributions() if overwritten else {}
    for name in overwritten:
        others = sorted({o for o in owners.get(name, []) if _normalized(o) != DISTRIBUTION})
        problems += [
            f"the Python package {name!r} is also installed by the distribution "
            f"{other} {importlib.metadata.version(other)}: their files overwrite each other"
            for other in others
        ] or [f"{root / name / '__init__.py'} is not the file this release installed"]
    return problems


def _overwritten(root: Path) -> list[str]:
    """The packages whose ``__init__.py`` differs from the hash in this distribution's RECORD
    (none in a checkout: an editable install records no package files)."""
    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    recorded = {f.as_posix(): f.hash for f in files if f.hash is not None}
    found = []
    for name in PACKAGES:
        expected = recorded.get(f"{name}/__init__.py")
        if expected is None or expected.mode != "sha256":
            continue
        digest = hashlib.sha256((root / name / "__init__.py").read_bytes()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != expected.value:
            found.append(name)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    problems = installation_problems()
    if problems:
        print(
            f"nautilus: {problems[0]}; install Nautilus Realtime in its own virtual environment"
            " (python -m venv DIR && DIR/bin/pip install nautilus-realtime)"
            + (f" ({len(problems) - 1} more such problem(s))" if len(problems) > 1 else ""),
            file=sys.stderr,
        )
        return EXIT_CLASH
    from engines.shell.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
