"""The quantized vision kernels (one ONNX Runtime graph) against the reference, on the reduced
checkpoint (every block type; tower and embedder at small widths)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.vision import VisionEncoder, load_vision
from edgeagent.engine.vision.quantized import (
    QuantizedVisionEncoder,
    quantized_vision_encoder,
    vision_store_dir,
)
from edgeagent.errors import EngineError, VisionError
from tests.vision.conftest import REDUCED, SIZES

COSINE_8BIT = 0.99
"""Per-token cosine to the reference, averaged over the 256 tokens: measured 0.997-0.9995 at
256/512/768 px (block 64), minimum token 0.984."""
COSINE_4BIT = 0.75
"""4-bit codes lose far more: measured mean 0.855-0.953 (minimum token 0.24 at 512 px), so
8 bits is the default; the bound keeps margin for noise and still fails a broken 4-bit path."""


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _image(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (300, 400, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def quantized8(
    reduced: VisionEncoder, tmp_path_factory: pytest.TempPathFactory
) -> QuantizedVisionEncoder:
    store = tmp_path_factory.mktemp("vision") / "q8"
    return quantized_vision_encoder(
        reduced.config, reduced.weights, reduced.image_config, store, bits=8, block_size=64
    )


@pytest.mark.parametrize("size", SIZES)
def test_8bit_tokens_match_the_reference(
    reduced: VisionEncoder, quantized8: QuantizedVisionEncoder, size: int
) -> None:
    image = _image()
    ref, got = reduced.encode(image, size=size), quantized8.encode(image, size=size)
    assert got.shape == (256, reduced.config.text_hidden_size) == ref.shape
    assert got.dtype == np.float32
    cos = _cosine(ref, got)
    assert cos.mean() >= COSINE_8BIT, (size, cos.mean(), cos.min())
    assert cos.min() >= 0.95
    assert np.abs(ref - got).max() < 0.75  # measured ≤ 0.40; tokens reach |x| ≈ 2.9


def test_tower_tokens_match_the_reference(
    reduced: VisionEncoder, quantized8: QuantizedVisionEncoder
) -> None:
    pixels = np.random.default_rng(2).random((512, 512, 3), dtype=np.float32)
    ref = reduced.encode_pixels(pixels, project=False)
    soft = quantized8.encode_pixels(pixels, project=False)
    assert soft.shape == (256, reduced.config.hidden_size)
    assert _cosine(ref.ravel(), soft.ravel()) >= COSINE_8BIT
    np.testing.assert_array_equal(quantized8.tower(pixels), soft)
    np.testing.assert_allclose(quantized8.embed(soft), quantized8.encode_pixels(pixels), atol=0.05)


def test_4bit_is_coarser_but_close(
    reduced: VisionEncoder, quantized8: QuantizedVisionEncoder, tmp_path: Path
) -> None:
    q4 = quantized_vision_encoder(
        reduced.config, reduced.weights, reduced.image_config, tmp_path / "q4", bits=4
    )
    image = _image()
    ref = reduced.encode(image, size=768)
    cos4 = _cosine(ref, q4.encode(image, size=768)).mean()
    cos8 = _cosine(ref, quantized8.encode(image, size=768)).mean()
    assert COSINE_4BIT <= cos4 < cos8


def test_load_vision_writes_and_reuses_its_store(reduced: VisionEncoder, tmp_path: Path) -> None:
    ckpt = tmp_path / "reduced"
    shutil.copytree(REDUCED, ckpt)
    q = load_vision(open_checkpoint(ckpt), "quantized", threads=0)
    assert isinstance(q, QuantizedVisionEncoder)
    assert q.tokens == 256
    assert "MatMulNBits 8-bit" in q.kernels
    weights = vision_store_dir(ckpt, 8, 64) / "weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = load_vision(open_checkpoint(ckpt), "quantized")
    assert weights.stat().st_mtime_ns == mtime  # not written twice
    image = _image(3)
    np.testing.assert_array_equal(q.encode(image, size=256), again.encode(image, size=256))
    assert _cosine(reduced.encode(image, size=256), q.encode(image, size=256)).mean() >= 0.99
    assert isinstance(load_vision(open_checkpoint(ckpt), "reference"), VisionEncoder)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernels": "fast"}, "unknown vision kernels 'fast'"),
        ({"kernels": "quantized", "bits": 5}, "vision bits must be one of"),
        ({"kernels": "quantized", "bits": 4, "block_size": 48}, "vision block size"),
    ],
)
def test_bad_kernels_or_widths_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(EngineError, match=match):
        load_vision(open_checkpoint(REDUCED), **kwargs)  # type: ignore[arg-type]


def test_an_unwritable_store_is_an_engine_error(reduced: VisionEncoder, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EngineError, match="cannot write the quantized copy"):
        quantized_vision_encoder(
            reduced.config, reduced.weights, reduced.image_config, blocker / "q8"
        )


def test_bad_pixels_and_sizes_are_vision_errors(quantized8: QuantizedVisionEncoder) -> None:
    with pytest.raises(VisionError, match="multiple of 256"):
        quantized8.encode(_image(), size=320)
    with pytest.raises(VisionError, match=r"square \[S, S, 3\]"):
        quantized8.encode_pixels(np.zeros((256, 128, 3), np.float32))
    with pytest.raises(VisionError, match=r"square \[S, S, 3\]"):
        quantized8.tower(np.zeros((256, 256, 4), np.float32))
