"""configs/edgeagent.toml documents every setting and stays in step with the code."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from edgeagent.config import load_settings
from edgeagent.settings import Settings
from edgeagent.settings_text import descriptions

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "edgeagent.toml"


def uncommented(text: str) -> str:
    return re.sub(r"^#(\w+ = )", r"\1", text, flags=re.MULTILINE)


def test_example_is_generated_from_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_example_config.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_example_names_every_setting() -> None:
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    listed = {k for k, v in data.items() if not isinstance(v, dict)}
    listed |= {
        f"{section}.{key}"
        for section, table in data.items()
        if isinstance(table, dict)
        for key in table
    }
    settings = {k for k in descriptions() if "." in k or k == "profile"}
    settings -= {k for k in descriptions() if k in data and isinstance(data[k], dict)}
    assert listed == settings


def test_example_uncommented_is_valid_and_default_where_defaults_exist(tmp_path: Path) -> None:
    config = tmp_path / "edgeagent.toml"
    config.write_text(uncommented(EXAMPLE.read_text()))
    loaded = load_settings(config, default_config_path=Path("/nonexistent"))
    defaults = Settings()
    for section in ("camera", "daemon", "logging"):
        assert getattr(loaded, section) == getattr(defaults, section)
    assert loaded.mqtt.port == defaults.mqtt.port
