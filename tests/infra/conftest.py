"""Prometheus's binaries for the infra tests: installed when missing, a failure when they cannot
be (never a skip: an alert rule or dashboard nobody checked is worse than a red test)."""

from __future__ import annotations

import subprocess

import pytest

from tests.infra.dashboards import INFRA

INSTALL = INFRA / "scripts" / "install-prometheus.sh"


@pytest.fixture(scope="session")
def binaries() -> None:
    """``prometheus`` and ``promtool`` on PATH (``make prometheus`` installs them)."""
    subprocess.run(["bash", str(INSTALL)], check=True, timeout=300)
