"""Reference operations of the vision tower: numpy float32, channels-last ``[H, W, C]``.

Convolutions use timm's ``padding='same'`` (TensorFlow "SAME": the total
padding ``max((⌈n/s⌉ − 1)·s + k − n, 0)`` is split with the extra pixel at
the bottom/right, so a stride-2 conv on an even size pads only after).
Regular convs are im2col + one matmul per band of output rows (the column
buffer stays under :data:`BAND_ELEMENTS` floats, ~32 MB, at any image size);
depthwise convs are a direct sum of ``k²`` strided views; 1×1 convs are
plain matmuls. Weights arrive in their stored dtype (``[out, in/groups, k, k]``)
and are widened to float32 at the point of use.
"""

from __future__ import annotations

import math

import numpy as np

from edgeagent.engine.reference import as_f32, rms_norm

F32 = np.float32
BAND_ELEMENTS = 1 << 23  # im2col buffer limit, floats

__all__ = [
    "avg_pool",
    "conv2d",
    "depthwise_conv2d",
    "gelu_tanh",
    "mq_attention",
    "nearest_resize",
    "pad_same",
    "pointwise",
    "rms_norm",
]


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation, overwriting ``x`` (one temporary instead of five: the
    largest maps are ~110 MB at 768 px). Bit-equal to ``reference.gelu_tanh``."""
    t = x * F32(0.044715)  # the reference's order: ((0.044715·x)·x)·x
    t *= x
    t *= x
    t += x
    t *= F32(math.sqrt(2.0 / math.pi))
    np.tanh(t, out=t)
    t += F32(1.0)
    x *= t
    x *= F32(0.5)
    return x


def _same(n: int, k: int, s: int) -> tuple[int, int, int]:
    """``(pad_before, pad_after, out)`` of one axis of length ``n`` under SAME padding."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2, out


def pad_same(x: np.ndarray, k: int, s: int) -> tuple[np.ndarray, int, int]:
    """Zero-pad ``x [H, W, C]`` for a ``k``×``k`` stride-``s`` conv; also the output size."""
    top, bottom, ho = _same(x.shape[0], k, s)
    left, right, wo = _same(x.shape[1], k, s)
    if top or bottom or left or right:
        x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    return x, ho, wo


def pointwise(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """1×1 conv: ``[H, W, in] -> [H, W, out]`` for ``w [out, in, 1, 1]``."""
    h, wd, c = x.shape
    mat = as_f32(w).reshape(w.shape[0], c)  # [out, in]
    return np.matmul(x.reshape(h * wd, c), mat.T).reshape(h, wd, -1)  # [HW, out]


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, bias: np.ndarray | None = None) -> np.ndarray:
    """Full conv, SAME padding: ``[H, W, in] -> [Ho, Wo, out]`` for ``w [out, in, k, k]``.

    im2col in bands of output rows, columns ordered ``(ki, kj, in)``.
    """
    cout, cin, k, _ = w.shape
    xp, ho, wo = pad_same(x, k, stride)
    mat = as_f32(w).transpose(2, 3, 1, 0).reshape(k * k * cin, cout)  # [k·k·in, out]
    out = np.empty((ho, wo, cout), dtype=F32)
    rows = max(1, BAND_ELEMENTS // max(1, wo * k * k * cin))
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        cols = np.empty((r1 - r0, wo, k, k, cin), dtype=F32)  # [rows, Wo, k, k, in]
        for i in range(k):
            top = r0 * stride + i
            for j in range(k):
                cols[:, :, i, j, :] = xp[top : top + (r1 - r0 - 1) * stride + 1 : stride,
                                         j : j + (wo - 1) * stride + 1 : stride]  # fmt: skip
        band = cols.reshape((r1 - r0) * wo, k * k * cin)
        out[r0:r1] = np.matmul(band, mat).reshape(r1 - r0, wo, cout)  # [rows·Wo, out]
    if bias is not None:
        out += bias
    return out


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise conv, SAME padding: ``[H, W, C] -> [Ho, Wo, C]`` for ``w [C, 1, k, k]``."""
    k = w.shape[-1]
    xp, ho, wo = pad_same(x, k, stride)
    kern = as_f32(w)[:, 0].transpose(1, 2, 0)  # [k, k, C]
    out = np.zeros((ho, wo, x.shape[2]), dtype=F32)
    tap = np.empty_like(out)  # one scratch product, reused for every tap
    for i in range(k):
        for j in range(k):
            view = xp[
                i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride
            ]
            np.multiply(view, kern[i, j], out=tap)  # [Ho, Wo, C]
            out += tap
    return out


def mq_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    """Multi-query attention: ``q [L, heads·d]``, one head of ``k, v [P, d]`` -> ``[L, heads·d]``.

    Scale ``1/√d``, softmax over the ``P`` keys (every query sees every key).
    """
    n, d = q.shape[0], k.shape[1]
    logits = np.matmul(q.reshape(n * heads, d), k.T)  # [L·heads, P]
    logits *= F32(1.0 / math.sqrt(d))
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return np.matmul(logits, v).reshape(n, heads * d)  # [L, heads·d]


def nearest_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``F.interpolate(mode='nearest')``: source index ``⌊dst · in/out⌋``; ``[H, W, C]``."""
    h, w = x.shape[:2]
    rows = np.minimum((np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return x[rows][:, cols]


def avg_pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Non-overlapping ``factor``×``factor`` mean: ``[H, W, C] -> [H/f, W/f, C]``."""
    h, w, c = x.shape
    return x.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3), dtype=F32)
