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
from edgeagent.engine.kernels import FFN, LayerKernels, PassMemory
from edgeagent.engine.kv_cache import KVView
from edgeagent.engine.reference import (
    F32,
    attention,
    inv_rms,
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
    memory: PassMemory | None = None  # a multi-token pass's memory hooks
    _rope: dict[bool, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _masks: dict[tuple[bool, int], np.ndarray | None] = field(default_factory=dict)

    def release(self) -> None:
        """Give freed activations back to the OS (multi-token passes: they free ~1 MB blocks
        that would otherwise stay resident in the heap until the pass ends)."""
        if self.memory is not None:
            self.memory.release()

    def rope(self, sliding: bool) -> tuple[np.ndarray, np.ndarray]:
        """``cos``, ``sin`` ``[T, 1, hd]`` of this step's positions, computed once per type."""
        if sliding not in self._rope:
            self._rope[sliding] = rope_tables(self.positions, self.inv_freq[sliding])
        return self._rope[sliding]

    def mask(self, sliding: bool, k_pos: np.ndarray, window: int | None) -> np.ndarray | None:
        """The attention mask ``[T, S]`` over keys at ``k_pos`` (``None``: all visible), computed
        once per layer type: every layer of a type sees the same positions in one step (one
        ring, one context)."""
        key = (sliding, len(k_pos))
        if key not in self._masks:
            self._masks[key] = visibility(self.positions, k_pos, window)
        return self._masks[key]


def router_modalities(w: AltUpWeights, x: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """``tanh(modality_router(router_norm(x) / H))``: ``[T, H] -> [T, n]``.

    Computed as ``tanh(inv_rms(x) · x @ w.router.T)`` with the norm weight and
    ``1/H`` folded into ``w.router``: the [T, H] work is one product.
    """
    routed = linear(x, w.router)  # [T, n]
    routed *= inv_rms(x, cfg.rms_norm_eps)
    return np.tanh(routed, out=routed)


ALTUP_ROWS = 16
"""Tokens mixed at a time in a prefill: the streams are updated in place, block by block."""


def altup_predict(w: AltUpWeights, streams: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """Mix the streams with router-chosen coefficients: ``[n, T, H] -> [n, T, H]``.

    ``pred[a] = streams[a] + Σ_b coef[t, a, b] · streams[b]``, written into
    ``streams`` (returned): a prefill holds one copy of the streams, not two.
    """
    n, t, h = streams.shape
    modalities = router_modalities(w, streams[cfg.altup_active_idx], cfg)  # [T, n]
    coefs = linear(modalities, w.prediction_coefs).reshape(t, n, n)  # [T, n, n]
    if t == 1:  # one token: a single [n, n] @ [n, H]
        streams += np.matmul(coefs[0], streams.reshape(n, h)).reshape(n, 1, h)
        return streams
    for start in range(0, t, ALTUP_ROWS):
        rows = slice(start, start + ALTUP_ROWS)
        streams[:, rows] += np.einsum("tab,bth->ath", coefs[rows], streams[:, rows])
    return streams


def altup_correct(
    w: AltUpWeights, predictions: np.ndarray, activated: np.ndarray, cfg: TextConfig
) -> np.ndarray:
    """Spread the layer's innovation to every stream: ``pred[a] + (coef_a + 1) · innovation``.

    Writes into (and returns) ``predictions``.
    """
    modalities = router_modalities(w, activated, cfg)  # [T, n]
    innovation = activated - predictions[cfg.altup_active_idx]  # [T, H]
    coefs = linear(modalities, w.correction_coefs) + F32(1.0)  # [T, n]
    if innovation.shape[0] == 1:
        predictions += coefs.T[:, :, None] * innovation[None]  # [n, T, H]
        return predictions
    scaled = np.empty_like(innovation)  # stream by stream: no [n, T, H] temporary in a prefill
    for a in range(predictions.shape[0]):
        np.multiply(innovation, coefs[:, a : a + 1], out=scaled)
        predictions[a] += scaled
    return predictions


def laurel(k: LayerKernels, lw: LayerWeights, x: np.ndarray, cfg: TextConfig) -> np.ndarray:
    """LAuReL: ``x + post_laurel_norm(right(left(x)))``, a low-rank residual. ``[T, H]``."""
    low_rank = k.laurel(x)  # [T, H] -> [T, r] -> [T, H]
    out = rms_norm(low_rank, lw.post_laurel_norm, cfg.rms_norm_eps)
    out += x
    return out


def project_qkv(
    k: LayerKernels, w: AttentionWeights, x: np.ndarray, step: Step, sliding: bool, cfg: TextConfig
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Queries (normed, rotated) ``[T, nH, hd]``; on cache-owning layers also keys (normed,
    rotated) and values (normed) ``[T, n_kv, hd]``, else ``None``.

    q/k/v norms are one per-head RMSNorm over all heads side by side (``w.qkv_norm``
    holds each head's weight, ones for v), and q and k rotate together.
    """
    t, hd, n_q = x.shape[0], cfg.head_dim, cfg.num_attention_heads
    cos, sin = step.rope(sliding)
    projected = k.attn_in(x)  # [T, nH*hd] (, [T, n_kv*hd], [T, n_kv*hd])
    owns_kv = len(projected) > 1
    # a copy either way (kernels reuse their output buffers), normed in place
    flat = np.concatenate(projected, axis=-1) if owns_kv else projected[0].copy()
    del projected
    normed = flat.reshape(t, -1, hd)  # [T, nH(+2·n_kv), hd]
    normed *= inv_rms(normed, cfg.rms_norm_eps)
    normed *= w.qkv_norm
    if not owns_kv:
        return rotate(normed, cos, sin), None, None
    n_qk = n_q + cfg.num_key_value_heads
    rotated = rotate(normed[:, :n_qk], cos, sin)  # [T, nH+n_kv, hd]
    return rotated[:, :n_q], rotated[:, n_q:], normed[:, n_qk:]


def self_attention(
    k: LayerKernels, q: np.ndarray, kv: KVView, step: Step, sliding: bool, cfg: TextConfig
) -> np.ndarray:
    """Attention of the new queries over ``kv`` (cache plus themselves): ``-> [T, H]``."""
    keys, values, k_pos = kv
    mask = step.mask(sliding, k_pos, cfg.sliding_window if sliding else None)  # [T, S]
    out = attention(q, keys, values, mask)  # [T, nH, hd]
    return k.o_proj(out.reshape(q.shape[0], -1))  # [T, nH*hd] -> [T, H]


FFN_ELEMENTS = 2**19
"""Activations per ``[T, I]`` FFN intermediate in a long prefill (2 MB of float32): they are the
largest of the model (I up to 16384), and tokens are independent there, so a prefill runs the
FFN in row blocks of ``FFN_ELEMENTS // I`` tokens (64 at I = 8192, 32 at 16384)."""


def mlp(ffn: FFN, x: np.ndarray, width: int, sparsity: float) -> np.ndarray:
    """Gated GELU FFN on the first ``width`` units (MatFormer slabs): ``[T, H] -> [T, H]``.

    ``down(gelu(gate) · up)``; with activation sparsity, ``gate`` first becomes
    ``relu(gate − cutoff)``, the cutoff taken over all ``width`` units (per token).
    """
    rows = max(1, FFN_ELEMENTS // width)
    if x.shape[0] > rows:
        blocks = range(0, x.shape[0], rows)
        return np.concatenate([mlp(ffn, x[i : i + rows], width, sparsity) for i in blocks])
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
