"""Shared fixtures of the engine tests: the committed tiny Gemma 3n models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeagent.engine import TextModel, load

from .heavy_tailed import write_heavy_tailed

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY = FIXTURES / "gemma3n_tiny"

TOLERANCE = 1e-4
"""Largest absolute logit difference accepted against transformers (float32)."""


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """Outputs of transformers on the tiny fixture model (see scripts/make_parity_fixtures.py)."""
    with np.load(TINY / "reference.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="session")
def tiny_text() -> TextModel:
    """The tiny fixture model, text-only layout, float32, as transformers saved it."""
    return load(TINY / "text", max_context=256)


@pytest.fixture(scope="session")
def tiny_multimodal() -> TextModel:
    """The same weights, released multimodal layout: bf16, sharded, unused shared k/v kept."""
    return load(TINY / "multimodal", max_context=256)


@pytest.fixture(scope="session")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The heavy-tailed accuracy fixture (``heavy_tailed.py``), written once per session."""
    return write_heavy_tailed(tmp_path_factory.mktemp("heavy") / "ckpt")
