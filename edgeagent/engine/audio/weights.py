"""Read-only weights of the audio encoder and its embedder, as views of the checkpoint.

Matrices stay memory-mapped in their stored dtype; vectors (norm weights,
per-dim scales, depthwise and sub-sampling conv kernels) are widened to
float32 once. Attribute names follow the checkpoint keys under
``model.audio_tower.`` and ``model.embed_audio.``; every tensor's shape is
checked when the weights are collected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.tower_weights import EmbedderWeights, TensorReader, tower_prefix

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

_TOWER_PREFIXES = ("model.audio_tower.", "audio_tower.")
_EMBED_PREFIXES = ("model.embed_audio.", "embed_audio.")


@dataclass(frozen=True)
class FeedForwardWeights:
    """``conformer.N.ffw_layer_{start,end}.*``: half-step SiLU FFN."""

    pre_layer_norm: np.ndarray  # [H] f32
    ffw_layer_1: np.ndarray  # [4H, H]
    ffw_layer_2: np.ndarray  # [H, 4H]
    post_layer_norm: np.ndarray  # [H] f32


@dataclass(frozen=True)
class AttentionWeights:
    """``conformer.N.attention.*``: chunked local self-attention with relative positions."""

    pre_attn_norm: np.ndarray  # [H] f32
    per_dim_scale: np.ndarray  # [hd] f32 (attn.per_dim_scale)
    pos_proj: np.ndarray  # [H, H] (attn.relative_position_embedding.pos_proj)
    q_proj: np.ndarray  # [H, H]
    k_proj: np.ndarray  # [H, H]
    v_proj: np.ndarray  # [H, H]
    post: np.ndarray  # [H, H]
    post_norm: np.ndarray  # [H] f32


@dataclass(frozen=True)
class LightConvWeights:
    """``conformer.N.lconv1d.*``: GLU, causal depthwise conv, SiLU."""

    pre_layer_norm: np.ndarray  # [H] f32
    linear_start: np.ndarray  # [2H, H]
    depthwise_conv1d: np.ndarray  # [H, K] f32 (stored [H, 1, K])
    conv_norm: np.ndarray  # [H] f32
    linear_end: np.ndarray  # [H, H]


@dataclass(frozen=True)
class ConformerWeights:
    """``conformer.N.*``."""

    ffw_layer_start: FeedForwardWeights
    attention: AttentionWeights
    lconv1d: LightConvWeights
    ffw_layer_end: FeedForwardWeights
    norm: np.ndarray  # [H] f32


@dataclass(frozen=True)
class SubsampleWeights:
    """``subsample_conv_projection.*``: two 2-D convs with cumulative group norms."""

    conv_0: np.ndarray  # [C0, 1, kt, kf] f32
    norm_0: np.ndarray  # [C0] f32
    conv_1: np.ndarray  # [C1, C0, kt, kf] f32
    norm_1: np.ndarray  # [C1] f32
    input_proj_linear: np.ndarray  # [H, C1*F1]


@dataclass(frozen=True)
class AudioWeights:
    """Everything the audio path reads from a checkpoint."""

    subsample: SubsampleWeights
    conformer: tuple[ConformerWeights, ...]
    embedder: EmbedderWeights

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, cfg: AudioConfig) -> AudioWeights:
        """Collect and shape-check views of every audio tensor; no matrix is copied."""
        tower, embed = (
            tower_prefix(ckpt, _TOWER_PREFIXES, "audio"),
            tower_prefix(ckpt, _EMBED_PREFIXES, "audio"),
        )
        return cls.from_tensors(ckpt.raw_tensor, cfg, tower, embed, str(ckpt.path))

    @classmethod
    def from_tensors(
        cls,
        get: Callable[[str], np.ndarray],
        cfg: AudioConfig,
        tower_prefix: str = _TOWER_PREFIXES[0],
        embed_prefix: str = _EMBED_PREFIXES[0],
        source: str = "audio weights",
    ) -> AudioWeights:
        """The same from any ``get(full_name) -> array`` (in-memory weights, benchmarks)."""
        tower = TensorReader(get, tower_prefix, source)
        embed = TensorReader(get, embed_prefix, source)
        h, hd, k = cfg.hidden_size, cfg.head_dim, cfg.conv_kernel_size
        c0, c1 = cfg.sscp_channels
        (kt0, kf0), (kt1, kf1) = cfg.sscp_kernels
        f1 = cfg.sscp_freq_sizes[2]
        p = "subsample_conv_projection."
        subsample = SubsampleWeights(
            conv_0=tower.vec(p + "conv_0.conv.weight", (c0, 1, kt0, kf0)),
            norm_0=tower.vec(p + "conv_0.norm.weight", (c0,)),
            conv_1=tower.vec(p + "conv_1.conv.weight", (c1, c0, kt1, kf1)),
            norm_1=tower.vec(p + "conv_1.norm.weight", (c1,)),
            input_proj_linear=tower.mat(p + "input_proj_linear.weight", (h, c1 * f1)),
        )

        def ffw(q: str) -> FeedForwardWeights:
            return FeedForwardWeights(
                pre_layer_norm=tower.vec(q + "pre_layer_norm.weight", (h,)),
                ffw_layer_1=tower.mat(q + "ffw_layer_1.weight", (4 * h, h)),
                ffw_layer_2=tower.mat(q + "ffw_layer_2.weight", (h, 4 * h)),
                post_layer_norm=tower.vec(q + "post_layer_norm.weight", (h,)),
            )

        blocks = []
        for i in range(cfg.num_layers):
            q = f"conformer.{i}."
            a = q + "attention."
            blocks.append(
                ConformerWeights(
                    ffw_layer_start=ffw(q + "ffw_layer_start."),
                    attention=AttentionWeights(
                        pre_attn_norm=tower.vec(a + "pre_attn_norm.weight", (h,)),
                        per_dim_scale=tower.vec(a + "attn.per_dim_scale", (hd,)),
                        pos_proj=tower.mat(
                            a + "attn.relative_position_embedding.pos_proj.weight", (h, h)
                        ),
                        q_proj=tower.mat(a + "attn.q_proj.weight", (h, h)),
                        k_proj=tower.mat(a + "attn.k_proj.weight", (h, h)),
                        v_proj=tower.mat(a + "attn.v_proj.weight", (h, h)),
                        post=tower.mat(a + "post.weight", (h, h)),
                        post_norm=tower.vec(a + "post_norm.weight", (h,)),
                    ),
                    lconv1d=LightConvWeights(
                        pre_layer_norm=tower.vec(q + "lconv1d.pre_layer_norm.weight", (h,)),
                        linear_start=tower.mat(q + "lconv1d.linear_start.weight", (2 * h, h)),
                        depthwise_conv1d=tower.vec(
                            q + "lconv1d.depthwise_conv1d.weight", (h, 1, k)
                        ).reshape(h, k),
                        conv_norm=tower.vec(q + "lconv1d.conv_norm.weight", (h,)),
                        linear_end=tower.mat(q + "lconv1d.linear_end.weight", (h, h)),
                    ),
                    ffw_layer_end=ffw(q + "ffw_layer_end."),
                    norm=tower.vec(q + "norm.weight", (h,)),
                )
            )
        embedder = EmbedderWeights.read(embed, cfg.vocab_size, h, cfg.text_hidden_size)
        return cls(subsample=subsample, conformer=tuple(blocks), embedder=embedder)
