"""Read-only weights of the vision tower and its embedder, as views of the checkpoint.

Conv kernels and matrices stay memory-mapped in their stored dtype (widened
to float32 at the point of use); norm weights, biases and layer scales are
widened once. Attribute names follow the checkpoint keys under
``model.vision_tower.timm_model.`` (timm's ``MobileNetV5Encoder`` state dict)
and ``model.embed_vision.``; every tensor's shape is checked when the weights
are collected, and a missing or mis-shaped tensor is a :class:`CheckpointError`
naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.engine.tower_weights import EmbedderWeights, TensorReader, tower_prefix
from edgeagent.engine.vision.config import BlockSpec, VisionConfig

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

TOWER_PREFIXES = ("model.vision_tower.timm_model.", "vision_tower.timm_model.")
EMBED_PREFIXES = ("model.embed_vision.", "embed_vision.")


@dataclass(frozen=True)
class ConvNorm:
    """``*.conv.weight`` + ``*.bn.weight`` (timm ``ConvNormAct`` with ``RmsNormAct2d``)."""

    conv: np.ndarray  # [out, in/groups, k, k]
    norm: np.ndarray  # [out] f32


@dataclass(frozen=True)
class StemWeights:
    """``conv_stem.*``: 3×3 stride-2 conv with bias, RMSNorm, GELU."""

    conv: np.ndarray  # [C, 3, 3, 3]
    bias: np.ndarray  # [C] f32
    norm: np.ndarray  # [C] f32


@dataclass(frozen=True)
class EdgeResidualWeights:
    """``blocks.S.I.*`` of an ``er`` block."""

    conv_exp: np.ndarray  # [mid, in, k, k]
    bn1: np.ndarray  # [mid] f32
    conv_pwl: np.ndarray  # [out, mid, 1, 1]
    bn2: np.ndarray  # [out] f32


@dataclass(frozen=True)
class UniversalInvertedResidualWeights:
    """``blocks.S.I.*`` of a ``uir`` block (also the MSFA's ``ffn``)."""

    dw_start: ConvNorm | None  # conv [in, 1, a, a]
    pw_exp: ConvNorm  # conv [mid, in, 1, 1]
    dw_mid: ConvNorm | None  # conv [mid, 1, k, k]
    pw_proj: ConvNorm  # conv [out, mid, 1, 1]
    layer_scale: np.ndarray | None  # [out] f32 (``layer_scale.gamma``)


@dataclass(frozen=True)
class KeyValueWeights:
    """``attn.key.*`` or ``attn.value.*``: optional strided depthwise down conv + norm, 1×1."""

    down_conv: np.ndarray | None  # [in, 1, k, k]
    norm: np.ndarray | None  # [in] f32
    proj: np.ndarray  # [kd, in, 1, 1]


@dataclass(frozen=True)
class MobileAttentionWeights:
    """``blocks.S.I.*`` of an ``mqa`` block."""

    norm: np.ndarray  # [in] f32
    query: np.ndarray  # [heads·kd, in, 1, 1] (attn.query.proj)
    key: KeyValueWeights
    value: KeyValueWeights
    output: np.ndarray  # [out, heads·kd, 1, 1] (attn.output.proj)
    layer_scale: np.ndarray  # [out] f32


BlockWeights = EdgeResidualWeights | UniversalInvertedResidualWeights | MobileAttentionWeights


@dataclass(frozen=True)
class MsfaWeights:
    """``msfa.*``: the multi-scale fusion adapter (a 1×1 inverted residual, then RMSNorm)."""

    ffn: UniversalInvertedResidualWeights
    norm: np.ndarray  # [hidden] f32


@dataclass(frozen=True)
class VisionWeights:
    """Everything the vision path reads from a checkpoint."""

    stem: StemWeights
    blocks: tuple[BlockWeights, ...]
    msfa: MsfaWeights
    embedder: EmbedderWeights

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, cfg: VisionConfig) -> VisionWeights:
        """Collect and shape-check views of every vision tensor; nothing is copied."""
        tower, embed = (
            tower_prefix(ckpt, TOWER_PREFIXES, "vision"),
            tower_prefix(ckpt, EMBED_PREFIXES, "vision"),
        )
        return cls.from_tensors(ckpt.raw_tensor, cfg, tower, embed, str(ckpt.path))

    @classmethod
    def from_tensors(
        cls,
        get: Callable[[str], np.ndarray],
        cfg: VisionConfig,
        tower_prefix: str = TOWER_PREFIXES[0],
        embed_prefix: str = EMBED_PREFIXES[0],
        source: str = "vision weights",
    ) -> VisionWeights:
        """The same from any ``get(full_name) -> array`` (in-memory weights, benchmarks)."""
        t = TensorReader(get, tower_prefix, source)
        e = TensorReader(get, embed_prefix, source)
        c = cfg.stem_size
        stem = StemWeights(
            conv=t.mat("conv_stem.conv.weight", (c, 3, 3, 3)),
            bias=t.vec("conv_stem.conv.bias", (c,)),
            norm=t.vec("conv_stem.bn.weight", (c,)),
        )
        blocks: list[BlockWeights] = []
        for s, stage in enumerate(cfg.stages):
            for i, spec in enumerate(stage):
                blocks.append(_block(t, f"blocks.{s}.{i}.", spec))
        msfa_spec = BlockSpec(
            "uir", cfg.msfa_in_chs, cfg.hidden_size, 1,
            exp_ratio=cfg.msfa_expansion_ratio, noskip=True,
        )  # fmt: skip
        msfa = MsfaWeights(
            ffn=_uir(t, "msfa.ffn.", msfa_spec, layer_scale=False),
            norm=t.vec("msfa.norm.weight", (cfg.hidden_size,)),
        )
        embedder = EmbedderWeights.read(e, cfg.vocab_size, cfg.hidden_size, cfg.text_hidden_size)
        return cls(stem=stem, blocks=tuple(blocks), msfa=msfa, embedder=embedder)


