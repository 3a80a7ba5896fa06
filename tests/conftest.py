"""Suite-wide settings: Hypothesis profiles and the pure (fast) layer marker.

Hypothesis runs derandomized under ``CI=true`` (the ``ci`` profile: the same examples on every
run, so a red CI is reproducible) and random locally (``dev``), where new seeds keep finding
what derandomized runs cannot. ``HYPOTHESIS_PROFILE`` picks one explicitly.

``make test-fast`` runs ``-m pure``: the protocol and every engine's pure core (bytes or arrays in,
asserts out, no services), in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)

TESTS = Path(__file__).resolve().parent


def is_pure(path: Path) -> bool:
    """Protocol tests and engines' core tests need no services and no sockets."""
    relative = path.resolve().relative_to(TESTS)
    return (
        relative.parts[0] == "protocol"
        or (relative.parts[0] == "engines" and relative.name.startswith("test_core"))
        or relative.name in ("test_layering.py", "test_records.py")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_pure(Path(str(item.path))):
            item.add_marker(pytest.mark.pure)
