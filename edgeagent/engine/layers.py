"""Gemma 3n decoder blocks, one function each, in the order of the paper.

Shapes: ``T`` tokens, ``H`` hidden, ``n`` AltUp streams, ``Hp`` per-layer
input width, ``I`` the FFN width a tier runs. Everything is float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edgeagent.engine.config import TextConfig
from edgeagent.engine.kernels import FFN, LayerKernels
from edgeagent.engine.kv_cache import KVView
from edgeagent.engine.reference import (
    F32,
    attention,
    linear,
    rms_norm,
    rope_tables,
    rotate,
    sparsity_cutoff,
    visibility,
)
from edgeagent.engine.weights import AltUpWeights, AttentionWeights, LayerWeights

INV_SQRT2 = F32(1.0 / math.sqrt(2.0))


@dataclass(frozen=True)
class Step:
    """What one forward step knows about its tokens, shared by every layer."""

    positions: np.ndarray  # [T] absolute positions
    inv_freq: dict[bool, np.ndarray]  # is_sliding -> [hd/2] rotary frequencies
    _rope: dict[bool, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _masks: dict[tuple[bool, int], np.ndarray] = field(default_factory=dict)

    def rope(self, sliding: bool) -> tuple[np.ndarray, np.ndarray]:
        """``cos``, ``sin`` ``[T, 1, hd]`` of this step's positions, computed once per type."""
        if sliding not in self._rope:
            self._rope[sliding] = rope_tables(self.positions, self.inv_freq[sliding])
        return self._rope[sliding]

    def mask(self, sliding: bool, k_pos: np.ndarray, window: int | None) -> np.ndarray:
        """The attention mask ``[T, S]`` over keys at ``k_pos``, computed once per layer type:
        every layer of a type sees the same positions in one step (one ring, one context)."""
        key = (sliding, len(k_pos))
        if key not in self._masks:
            self._masks[key] = visibility(self.positions, k_pos, window)
        return self._masks[key]


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
    mixed = np.einsum("tab,bth->ath", coefs, streams)
    mixed += streams
    return mixed


def altup_correct(
    w: AltUpWeights, predictions: np.ndarray, activated: np.ndarray, cfg: TextConfig
) -> np.ndarray:
    """Spread the layer's innovation to every stream: ``pred[a] + (coef_a + 1) · innovation``."""
    modalities = router_modalities(w, activated, cfg)  # [T, n]
    innovation = activated - predictions[cfg.altup_active_idx]  # [T, H]
    coefs = linear(modalities, w.correction_coefs) + F32(1.0)  # [T, n]
    corrected = coefs.T[:, :, None] * innovation[None]  # [n, T, H]
    corrected += predictions
    return corrected


def laurel(k: LayerKernels, lw: LayerWeights, x: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """LAuReL: ``x + post_laurel_norm(right(left(x)))``, a low-rank residual. ``[T, H]``."""
    low_rank = k.laurel(x)  # [T, H] -> [T, r] -> [T, H]
    return x + rms_norm(low_rank, lw.post_laurel_norm, cfg.rms_norm_eps)


def project_qkv(
    k: LayerKernels, w: AttentionWeights, x: np.ndarray, step: Step, sliding: bool, cfg: TextConfig
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Queries (normed, rotated) ``[T, nH, hd]``; on cache-owning layers also keys (normed,
    rotated) and values (normed) ``[T, n_kv, hd]``, else ``None``."""
    t, eps = x.shape[0], cfg.rms_norm_eps
    cos, sin = step.rope(sliding)
    projected = k.attn_in(x)  # [T, nH*hd] (, [T, n_kv*hd], [T, n_kv*hd])
    q = rms_norm(projected[0].reshape(t, cfg.num_attention_heads, cfg.head_dim), w.q_norm, eps)
    q = rotate(q, cos, sin)
    if len(projected) == 1:
        return q, None, None
    shape = (t, cfg.num_key_value_heads, cfg.head_dim)
    keys = rotate(rms_norm(projected[1].reshape(shape), w.k_norm, eps), cos, sin)
    values = rms_norm(projected[2].reshape(shape), None, eps)
    return q, keys, values


def self_attention(
    k: LayerKernels, q: np.ndarray, kv: KVView, step: Step, sliding: bool, cfg: TextConfig
) -> np.ndarray:
    """Attention of the new queries over ``kv`` (cache plus themselves): ``-> [T, H]``."""
    keys, values, k_pos = kv
    mask = step.mask(sliding, k_pos, cfg.sliding_window if sliding else None)  # [T, S]
    out = attention(q, keys, values, mask)  # [T, nH, hd]
    return k.o_proj(out.reshape(q.shape[0], -1))  # [T, nH*hd] -> [T, H]


FFN_ROWS = 64
"""Tokens per FFN pass in a long prefill: its ``[T, I]`` intermediates (I up to 16384) are the
largest activations of the model; tokens are independent there, so they go in row blocks."""


def mlp(ffn: FFN, x: np.ndarray, width: int, sparsity: float) -> np.ndarray:
    """Gated GELU FFN on the first ``width`` units (MatFormer slabs): ``[T, H] -> [T, H]``.

    ``down(gelu(gate) · up)``; with activation sparsity, ``gate`` first becomes
    ``relu(gate − cutoff)``, the cutoff taken over all ``width`` units (per token).
    """
    if x.shape[0] > FFN_ROWS:
        blocks = range(0, x.shape[0], FFN_ROWS)
        return np.concatenate([mlp(ffn, x[i : i + FFN_ROWS], width, sparsity) for i in blocks])
    slabs = ffn.slabs(width)
    if all(slab.fused is not None for slab in slabs):
        return _sum(slab.fused(x) for slab in slabs if slab.fused is not None)
    parts = []
    for slab in slabs:
        assert slab.gate_up is not None
        parts.append(slab.gate_up(x))  # gate, up [T, stop-start]
    cutoff = None
    if sparsity > 0.0:
        gate = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts], -1)
        cutoff = sparsity_cutoff(gate, sparsity)  # [T, 1]
    outputs = []
    for slab, (gate_part, up_part) in zip(slabs, parts, strict=True):
        assert slab.down is not None
        outputs.append(slab.down(gate_part, up_part, cutoff))  # [T, I_slab] -> [T, H]
    return _sum(outputs)


def _sum(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """Sum of slab outputs (a fresh array: kernels may reuse their output buffers)."""
    it = iter(arrays)
    total = next(it).copy()
    for a in it:
        total += a
    return total


def per_layer_update(
    k: LayerKernels,
    lw: LayerWeights,
    first: np.ndarray,
    per_layer_input: np.ndarray,
    cfg: TextConfig,
) -> np.ndarray:
    """The per-layer input gate: ``[T, H], [T, Hp] -> [T, H]`` added to streams 1…n−1."""
    if cfg.altup_correct_scale:
        first = first * lw.altup.correct_output_scale
    projected = k.per_layer_gate(first, per_layer_input)  # [T, H], [T, Hp] -> [T, H]
    return rms_norm(projected, lw.post_per_layer_input_norm, cfg.rms_norm_eps)
