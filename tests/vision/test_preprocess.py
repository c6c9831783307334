"""The numpy resize equals Pillow's; preprocessing follows the processor's settings."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.engine.vision.preprocess import (
    BICUBIC,
    BILINEAR,
    ImageConfig,
    load_image_config,
    preprocess,
    resize,
)
from edgeagent.errors import VisionError
from tests.vision.conftest import FIXTURES, REDUCED

RESIZE_CASES = (
    "noise_40x64_bilinear",
    "noise_100x120_bilinear",
    "scene_40x48_bilinear",
    "scene_256x256_bilinear",
    "noise_30x50_bicubic",
)
MAX_LEVEL_DIFF = 1
"""Tolerance against Pillow: at most one uint8 level anywhere, and at least 99 % of the values
identical (the implementation reproduces Pillow's fixed-point arithmetic; today every case is
bit-exact, the slack only covers rounding changes between Pillow releases)."""


@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize_matches_pillow(case: str, vision_reference: dict[str, np.ndarray]) -> None:
    want = vision_reference[f"resize/{case}"]
    src = vision_reference["resize_src_noise" if case.startswith("noise") else "resize_src_scene"]
    got = resize(src, want.shape[0], want.shape[1], BICUBIC if "bicubic" in case else BILINEAR)
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= MAX_LEVEL_DIFF
    assert (diff == 0).mean() >= 0.99


def test_resize_is_not_nearest_or_unfiltered(vision_reference: dict[str, np.ndarray]) -> None:
    """Downscaling noise averages it (antialiasing): a plain decimation would not match."""
    src = vision_reference["resize_src_noise"]
    want = vision_reference["resize/noise_40x64_bilinear"]
    rows = (np.arange(40) * src.shape[0] / 40).astype(int)
    cols = (np.arange(64) * src.shape[1] / 64).astype(int)
    nearest = src[rows][:, cols]
    assert np.abs(nearest.astype(int) - want.astype(int)).max() > 10
    assert want.std() < src.std()


def test_released_preprocessing_rescales_without_normalizing() -> None:
    cfg = load_image_config(REDUCED)
    assert cfg == ImageConfig(size=256)
    img = np.full((256, 256, 3), 255, dtype=np.uint8)
    img[0, 0] = 0
    px = preprocess(img, cfg)
    assert px.dtype == np.float32 and px.shape == (256, 256, 3)
    assert px[0, 0, 0] == 0.0 and px[1, 1, 0] == np.float32(1.0)


def test_normalize_when_the_config_asks() -> None:
    cfg = ImageConfig.from_dict({"do_normalize": True, "size": {"height": 8, "width": 8}}, "t")
    img = np.full((4, 4, 3), 255, dtype=np.uint8)
    px = preprocess(img, cfg)
    assert px.shape == (8, 8, 3)
    np.testing.assert_allclose(px, 1.0, atol=1e-6)  # (1 - 0.5) / 0.5


def test_bad_preprocessor_fields_are_reported(tmp_path: object) -> None:
    with pytest.raises(VisionError, match="not square"):
        ImageConfig.from_dict({"size": {"height": 256, "width": 512}}, "p.json")
    with pytest.raises(VisionError, match="resample 0"):
        ImageConfig.from_dict({"resample": 0}, "p.json")
    assert (FIXTURES / "gemma3n_vision_reduced" / "preprocessor_config.json").is_file()
