from __future__ import annotations

import pytest

from engines.shell.platform import HUB_PREFIX
from realtime.config import ConfigError, describe_settings, load_settings
from realtime.hub import HubConfig, LosslessOverflow


def test_hub_settings_from_environment() -> None:
    env = {
        "NAUTILUS_HUB_PORT": "8611",
        "NAUTILUS_HUB_LOSSLESS_OVERFLOW": "gap",
        "NAUTILUS_HUB_COMPRESSION": "yes",
        "NAUTILUS_HUB_AUTH_SECRET": "",
        "NAUTILUS_OTHER_THING": "ignored",
    }
    cfg = load_settings(HubConfig, env, HUB_PREFIX)
    assert cfg.port == 8611 and cfg.compression is True and cfg.auth_secret is None
    assert cfg.lossless_overflow is LosslessOverflow.GAP
    assert load_settings(HubConfig, {}, HUB_PREFIX, defaults={"port": 0}).port == 0


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NAUTILUS_HUB_PORTT": "1"}, "NAUTILUS_HUB_PORTT"),
        ({"NAUTILUS_HUB_PORT": "eighty"}, "NAUTILUS_HUB_PORT"),
        ({"NAUTILUS_HUB_LOSSLESS_OVERFLOW": "drop"}, "NAUTILUS_HUB_LOSSLESS_OVERFLOW"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(HubConfig, env, HUB_PREFIX)
    assert info.value.variable == variable


def test_every_hub_setting_is_documented() -> None:
    rows = describe_settings(HubConfig, HUB_PREFIX)
    assert {r.variable for r in rows} >= {"NAUTILUS_HUB_PORT", "NAUTILUS_HUB_AUTH_SECRET"}
    assert all(r.help for r in rows)
