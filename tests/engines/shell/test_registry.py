from __future__ import annotations

import sys

import pytest

from engines.shell import Engine
from engines.shell.registry import (
    ENGINE_PORTS,
    ENGINES,
    HUB_PORT,
    EngineSpec,
    UnknownEngine,
    engine_spec,
)
from tests.engines.shell.vwap_engine import VwapEngine


def test_ports_are_the_designs_table() -> None:
    # docs/architecture.md, "Processes and ports": the original deployment's ports.
    assert ENGINE_PORTS == {
        "analytics": 8100, "backtesting": 8110, "risk": 8200, "factor": 8300, "ml": 8400,
        "features": 8500, "strategy": 8700, "marketdata": 8800, "portfolio": 8900,
        "collateral": 9000, "vpin": 10000, "evpin": 10001,
    }  # fmt: skip
    assert HUB_PORT == 8600
    assert HUB_PORT not in ENGINE_PORTS.values()
    assert len(set(ENGINE_PORTS.values())) == len(ENGINE_PORTS)


def test_registry_holds_only_engines_whose_code_exists() -> None:
    for name, spec in ENGINES.items():
        assert spec.name == name
        assert issubclass(spec.load(), Engine)


def test_spec_imports_lazily_and_checks_the_class() -> None:
    spec = EngineSpec("analytics", "tests.engines.shell.not_written_yet:AnalyticsEngine")
    assert spec.port == 8100
    assert spec.config_defaults() == {"name": "analytics", "port": 8100}
    assert "tests.engines.shell.not_written_yet" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        spec.load()
    assert EngineSpec("vpin", "tests.engines.shell.vwap_engine:VwapEngine").load() is VwapEngine
    with pytest.raises(TypeError, match="not an Engine subclass"):
        EngineSpec("vpin", "tests.engines.shell.vwap_engine:VwapConfig").load()


def test_bad_specs_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="no port in ENGINE_PORTS"):
        EngineSpec("hub", "realtime.hub:Hub")
    with pytest.raises(ValueError, match="module:Class"):
        EngineSpec("vpin", "engines.vpin.service.VpinEngine")
    registry = {"vpin": EngineSpec("vpin", "tests.engines.shell.vwap_engine:VwapEngine")}
    assert engine_spec("vpin", registry) is registry["vpin"]
    with pytest.raises(UnknownEngine, match=r"unknown engine 'vpn' \(known: vpin\)"):
        engine_spec("vpn", registry)
