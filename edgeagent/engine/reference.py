"""Reference kernels: numpy float32, readable and exact.

These are the operations the model code calls. Weights arrive in their stored
dtype (float32, float16 or bfloat16, usually a memory-mapped view of the
checkpoint) and are widened to float32 at the point of use, never kept.
Everything is computed in float32, like transformers' gemma3n in float32.
"""

from __future__ import annotations

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


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """Gemma 3n's RMSNorm over the last axis: ``x / sqrt(mean(x²) + eps) * weight``.

    Unlike Gemma 3, the weight multiplies directly (no ``1 + weight``); a norm
    without a weight (``v_norm``) passes ``None``.
    """
    # ufunc methods rather than np.mean: the same arithmetic, without Python-level wrappers
    # that cost more than the sum itself on one token's [1, 2048]
    sum_sq = np.add.reduce(x * x, axis=-1, keepdims=True)
    out = x * np.power(sum_sq * F32(1.0 / x.shape[-1]) + F32(eps), F32(-0.5))
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
    """``mean + std·Φ⁻¹(sparsity)`` of ``gate`` over its last axis: ``[..., I] -> [..., 1]``."""
    multiplier = F32(NormalDist().inv_cdf(sparsity))
    mean = np.mean(gate, axis=-1, keepdims=True)
    std = np.std(gate, axis=-1, keepdims=True)
    return mean + std * multiplier


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
    """``cos`` and ``sin`` of the rotary angles of ``positions`` ``[T]``: two ``[T, 1, hd]``."""
    freqs = positions.astype(F32)[:, None] * inv_freq[None, :]  # [T, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)  # [T, hd]
    return np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate ``x`` ``[T, heads, head_dim]`` by the angles of ``positions`` ``[T]``.

    Half-split layout (``rotate_half``): dimension ``i`` pairs with ``i + head_dim/2``.
    """
    return rotate(x, *rope_tables(positions, inv_freq))


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """:func:`apply_rope` with precomputed :func:`rope_tables`."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32; rows that are all ``-inf`` stay finite-safe."""
    e = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True))
    e /= np.add.reduce(e, axis=axis, keepdims=True)
    return e


def visibility(q_pos: np.ndarray, k_pos: np.ndarray, window: int | None) -> np.ndarray:
    """Additive mask ``[T, S]``: 0 where query ``t`` sees key ``s``, −inf elsewhere.

    A key is visible when ``0 ≤ k_pos ≤ q_pos`` (−1 marks an empty slot) and,
    for sliding layers, ``q_pos − k_pos < window``.
    """
    visible = (k_pos[None, :] >= 0) & (k_pos[None, :] <= q_pos[:, None])  # [T, S]
    if window is not None:
        visible &= (q_pos[:, None] - k_pos[None, :]) < window
    return np.where(visible, F32(0.0), F32(-np.inf))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grouped-query attention with scale 1.0 (q and k are RMS-normed per head).

    ``q`` ``[T, n_heads, hd]``; ``k``, ``v`` ``[n_kv, S, hd]`` (head-major);
    ``mask`` ``[T, S]`` from :func:`visibility`. Returns ``[T, n_heads, hd]``.
    """
    t, n_heads, hd = q.shape
    n_kv = k.shape[0]
    group = n_heads // n_kv
    # each KV head's queries as columns, (token, head) order: [kv, hd, T*g]
    qh = q.reshape(t, n_kv, group, hd).transpose(1, 3, 0, 2).reshape(n_kv, hd, t * group)
    scores = np.matmul(k, qh)  # [kv, S, T*g]
    bias = mask if group == 1 else np.repeat(mask, group, axis=0)  # [T*g, S]
    scores = np.add(scores.transpose(0, 2, 1), bias, order="C")  # [kv, T*g, S]
    out = np.matmul(softmax(scores, axis=-1), v)  # [kv, T*g, hd]
    return out.reshape(n_kv, t, group, hd).transpose(1, 0, 2, 3).reshape(q.shape)  # [T, nH, hd]
