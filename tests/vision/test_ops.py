"""The convolution helpers against direct loops: SAME padding on odd sizes, row bands."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.engine import reference
from edgeagent.engine.vision import VisionEncoder, ops
from tests.vision.conftest import TOLERANCE, pixels_of


def naive_conv(x: np.ndarray, w: np.ndarray, stride: int, groups: int = 1) -> np.ndarray:
    """Direct SAME conv (TensorFlow rule: the extra padding pixel goes after)."""
    h, wd, _ = x.shape
    cout, cg, k, _ = w.shape
    ho, wo = -(-h // stride), -(-wd // stride)
    ph = max((ho - 1) * stride + k - h, 0)
    pw = max((wo - 1) * stride + k - wd, 0)
    xp = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))).astype(np.float64)
    out = np.zeros((ho, wo, cout))
    per = cout // groups
    for o in range(cout):
        g = o // per
        for i in range(ho):
            for j in range(wo):
                patch = xp[i * stride : i * stride + k, j * stride : j * stride + k,
                           g * cg : (g + 1) * cg]  # fmt: skip
                out[i, j, o] = np.sum(patch * w[o].transpose(1, 2, 0))
    return out


@pytest.mark.parametrize(("size", "k", "stride"), [(7, 3, 2), (9, 5, 2), (6, 3, 1), (5, 5, 1)])
def test_conv2d_and_depthwise_match_direct_loops(size: int, k: int, stride: int) -> None:
    rng = np.random.default_rng(size * 10 + k)
    x = rng.standard_normal((size, size + 2, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4, k, k)).astype(np.float32)
    np.testing.assert_allclose(ops.conv2d(x, w, stride), naive_conv(x, w, stride), atol=1e-4)
    dw = rng.standard_normal((4, 1, k, k)).astype(np.float32)
    want = naive_conv(x, dw, stride, groups=4)
    np.testing.assert_allclose(ops.depthwise_conv2d(x, dw, stride), want, atol=1e-4)


def test_conv2d_in_row_bands_equals_one_band(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((33, 20, 5)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    whole = ops.conv2d(x, w, 2)
    monkeypatch.setattr(ops, "BAND_ELEMENTS", 3 * 10 * 45)  # 3 output rows per band
    np.testing.assert_allclose(ops.conv2d(x, w, 2), whole, rtol=0, atol=1e-5)


def test_encoder_parity_holds_with_small_bands(
    reduced: VisionEncoder, vision_reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """At 256 px the reduced model's convs fit one band; force many (as at real sizes)."""
    monkeypatch.setattr(ops, "BAND_ELEMENTS", 4096)
    got = reduced.encode_pixels(pixels_of(vision_reference["image_256"]))
    np.testing.assert_allclose(got, vision_reference["256/projected"], rtol=0, atol=TOLERANCE)


def test_in_place_gelu_is_bit_equal_to_the_reference() -> None:
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32) * 4
    assert np.array_equal(ops.gelu_tanh(x.copy()), reference.gelu_tanh(x))


def test_nearest_resize_and_avg_pool() -> None:
    x = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    up = ops.nearest_resize(x, (4, 6))
    assert up[:, :, 0].tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2
    assert ops.avg_pool(up, 2)[:, :, 0].tolist() == x[:, :, 0].tolist()
