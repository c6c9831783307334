"""Reference kernels: numpy float32, readable and exact.

These are the operations the model code calls. Weights arrive in their stored
dtype (float32, float16 or bfloat16, usually a memory-mapped view of the
checkpoint) and are widened to float32 at the point of use, never kept.
Everything is computed in float32, like transformers' gemma3n in float32.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np

F32 = np.float32


def as_f32(w: np.ndarray) -> np.ndarray:
    """Return ``w`` as float32: the array itself when it already is, else a widened copy."""
    return w if w.dtype == F32 else w.astype(F32)


def linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``x @ weight.T`` for a weight stored as ``[out_features, in_features]``.

    ``x`` is ``[..., in_features]``; the result ``[..., out_features]`` is float32.
    """
    return np.matmul(x, as_f32(weight).T)


def inv_rms(x: np.ndarray, eps: float) -> np.ndarray | float:
    """``1 / sqrt(mean(x²) + eps)`` over the last axis: ``[..., W] -> [..., 1]``, or a Python
    float when ``x`` is one row (a decoded token: tiny arrays cost more than the arithmetic)."""
    width = x.shape[-1]
    if x.size == width:
        row = x.reshape(-1)
        return 1.0 / math.sqrt(float(np.vecdot(row, row)) / width + eps)
    scale = np.vecdot(x, x)[..., None]  # the sum of squares without an x² temporary
    scale *= F32(1.0 / width)
    scale += F32(eps)
    return np.power(scale, F32(-0.5), out=scale)


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """Gemma 3n's RMSNorm over the last axis: ``x / sqrt(mean(x²) + eps) * weight``.

    Unlike Gemma 3, the weight multiplies directly (no ``1 + weight``); a norm
    without a weight (``v_norm``) passes ``None``. Returns a new array.
    """
    scale = inv_rms(x, eps)
    out = x * (x.dtype.type(scale) if isinstance(scale, float) else scale)
    if weight is not None:
        out *= weight
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (``gelu_pytorch_tanh``)."""
    c = F32(math.sqrt(2.0 / math.pi))
    return F32(0.5) * x * (F32(1.0) + np.tanh(c * (x + F32(0.044715) * x * x * x)))


def gaussian_topk(gate: np.ndarray, sparsity: float) -> np.ndarray:
    """Activation sparsity: keep what exceeds ``mean + std·Φ⁻¹(sparsity)`` over the last axis.

    ``std`` is the population standard deviation; the result is
    ``relu(gate − cutoff)``, as in transformers' ``_gaussian_topk``.
    """
    return np.maximum(gate - sparsity_cutoff(gate, sparsity), F32(0.0))


def sparsity_cutoff(gate: np.ndarray, sparsity: float) -> np.ndarray:
    """``mean + std·Φ⁻¹(sparsity)`` of ``gate`` over its last axis: ``[..., I] -> [..., 1]``.

    ``std`` is the population standard deviation (two passes, like ``np.std``).
    """
    width = gate.shape[-1]
    mean = np.add.reduce(gate, axis=-1, keepdims=True)
    mean *= F32(1.0 / width)
    centered = gate - mean
    std = np.vecdot(centered, centered)[..., None]
    std *= F32(1.0 / width)
    np.sqrt(std, out=std)
    std *= normal_quantile(sparsity)
    std += mean
    return std


@functools.lru_cache(maxsize=8)
def normal_quantile(p: float) -> np.float32:
    return F32(NormalDist().inv_cdf(p))


def softcap(x: np.ndarray, cap: float | None) -> np.ndarray:
    """``cap · tanh(x / cap)``, or ``x`` when there is no cap."""
    if cap is None:
        return x
    out = x * F32(1.0 / cap)  # a new array: x may be a kernel's reused buffer
    np.tanh(out, out=out)
    out *= F32(cap)
    return out


def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """Inverse rotary frequencies ``1 / theta^(2i/head_dim)`` as float32, ``[head_dim/2]``."""
    exponent = np.arange(0, head_dim, 2, dtype=F32) / F32(head_dim)
    return (F32(1.0) / np.power(F32(theta), exponent)).astype(F32)


def rope_tables(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and signed ``sin`` of the rotary angles of ``positions`` ``[T]``: two ``[T, 1, hd]``.

    The sine's first half is negated (``rotate_half`` moves ``−x[half:]`` there), so that
    :func:`rotate` needs no concatenation.
    """
    freqs = positions.astype(F32)[:, None] * inv_freq[None, :]  # [T, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)  # [T, hd]
    sin = np.sin(emb)
    sin[:, : freqs.shape[1]] *= F32(-1.0)
    return np.cos(emb)[:, None, :], sin[:, None, :]


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate ``x`` ``[T, heads, head_dim]`` by the angles of ``positions`` ``[T]``.

    Half-split layout (``rotate_half``): dimension ``i`` pairs with ``i + head_dim/2``.
    """
    return rotate(x, *rope_tables(positions, inv_freq))


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """:func:`apply_rope` with precomputed :func:`rope_tables`:
    ``x·cos + rotate_half(x)·sin``, ``rotate_half(x) = [−x[half:], x[:half]]``."""
    half = x.shape[-1] // 2
    halves = (*x.shape[:-1], 2, half)
    out = x * cos
    # the halves swapped, as a view: [..., 2, half] read backwards along the 2
    swapped = x.reshape(halves)[..., ::-1, :] * sin.reshape((*sin.shape[:-1], 2, half))
    out.reshape(halves)[...] += swapped
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32; rows that are all ``-inf`` stay finite-safe."""
    e = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True))
    e /= np.add.reduce(e, axis=axis, keepdims=True)
    return e


def visibility(q_pos: np.ndarray, k_pos: np.ndarray, window: int | None) -> np.ndarray | None:
    """Additive mask ``[T, S]``: 0 where query ``t`` sees key ``s``, −inf elsewhere;
    ``None`` when every query sees every key (a decoded token over its cache).

    A key is visible when ``0 ≤ k_pos ≤ q_pos`` (−1 marks an empty slot) and,
    for sliding layers, ``q_pos − k_pos < window``.
    """
    visible = (k_pos[None, :] >= 0) & (k_pos[None, :] <= q_pos[:, None])  # [T, S]
    if window is not None:
        visible &= (q_pos[:, None] - k_pos[None, :]) < window
    if visible.all():
        return None
    return np.where(visible, F32(0.0), F32(-np.inf))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Grouped-query attention with scale 1.0 (q and k are RMS-normed per head).

    ``q`` ``[T, n_heads, hd]``; keys ``k`` ``[n_kv, hd, S]`` and values ``v``
    ``[n_kv, S, hd]`` (the KV cache's layouts); ``mask`` ``[T, S]`` from
    :func:`visibility` (``None``: all visible). Returns ``[T, n_heads, hd]``.
    """
    t, n_heads, hd = q.shape
    n_kv = k.shape[0]
    group = n_heads // n_kv
    # each KV head's queries as rows, (token, head) order: [kv, T*g, hd] (a view when T = 1)
    qh = q.reshape(t, n_kv, group, hd).transpose(1, 0, 2, 3).reshape(n_kv, t * group, hd)
    scores = np.matmul(qh, k)  # [kv, T*g, S]
    if mask is not None:
        scores.reshape(n_kv, t, group, -1)[...] += mask[None, :, None, :]
    # softmax over S, in place
    scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= np.add.reduce(scores, axis=-1, keepdims=True)
    out = np.matmul(scores, v)  # [kv, T*g, hd]
    return out.reshape(n_kv, t, group, hd).transpose(1, 0, 2, 3).reshape(q.shape)  # [T, nH, hd]
