"""Fixtures of the voice-pipeline tests: a tiny multimodal checkpoint (audio tower included),
the committed speech clips, and the MQTT fixtures (mosquitto, in-process daemon)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.publish.conftest import (  # noqa: F401 - fixtures, found by name
    _isolated,
    daemons,
    mosquitto,
    short_tmp,
    subscribers,
    tiny_model,
)

CLIPS = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "clips"


@pytest.fixture(scope="session")
def voice_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3n checkpoint in the released multimodal layout, with a tokenizer."""
    out = tmp_path_factory.mktemp("voice") / "model"
    subprocess.run(
        [sys.executable, "-m", "edgeagent", "model", "init", "--preset", "tiny",
         "--layout", "multimodal", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    return out
