"""Shared fixtures of the audio tests: committed clips, tiny encoders, transformers' outputs."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.engine.audio import AudioEncoder, load_audio
from edgeagent.engine.checkpoint import open_checkpoint

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
CLIPS = FIXTURES / "clips"
MODELS = ("gemma3n_audio_tiny", "gemma3n_audio_variant")
PARITY_CLIPS = ("two_clean", "one_white_5db")

TOLERANCE = 1e-4
"""Largest absolute difference accepted against transformers (features and projected tokens)."""


def read_clip(name: str) -> np.ndarray:
    """A committed clip as float32 in [-1, 1) (int16 / 32768, as the fixture script reads it)."""
    with wave.open(str(CLIPS / f"{name}.wav"), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / np.float32(32768.0)


def clip_truth(name: str) -> dict[str, Any]:
    """The clip's ``.json``: utterance start/end times in seconds, noise, SNR."""
    result: dict[str, Any] = json.loads((CLIPS / f"{name}.json").read_text())
    return result


@pytest.fixture(scope="session")
def audio_reference() -> dict[str, np.ndarray]:
    """Outputs of transformers (scripts/make_audio_fixtures.py)."""
    with np.load(FIXTURES / "reference.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="session")
def encoders() -> dict[str, AudioEncoder]:
    """Both fixture encoders with the reference kernels, by fixture name."""
    return {name: load_audio(open_checkpoint(FIXTURES / name)) for name in MODELS}


@pytest.fixture(scope="session")
def tiny_encoder(encoders: dict[str, AudioEncoder]) -> AudioEncoder:
    """The 3-block encoder with the released block structure."""
    return encoders["gemma3n_audio_tiny"]
