"""The conformer blocks of Gemma 3n's audio encoder, one function per part, with their state.

A block: half-step FFN → local self-attention → light conv → half-step FFN
→ RMSNorm. Everything here is causal, so a block can run on the newest
frames alone given a little state per layer:

- attention: the keys and values of the last ``context_left − 1`` frames
  (12 released). transformers computes it in chunks of 12 queries against
  24-frame key windows with a mask ``w ≤ c ≤ w + 12``; that is exactly "each
  frame attends to itself and the 12 frames before it", whatever the chunk
  size, so the state is a sliding window of keys and values.
- light conv: the last ``kernel − 1`` GLU outputs (4 released) — the causal
  depthwise conv's left padding, zeros at the start.

Shapes: ``n`` new frames, ``H`` hidden, ``N`` heads, ``d`` head width,
``D = context_left`` attended distances (13 released). All float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.audio.kernels import (
    AudioKernels,
    Linear,
    Projections,
    fused_or_composed,
    rms_norm,
    silu,
)
from edgeagent.engine.audio.weights import (
    ConformerWeights,
    FeedForwardWeights,
)
from edgeagent.engine.reference import linear, softmax

F32 = np.float32


def timing_signal(positions: np.ndarray, channels: int) -> np.ndarray:
    """Sinusoidal position signal ``[P] -> [P, channels]`` (sin half, then cos half).

    Timescales from 1 to 1e4 as in transformers'
    ``Gemma3nAudioRelativePositionEmbedding``, in float32.
    """
    n = channels // 2
    increment = F32(math.log(1.0e4) / max(n - 1, 1))
    inv_timescales = np.exp(np.arange(n, dtype=F32) * -increment)  # [n]
    scaled = positions.astype(F32)[:, None] * inv_timescales[None, :]  # [P, n]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=-1)


@dataclass(frozen=True)
class BlockKernels:
    """What one conformer block calls: its projections, grouped as the backend fuses them."""

    ffw_start: Linear  # W2·silu(W1·h)
    qkv: Projections  # (q, k, v) of one input
    post: Linear
    glu: Linear  # glu(linear_start·h)
    linear_end: Linear
    ffw_end: Linear  # W2·silu(W1·h)

    @classmethod
    def of(cls, kernels: AudioKernels, i: int) -> BlockKernels:
        p = f"conformer.{i}."
        return cls(
            ffw_start=fused_or_composed(kernels, i, "ffw_layer_start"),
            qkv=fused_or_composed(kernels, i, "attention.attn.qkv"),
            post=kernels[p + "attention.post"],
            glu=fused_or_composed(kernels, i, "lconv1d.glu"),
            linear_end=kernels[p + "lconv1d.linear_end"],
            ffw_end=fused_or_composed(kernels, i, "ffw_layer_end"),
        )


class ConformerBlock:
    """One block's constants (weights, kernels, precomputed position table)."""

    def __init__(self, cfg: AudioConfig, w: ConformerWeights, kernels: BlockKernels) -> None:
        self.cfg, self.w, self.k = cfg, w, kernels
        a = w.attention
        hd = cfg.head_dim
        # q · softplus(per_dim_scale) · hd^-½ / softplus(0), as the reference folds it.
        q_scale = F32(hd**-0.5) * (F32(1.0) / np.logaddexp(F32(0.0), F32(0.0)))
        self.q_scale = (q_scale * np.logaddexp(F32(0.0), a.per_dim_scale)).astype(F32)  # [d]
        distances = np.arange(cfg.context_left)  # 0 … D−1: query position − key position
        table = linear(timing_signal(distances, cfg.hidden_size), a.pos_proj)  # [D, H]
        by_head = table.reshape(cfg.context_left, cfg.num_heads, hd).transpose(1, 2, 0)
        self.positions = np.ascontiguousarray(by_head)  # [N, d, D]


@dataclass
class BlockState:
    """What one block remembers between pushes."""

    keys: np.ndarray  # [≤ D−1, N, d] the newest frames' keys
    values: np.ndarray  # [≤ D−1, N, d]
    conv: np.ndarray  # [K−1, H] the newest GLU outputs (zeros at the start)

    @classmethod
    def empty(cls, cfg: AudioConfig) -> BlockState:
        kv = np.zeros((0, cfg.num_heads, cfg.head_dim), F32)
        return cls(kv, kv, np.zeros((cfg.conv_kernel_size - 1, cfg.hidden_size), F32))