def _block(t: TensorReader, p: str, spec: BlockSpec) -> BlockWeights:
    if spec.kind == "er":
        mid, k = spec.mid_chs, spec.kernel
        return EdgeResidualWeights(
            conv_exp=t.mat(p + "conv_exp.weight", (mid, spec.in_chs, k, k)),
            bn1=t.vec(p + "bn1.weight", (mid,)),
            conv_pwl=t.mat(p + "conv_pwl.weight", (spec.out_chs, mid, 1, 1)),
            bn2=t.vec(p + "bn2.weight", (spec.out_chs,)),
        )
    if spec.kind == "uir":
        return _uir(t, p, spec, layer_scale=True)
    c, kd, k = spec.in_chs, spec.key_dim, spec.kernel

    def kv(q: str) -> KeyValueWeights:
        strided = spec.kv_stride > 1
        return KeyValueWeights(
            down_conv=t.mat(q + "down_conv.weight", (c, 1, k, k)) if strided else None,
            norm=t.vec(q + "norm.weight", (c,)) if strided else None,
            proj=t.mat(q + "proj.weight", (kd, c, 1, 1)),
        )

    return MobileAttentionWeights(
        norm=t.vec(p + "norm.weight", (c,)),
        query=t.mat(p + "attn.query.proj.weight", (spec.num_heads * kd, c, 1, 1)),
        key=kv(p + "attn.key."),
        value=kv(p + "attn.value."),
        output=t.mat(p + "attn.output.proj.weight", (spec.out_chs, spec.num_heads * kd, 1, 1)),
        layer_scale=t.vec(p + "layer_scale.gamma", (spec.out_chs,)),
    )


def _uir(
    t: TensorReader, p: str, spec: BlockSpec, *, layer_scale: bool
) -> UniversalInvertedResidualWeights:
    mid, a, k = spec.mid_chs, spec.start_kernel, spec.kernel

    def conv_norm(name: str, shape: tuple[int, ...]) -> ConvNorm:
        return ConvNorm(
            t.mat(f"{p}{name}.conv.weight", shape), t.vec(f"{p}{name}.bn.weight", shape[:1])
        )

    return UniversalInvertedResidualWeights(
        dw_start=conv_norm("dw_start", (spec.in_chs, 1, a, a)) if a else None,
        pw_exp=conv_norm("pw_exp", (mid, spec.in_chs, 1, 1)),
        dw_mid=conv_norm("dw_mid", (mid, 1, k, k)) if k else None,
        pw_proj=conv_norm("pw_proj", (spec.out_chs, mid, 1, 1)),
        layer_scale=t.vec(p + "layer_scale.gamma", (spec.out_chs,)) if layer_scale else None,
    )
