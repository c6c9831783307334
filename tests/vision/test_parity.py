"""The vision encoder and its projection equal timm + transformers on the reduced model
(must-show 1): stem, EdgeResidual, UIR, MobileAttention with kv stride, MSFA, embed_vision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeagent.engine import load
from edgeagent.engine.vision import VisionEncoder, VisionWeights
from edgeagent.engine.vision.weights import MobileAttentionWeights
from tests.vision.conftest import REDUCED, SIZES, TOLERANCE, pixels_of


def test_reduced_config_has_every_block_type(reduced: VisionEncoder) -> None:
    cfg = reduced.config
    kinds = {b.kind for b in cfg.blocks}
    assert kinds == {"er", "uir", "mqa"}
    assert any(b.kind == "mqa" and b.kv_stride > 1 for b in cfg.blocks)
    assert any(
        b.kind == "uir" and b.start_kernel and b.kernel and b.stride == 2 for b in cfg.blocks
    )
    assert any(b.kind == "uir" and not b.start_kernel and not b.kernel for b in cfg.blocks)
    assert cfg.msfa_stages == (3, 4) and cfg.tokens == 256


@pytest.mark.parametrize("size", SIZES)
def test_tower_and_projection_match_reference(
    size: int, reduced: VisionEncoder, vision_reference: dict[str, np.ndarray]
) -> None:
    pixels = pixels_of(vision_reference[f"image_{size}"])
    tower = reduced.encode_pixels(pixels, project=False)
    tokens = reduced.embed(tower)
    want_tower = vision_reference[f"{size}/tower"]
    want_tokens = vision_reference[f"{size}/projected"]
    assert tower.shape == want_tower.shape == (256, 64)
    assert tokens.shape == want_tokens.shape == (256, 16) and tokens.dtype == np.float32
    np.testing.assert_allclose(tower, want_tower, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(tokens, want_tokens, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("size", SIZES)
def test_encode_of_an_image_at_size_is_the_reference(
    size: int, vision_reference: dict[str, np.ndarray]
) -> None:
    """The public path: ``load(path).vision.encode(image, size)`` (no resize at that size)."""
    vision = load(REDUCED).vision
    tokens = vision.encode(vision_reference[f"image_{size}"], size=size)
    np.testing.assert_allclose(
        tokens, vision_reference[f"{size}/projected"], rtol=0, atol=TOLERANCE
    )


def test_default_size_comes_from_the_preprocessor_config(
    reduced: VisionEncoder, vision_reference: dict[str, np.ndarray]
) -> None:
    assert reduced.image_config.size == 256
    tokens = reduced.encode(vision_reference["image_256"])
    np.testing.assert_allclose(tokens, vision_reference["256/projected"], rtol=0, atol=TOLERANCE)


def test_parity_detects_a_changed_attention_block(
    reduced: VisionEncoder, vision_reference: dict[str, np.ndarray]
) -> None:
    """The comparison can fail: halving one MobileAttention layer scale moves the output."""
    blocks = list(reduced.weights.blocks)
    i = next(i for i, w in enumerate(blocks) if isinstance(w, MobileAttentionWeights))
    mqa = blocks[i]
    assert isinstance(mqa, MobileAttentionWeights)
    blocks[i] = dataclasses.replace(mqa, layer_scale=mqa.layer_scale * np.float32(0.5))
    weights = VisionWeights(reduced.weights.stem, tuple(blocks), reduced.weights.msfa,
                            reduced.weights.embedder)  # fmt: skip
    changed = VisionEncoder(reduced.config, weights, reduced.image_config)
    pixels = pixels_of(vision_reference["image_256"])
    diff = np.abs(changed.encode_pixels(pixels) - vision_reference["256/projected"]).max()
    assert diff > 100 * TOLERANCE