def _clip(x: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """The reference's ``clamp(±gradient_clipping)`` (1e10: a no-op on finite values).

    Two ufuncs rather than ``np.clip``, whose Python-level wrappers cost more than
    the clamp itself on a push's few rows (NaN passes through either way)."""
    limit = cfg.gradient_clipping
    return np.minimum(np.maximum(x, -limit), limit)


def _newest(x: np.ndarray, keep: int) -> np.ndarray:
    """The last ``keep`` rows of ``x`` (all of them when there are fewer)."""
    return x[max(0, len(x) - keep) :]


def feed_forward(x: np.ndarray, w: FeedForwardWeights, k: Linear, cfg: AudioConfig) -> np.ndarray:
    """Half-step FFN: ``x + ½·post_norm(W2·silu(W1·pre_norm(x)))``. ``[n, H] -> [n, H]``."""
    h = rms_norm(_clip(x, cfg), w.pre_layer_norm, cfg.rms_norm_eps)
    h = k(h)  # W2·silu(W1·h): [n, H] -> [n, 4H] -> [n, H]
    return x + rms_norm(_clip(h, cfg), w.post_layer_norm, cfg.rms_norm_eps) * F32(
        cfg.residual_weight
    )


def local_attention(block: ConformerBlock, x: np.ndarray, state: BlockState) -> np.ndarray:
    """Each frame attends to itself and the ``D − 1`` frames before it. ``[n, H] -> [n, H]``.

    Logits: content ``q·k`` plus position ``q·pos[distance]``, soft-capped
    ``cap·tanh(z/cap)``; frames before the first one do not exist (masked).
    """
    cfg, w, k = block.cfg, block.w.attention, block.k
    n, heads, hd, span = len(x), cfg.num_heads, cfg.head_dim, cfg.context_left
    h = rms_norm(_clip(x, cfg), w.pre_attn_norm, cfg.rms_norm_eps)
    q_new, k_new, v_new = k.qkv(h)  # [n, H] each
    q = q_new.reshape(n, heads, hd) * block.q_scale  # [n, N, d]
    keys = np.concatenate([state.keys, k_new.reshape(n, heads, hd)])  # [m+n, N, d]
    values = np.concatenate([state.values, v_new.reshape(n, heads, hd)])
    m = len(state.keys)
    index = (m + np.arange(n))[:, None] - np.arange(span)[None, :]  # [n, D] key row per distance
    valid = index >= 0
    index = np.maximum(index, 0)
    # per query and head a [1, d] @ [d, D] product: the same arithmetic however many queries
    rows = q[:, :, None, :]  # [n, N, 1, d]
    content = np.matmul(rows, keys[index].transpose(0, 2, 3, 1))[:, :, 0]  # [n, N, D]
    position = np.matmul(rows, block.positions)[:, :, 0]  # [n, N, D]
    cap = F32(cfg.logit_cap)
    logits = np.tanh((content + position) / cap) * cap
    logits = np.where(valid[:, None, :], logits, np.finfo(F32).min)
    probs = softmax(logits, axis=-1)  # [n, N, D]
    attended = values[index].transpose(0, 2, 1, 3)  # [n, N, D, d]
    context = np.matmul(probs[:, :, None, :], attended)[:, :, 0].reshape(n, heads * hd)
    state.keys, state.values = _newest(keys, span - 1), _newest(values, span - 1)
    out = _clip(k.post(context), cfg)  # [n, H]
    return x + rms_norm(out, w.post_norm, cfg.rms_norm_eps)


def light_conv(block: ConformerBlock, x: np.ndarray, state: BlockState) -> np.ndarray:
    """GLU → causal depthwise conv → RMSNorm → SiLU → linear, plus residual. ``[n, H]``."""
    cfg, w, k = block.cfg, block.w.lconv1d, block.k
    n, width = len(x), cfg.conv_kernel_size
    glu = k.glu(rms_norm(x, w.pre_layer_norm, cfg.rms_norm_eps))  # [n, H] -> [n, 2H] -> [n, H]
    history = np.concatenate([state.conv, glu])  # [K−1+n, H]
    conv = np.zeros_like(glu)
    for tap in range(width):  # out[t] = Σ_k w[:, k] · in[t − (K−1) + k]
        conv += history[tap : tap + n] * w.depthwise_conv1d[:, tap]
    state.conv = history[n:]
    h = silu(rms_norm(_clip(conv, cfg), w.conv_norm, cfg.rms_norm_eps))
    return x + k.linear_end(h)


def conformer_block(block: ConformerBlock, x: np.ndarray, state: BlockState) -> np.ndarray:
    """One block on new frames ``[n, H] -> [n, H]``, advancing ``state``."""
    cfg, w = block.cfg, block.w
    x = feed_forward(x, w.ffw_layer_start, block.k.ffw_start, cfg)
    x = local_attention(block, x, state)
    x = light_conv(block, x, state)
    x = feed_forward(x, w.ffw_layer_end, block.k.ffw_end, cfg)
    return rms_norm(_clip(x, cfg), w.norm, cfg.rms_norm_eps)
