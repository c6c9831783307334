"""Gemma 3n decoder blocks, one function each, in the order of the paper.

Shapes: ``T`` tokens, ``H`` hidden, ``n`` AltUp streams, ``Hp`` per-layer
input width, ``I`` the FFN width a tier runs. Everything is float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeagent.engine.config import TextConfig
from edgeagent.engine.kv_cache import KVView
from edgeagent.engine.reference import (
    F32,
    apply_rope,
    attention,
    gaussian_topk,
    gelu_tanh,
    linear,
    rms_norm,
)
from edgeagent.engine.weights import AltUpWeights, AttentionWeights, LayerWeights

INV_SQRT2 = F32(1.0 / math.sqrt(2.0))


@dataclass(frozen=True)
class Step:
    """What one forward step knows about its tokens, shared by every layer."""

    positions: np.ndarray  # [T] absolute positions
    inv_freq: dict[bool, np.ndarray]  # is_sliding -> [hd/2] rotary frequencies


def router_modalities(w: AltUpWeights, x: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """``tanh(modality_router(router_norm(x) / H))``: ``[T, H] -> [T, n]``."""
    routed = rms_norm(x, w.router_norm, cfg.rms_norm_eps) * F32(1.0 / cfg.hidden_size)
    return np.tanh(linear(routed, w.modality_router))


def altup_predict(w: AltUpWeights, streams: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """Mix the streams with router-chosen coefficients: ``[n, T, H] -> [n, T, H]``.

    ``pred[a] = streams[a] + Σ_b coef[t, a, b] · streams[b]``.
    """
    n = cfg.altup_num_inputs
    modalities = router_modalities(w, streams[cfg.altup_active_idx], cfg)  # [T, n]
    coefs = linear(modalities, w.prediction_coefs).reshape(-1, n, n)  # [T, n, n]
    return np.einsum("tab,bth->ath", coefs, streams) + streams


def altup_correct(
    w: AltUpWeights, predictions: np.ndarray, activated: np.ndarray, cfg: TextConfig
) -> np.ndarray:
    """Spread the layer's innovation to every stream: ``pred[a] + (coef_a + 1) · innovation``."""
    modalities = router_modalities(w, activated, cfg)  # [T, n]
    innovation = activated - predictions[cfg.altup_active_idx]  # [T, H]
    coefs = linear(modalities, w.correction_coefs) + F32(1.0)  # [T, n]
    return predictions + coefs.T[:, :, None] * innovation[None]  # [n, T, H]


def laurel(lw: LayerWeights, x: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """LAuReL: ``x + post_laurel_norm(right(left(x)))``, a low-rank residual. ``[T, H]``."""
    low = linear(x, lw.laurel_left)  # [T, H] -> [T, r]
    return x + rms_norm(linear(low, lw.laurel_right), lw.post_laurel_norm, cfg.rms_norm_eps)


def project_kv(
    w: AttentionWeights, x: np.ndarray, step: Step, sliding: bool, cfg: TextConfig
) -> tuple[np.ndarray, np.ndarray]:
    """New keys (normed, rotated) and values (normed): ``[T, H] -> 2 × [T, n_kv, hd]``."""
    assert w.k_proj is not None and w.v_proj is not None
    shape = (x.shape[0], cfg.num_key_value_heads, cfg.head_dim)
    k = rms_norm(linear(x, w.k_proj).reshape(shape), w.k_norm, cfg.rms_norm_eps)
    k = apply_rope(k, step.positions, step.inv_freq[sliding])
    v = rms_norm(linear(x, w.v_proj).reshape(shape), None, cfg.rms_norm_eps)
    return k, v


def self_attention(
    w: AttentionWeights, x: np.ndarray, kv: KVView, step: Step, sliding: bool, cfg: TextConfig
) -> np.ndarray:
    """Attention of the new tokens over ``kv`` (cache plus themselves): ``[T, H] -> [T, H]``."""
    shape = (x.shape[0], cfg.num_attention_heads, cfg.head_dim)
    q = rms_norm(linear(x, w.q_proj).reshape(shape), w.q_norm, cfg.rms_norm_eps)  # [T, nH, hd]
    q = apply_rope(q, step.positions, step.inv_freq[sliding])
    keys, values, k_pos = kv
    window = cfg.sliding_window if sliding else None
    out = attention(q, keys, values, step.positions, k_pos, window)  # [T, nH, hd]
    return linear(out.reshape(x.shape[0], -1), w.o_proj)  # [T, nH*hd] -> [T, H]


def mlp(lw: LayerWeights, x: np.ndarray, width: int, sparsity: float) -> np.ndarray:
    """Gated GELU FFN on the first ``width`` units (a MatFormer slab): ``[T, H] -> [T, H]``."""
    gate_proj, up_proj, down_proj = lw.ffn_slab(width)
    gate = linear(x, gate_proj)  # [T, H] -> [T, I]
    if sparsity > 0.0:
        gate = gaussian_topk(gate, sparsity)
    up = linear(x, up_proj)  # [T, I]
    return linear(gelu_tanh(gate) * up, down_proj)  # [T, I] -> [T, H]


def per_layer_update(
    lw: LayerWeights, first: np.ndarray, per_layer_input: np.ndarray, cfg: TextConfig
) -> np.ndarray:
    """The per-layer input gate: ``[T, H], [T, Hp] -> [T, H]`` added to streams 1…n−1."""
    if cfg.altup_correct_scale:
        first = first * lw.altup.correct_output_scale
    gated = gelu_tanh(linear(first, lw.per_layer_input_gate)) * per_layer_input  # [T, Hp]
    projected = linear(gated, lw.per_layer_projection)  # [T, Hp] -> [T, H]
    return rms_norm(projected, lw.post_per_layer_input_norm, cfg.rms_norm_eps)
