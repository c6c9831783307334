"""Shared fixtures of the vision tests: the reduced checkpoint and timm/transformers' outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.vision import VisionEncoder, load_vision

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vision"
REDUCED = FIXTURES / "gemma3n_vision_reduced"
SIZES = (256, 512, 768)

TOLERANCE = 1e-4
"""Largest absolute difference accepted against timm + transformers. Tower tokens reach
|x| ≈ 5.5 and projected ones ≈ 2.9; transformers' own float32-vs-float64 deviation on the
same input is ≈ 2.5e-5 (meta.json), so 1e-4 is a few times the reference's noise floor."""


@pytest.fixture(scope="session")
def vision_reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def vision_meta() -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((FIXTURES / "meta.json").read_text(encoding="utf-8"))
    return meta


@pytest.fixture(scope="session")
def reduced() -> VisionEncoder:
    return load_vision(open_checkpoint(REDUCED))


def pixels_of(image: np.ndarray) -> np.ndarray:
    """The fixture's pixel values: uint8 / 255 (the released processor does not normalize)."""
    return image.astype(np.float32) / np.float32(255.0)
