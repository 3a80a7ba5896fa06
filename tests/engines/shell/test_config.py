from __future__ import annotations

import enum
import pathlib
from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from engines.shell.config import ConfigError, EngineConfig, describe_config, load_config


class Speed(enum.StrEnum):
    REALTIME = "1x"
    MAX = "max"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedConfig(EngineConfig):
    name: str = field(default="marketdata", metadata={"env": False})
    symbols: tuple[str, ...] = field(default=("SPY",), metadata={"help": "symbols to replay"})
    levels: tuple[int, ...] = ()
    speed: Speed = field(default=Speed.MAX, metadata={"help": "replay speed"})
    persist: bool = False
    rate: float = 1.5
    dsn: str | None = field(default=None, metadata={"help": "PostgreSQL DSN; none = memory"})
    data_dir: pathlib.Path = pathlib.Path("data")


def test_defaults_without_environment() -> None:
    config = load_config(FeedConfig, {})
    assert config == FeedConfig()
    assert (config.host, config.port, config.drain_timeout_s) == ("127.0.0.1", 0, 5.0)
    with pytest.raises(FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_every_field_type_converts_from_its_variable() -> None:
    environ = {
        "NAUTILUS_MARKETDATA_PORT": "8801",
        "NAUTILUS_MARKETDATA_HOST": "0.0.0.0",
        "NAUTILUS_MARKETDATA_SYMBOLS": "SPY, BTCUSDT",
        "NAUTILUS_MARKETDATA_LEVELS": "5,10,20",
        "NAUTILUS_MARKETDATA_SPEED": "1x",
        "NAUTILUS_MARKETDATA_PERSIST": "yes",
        "NAUTILUS_MARKETDATA_RATE": "2e5",
        "NAUTILUS_MARKETDATA_DSN": "postgresql://postgres@127.0.0.1:5432/test",
        "NAUTILUS_MARKETDATA_DATA_DIR": "/srv/data",
        "NAUTILUS_VPIN_PORT": "not ours, ignored",
        "HOME": "/root",
    }
    config = load_config(FeedConfig, environ)
    assert config.port == 8801
    assert config.host == "0.0.0.0"
    assert config.symbols == ("SPY", "BTCUSDT")
    assert config.levels == (5, 10, 20)
    assert config.speed is Speed.REALTIME
    assert config.persist is True
    assert config.rate == 200_000.0
    assert config.dsn == "postgresql://postgres@127.0.0.1:5432/test"
    assert config.data_dir == pathlib.Path("/srv/data")


def test_empty_values_mean_none_and_empty_tuple() -> None:
    config = load_config(
        FeedConfig, {"NAUTILUS_MARKETDATA_DSN": "", "NAUTILUS_MARKETDATA_SYMBOLS": ""}
    )
    assert config.dsn is None
    assert config.symbols == ()


def test_defaults_mapping_is_overridden_by_the_environment() -> None:
    assert load_config(FeedConfig, {}, defaults={"port": 8800}).port == 8800
    environ = {"NAUTILUS_MARKETDATA_PORT": "9999"}
    assert load_config(FeedConfig, environ, defaults={"port": 8800}).port == 9999
    # the engine name in the defaults chooses the variables' prefix
    assert load_config(FeedConfig, {"NAUTILUS_MD2_PORT": "1"}, defaults={"name": "md2"}).port == 1


@pytest.mark.parametrize(
    ("variable", "raw", "says"),
    [
        ("NAUTILUS_MARKETDATA_PORT", "88o1", "expected an integer"),
        ("NAUTILUS_MARKETDATA_RATE", "fast", "expected a number"),
        ("NAUTILUS_MARKETDATA_PERSIST", "maybe", "expected a boolean"),
        ("NAUTILUS_MARKETDATA_SPEED", "2x", "expected one of 1x, max"),
        ("NAUTILUS_MARKETDATA_LEVELS", "5,ten", "expected an integer"),
        ("NAUTILUS_MARKETDATA_PROT", "8801", "unknown setting"),
        ("NAUTILUS_MARKETDATA_NAME", "other", "unknown setting"),
    ],
)
def test_invalid_or_unknown_variable_is_named(variable: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        load_config(FeedConfig, {variable: raw})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_values_the_config_rejects_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"port must be 0\.\.65535"):
        load_config(FeedConfig, {"NAUTILUS_MARKETDATA_PORT": "70000"})
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        load_config(FeedConfig, {"NAUTILUS_MARKETDATA_MAX_BATCH": "0"})


def test_describe_lists_every_variable_with_default_and_help() -> None:
    rows = {row.variable: row for row in describe_config(FeedConfig, defaults={"port": 8800})}
    assert "NAUTILUS_MARKETDATA_NAME" not in rows
    assert set(rows) == {
        "NAUTILUS_MARKETDATA_" + suffix
        for suffix in (
            "HOST", "PORT", "DRAIN_TIMEOUT_S", "MAX_BATCH", "COMPUTE_THREADS", "SYMBOLS",
            "LEVELS", "SPEED", "PERSIST", "RATE", "DSN", "DATA_DIR", "DB_DSN", "DB_SCHEMA",
            "MAX_BODY_BYTES",
        )
    }  # fmt: skip
    assert rows["NAUTILUS_MARKETDATA_PORT"].default == "8800"
    assert rows["NAUTILUS_MARKETDATA_PORT"].type == "int"
    assert rows["NAUTILUS_MARKETDATA_SYMBOLS"].default == "SPY"
    assert rows["NAUTILUS_MARKETDATA_SYMBOLS"].help == "symbols to replay"
    assert rows["NAUTILUS_MARKETDATA_SPEED"].default == "max"
    assert rows["NAUTILUS_MARKETDATA_PERSIST"].default == "false"
    assert rows["NAUTILUS_MARKETDATA_DSN"].default == ""
    assert rows["NAUTILUS_MARKETDATA_DSN"].type == "str | None"
    assert rows["NAUTILUS_MARKETDATA_HOST"].help == "interface the REST server binds"


def test_described_defaults_load_back_to_the_defaults() -> None:
    """What the README documents, set explicitly, is exactly the default config."""
    environ = {row.variable: row.default for row in describe_config(FeedConfig)}
    assert load_config(FeedConfig, environ) == FeedConfig()
