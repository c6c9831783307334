"""One decoded token through a decoder layer, with the work between kernels compiled.

:meth:`TextModel.decoder_layer <edgeagent.engine.model.TextModel.decoder_layer>`
(numpy, :mod:`edgeagent.engine.layers`) defines a layer and runs every pass of
several tokens. A single token's layer does the same arithmetic here, with each
stretch between two kernel calls one call into :mod:`edgeagent.engine._glue`
(C): its vectors are 2048 floats, so numpy's per-call dispatch, not the
arithmetic, was what it cost (E2B, 4-bit: ~9 ms a token against ~52 ms of
kernels). The kernels are the same objects either way, so both backends use it.

KV caches stored as fp16 or int8 are widened by the cache's own ``read`` before
attention, as on the numpy path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.engine import _glue
from edgeagent.engine.config import TextConfig
from edgeagent.engine.kv_cache import KVView
from edgeagent.engine.reference import F32, normal_quantile

if TYPE_CHECKING:
    from edgeagent.engine.layers import Step
    from edgeagent.engine.model import RunState, TextModel


@dataclass
class DecodeScratch:
    """The vectors one decoded token's layers write, allocated once per step (``[1, width]``)."""

    normed: np.ndarray  # [1, H] the attention's input
    q: np.ndarray  # [nH*hd] normed, rotated queries
    k: np.ndarray  # [1, n_kv, hd] normed, rotated keys
    v: np.ndarray  # [1, n_kv, hd] normed values
    attn: np.ndarray  # [1, nH*hd] attention output
    x: np.ndarray  # [1, H] after attention's residuals
    ffn_in: np.ndarray  # [1, H]
    cutoff: np.ndarray  # [1, 1] activation-sparsity cutoff
    first: np.ndarray  # [1, H] the per-layer gate's input

    @classmethod
    def for_config(cls, cfg: TextConfig) -> DecodeScratch:
        h, hd = cfg.hidden_size, cfg.head_dim
        n_q, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

        def zeros(*shape: int) -> np.ndarray:
            return np.zeros(shape, dtype=F32)

        return cls(
            normed=zeros(1, h),
            q=zeros(n_q * hd),
            k=zeros(1, n_kv, hd),
            v=zeros(1, n_kv, hd),
            attn=zeros(1, n_q * hd),
            x=zeros(1, h),
            ffn_in=zeros(1, h),
            cutoff=zeros(1, 1),
            first=zeros(1, h),
        )


def decode_layer(
    model: TextModel,
    i: int,
    streams: np.ndarray,
    per_layer_input: np.ndarray,
    state: RunState,
    step: Step,
    shared: dict[bool, KVView],
    scratch: DecodeScratch,
) -> np.ndarray:
    """Layer ``i`` for one token: ``streams`` ``[n, 1, H]`` updated in place and returned."""
    cfg, eps = model.config, model.config.rms_norm_eps
    lw, kern = model.weights.layers[i], model.kernels.layers[i]
    a, s = cfg.altup_active_idx, scratch
    # AltUp predict (in place) and the attention's input norm
    _glue.predict(
        streams, lw.altup.router, lw.altup.prediction_coefs, lw.input_layernorm, s.normed, a, eps
    )
    low_rank = kern.laurel(s.normed)  # [1, H]: consumed before LAuReL's next call
    projected = kern.attn_in(s.normed)  # [1, nH*hd] (, [1, n_kv*hd] ×2)
    sliding = cfg.is_sliding(i)
    cos, sin = step.rope(sliding)  # [1, 1, hd] each
    qkv_norm = lw.self_attn.qkv_norm  # [nH (+2·n_kv), hd]
    n_q = cfg.num_attention_heads
    _glue.norm_rope(projected[0], qkv_norm[:n_q], cos, sin, s.q, n_q, eps)
    if len(projected) > 1:
        n_kv = cfg.num_key_value_heads
        _glue.norm_rope(projected[1], qkv_norm[n_q : n_q + n_kv], cos, sin, s.k, n_kv, eps)
        _glue.norm_rope(projected[2], qkv_norm[n_q + n_kv :], cos, sin, s.v, 0, eps)
        kv = state.cache.layers[i].extend(s.k, s.v, step.positions)
        shared[sliding] = kv  # the last owner of each type feeds the shared layers
    else:
        kv = shared[sliding]
    keys, values, _ = kv  # a decoded token sees every entry its cache returns
    _glue.attend(s.q, keys, values, s.attn)
    attn = kern.o_proj(s.attn)  # [1, H]
    _glue.post_attention(
        attn,
        lw.post_attention_layernorm,
        streams[a],
        low_rank,
        lw.post_laurel_norm,
        s.normed,
        lw.pre_feedforward_layernorm,
        s.x,
        s.ffn_in,
        eps,
    )
    parts = _ffn(model, i, state.tier.ffn_dims[i], s)
    scale = lw.altup.correct_output_scale if cfg.altup_correct_scale else None
    _glue.correct(
        parts,
        lw.post_feedforward_layernorm,
        s.x,
        streams,
        lw.altup.router,
        lw.altup.correction_coefs,
        scale,
        s.first,
        a,
        eps,
    )
    update = kern.per_layer_gate(s.first, per_layer_input)  # [1, H]
    _glue.add_update(update, lw.post_per_layer_input_norm, streams, eps)
    return streams


def _ffn(model: TextModel, i: int, width: int, s: DecodeScratch) -> list[np.ndarray]:
    """The FFN slabs' outputs ``[1, H]`` each (summed by the caller)."""
    slabs = model.kernels.layers[i].ffn.slabs(width)
    if all(slab.fused is not None for slab in slabs):
        return [slab.fused(s.ffn_in) for slab in slabs if slab.fused is not None]
    parts = []
    for slab in slabs:
        assert slab.gate_up is not None
        parts.append(slab.gate_up(s.ffn_in))  # gate, up [1, stop−start]
    sparsity = model.config.activation_sparsity[i]
    cutoff = None
    if sparsity > 0.0:
        quantile = float(normal_quantile(sparsity))  # cached
        _glue.sparsity_cutoff([gate for gate, _ in parts], quantile, s.cutoff)
        cutoff = s.cutoff
    outputs = []
    for slab, (gate, up) in zip(slabs, parts, strict=True):
        assert slab.down is not None
        outputs.append(slab.down(gate, up, cutoff))  # [1, H]
    return outputs
