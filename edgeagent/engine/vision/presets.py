"""The random vision tower that ``edgeagent model init --layout multimodal`` writes.

The released E2B and E4B share one vision tower (timm ``mobilenetv5_300m_enc``,
~294 M parameters, MSFA output 2048) and differ only in ``embed_vision``'s
output width, the text hidden size. The ``tiny`` tower keeps every block type
(stem, EdgeResidual, UIR with start/mid depthwise convs, MobileAttention with
and without kv stride, the MSFA over the last two stages) at small widths.

The preset is chosen by the text decoder's width: 2048 (e2b, e4b) gets the
released tower, anything else ``tiny``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeagent.engine.config import TextConfig
from edgeagent.engine.safetensors_io import TensorSpec
from edgeagent.engine.tower_weights import random_tensors
from edgeagent.engine.vision.config import (
    ARCHITECTURE,
    STRUCTURE_KEY,
    BlockSpec,
    VisionConfig,
)

TOWER = "model.vision_tower.timm_model."
EMBED = "model.embed_vision."
TINY_STRUCTURE: dict[str, Any] = {
    "stem_size": 8,
    "arch_def": [
        ["er_r1_k3_s2_e4_c8"],
        ["uir_r1_a3_k5_s2_e4_c16"],
        ["uir_r1_a5_k5_s2_e4_c16", "mqa_r1_k3_h2_v2_s1_d8_c16"],
        ["uir_r1_a5_k5_s2_e4_c24", "mqa_r1_k3_h2_s1_d8_c24", "uir_r1_a0_k0_s1_e2_c24"],
    ],
    "msfa_indices": [-2, -1],
    "msfa_output_resolution": 16,
    "msfa_expansion_ratio": 2.0,
}
VISION_PRESETS: dict[str, dict[str, Any]] = {
    "released": {"hidden_size": 2048},
    "tiny": {"hidden_size": 32, STRUCTURE_KEY: TINY_STRUCTURE},
}
_NORMS = ("bn.weight", "bn1.weight", "bn2.weight", "norm.weight")


def vision_preset_name(text: TextConfig) -> str:
    """Which vision tower goes with a text decoder of this width."""
    return "released" if text.hidden_size == 2048 else "tiny"


def vision_config_dict(text: TextConfig) -> dict[str, Any]:
    """The ``vision_config`` of ``config.json`` for a random multimodal checkpoint.

    The vision vocabulary (hard tokens) starts right after the text vocabulary
    (``vocab_size_per_layer_input``): 128 ids released, half of what is left in
    scaled presets (the audio ids take the other half).
    """
    vocab = min(128, max(1, (text.vocab_size - text.vocab_size_per_layer_input) // 2))
    return {
        "model_type": "gemma3n_vision",
        "architecture": ARCHITECTURE,
        "do_pooling": False,
        "model_args": None,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "vocab_offset": text.vocab_size_per_layer_input,
        **VISION_PRESETS[vision_preset_name(text)],
    }


def _block_shapes(p: str, b: BlockSpec) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of one block, in timm's order."""
    if b.kind == "er":
        k = b.kernel
        return {
            p + "conv_exp.weight": (b.mid_chs, b.in_chs, k, k),
            p + "bn1.weight": (b.mid_chs,),
            p + "conv_pwl.weight": (b.out_chs, b.mid_chs, 1, 1),
            p + "bn2.weight": (b.out_chs,),
        }
    if b.kind == "uir":
        return _uir_shapes(p, b, layer_scale=True)
    c, kd, k = b.in_chs, b.key_dim, b.kernel
    out = {p + "norm.weight": (c,), p + "attn.query.proj.weight": (b.num_heads * kd, c, 1, 1)}
    for part in ("key", "value"):
        q = f"{p}attn.{part}."
        if b.kv_stride > 1:
            out[q + "down_conv.weight"] = (c, 1, k, k)
            out[q + "norm.weight"] = (c,)
        out[q + "proj.weight"] = (kd, c, 1, 1)
    out[p + "attn.output.proj.weight"] = (b.out_chs, b.num_heads * kd, 1, 1)
    out[p + "layer_scale.gamma"] = (b.out_chs,)
    return out


def _uir_shapes(p: str, b: BlockSpec, *, layer_scale: bool) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    if b.start_kernel:
        out[p + "dw_start.conv.weight"] = (b.in_chs, 1, b.start_kernel, b.start_kernel)
        out[p + "dw_start.bn.weight"] = (b.in_chs,)
    out[p + "pw_exp.conv.weight"] = (b.mid_chs, b.in_chs, 1, 1)
    out[p + "pw_exp.bn.weight"] = (b.mid_chs,)
    if b.kernel:
        out[p + "dw_mid.conv.weight"] = (b.mid_chs, 1, b.kernel, b.kernel)
        out[p + "dw_mid.bn.weight"] = (b.mid_chs,)
    out[p + "pw_proj.conv.weight"] = (b.out_chs, b.mid_chs, 1, 1)
    out[p + "pw_proj.bn.weight"] = (b.out_chs,)
    if layer_scale:
        out[p + "layer_scale.gamma"] = (b.out_chs,)
    return out


def tower_shapes(cfg: VisionConfig) -> dict[str, tuple[int, ...]]:
    """Every tower tensor (relative to ``timm_model.``) and its shape, in timm's order."""
    c = cfg.stem_size
    shapes: dict[str, tuple[int, ...]] = {
        "conv_stem.conv.weight": (c, 3, 3, 3),
        "conv_stem.conv.bias": (c,),
        "conv_stem.bn.weight": (c,),
    }
    for s, stage in enumerate(cfg.stages):
        for i, b in enumerate(stage):
            shapes.update(_block_shapes(f"blocks.{s}.{i}.", b))
    msfa = BlockSpec("uir", cfg.msfa_in_chs, cfg.hidden_size, 1, exp_ratio=cfg.msfa_expansion_ratio)
    shapes.update(_uir_shapes("msfa.ffn.", msfa, layer_scale=False))
    shapes["msfa.norm.weight"] = (cfg.hidden_size,)
    return shapes


def vision_tensor_specs(text: TextConfig, dtype: np.dtype[Any]) -> list[TensorSpec]:
    """Every ``model.vision_tower.*`` and ``model.embed_vision.*`` tensor, in timm's and
    transformers' order."""
    cfg = VisionConfig.from_dict(vision_config_dict(text), text.hidden_size, "vision preset")
    specs = [TensorSpec(TOWER + n, dtype, s) for n, s in tower_shapes(cfg).items()]
    h = cfg.hidden_size
    embed = {
        "embedding.weight": (cfg.vocab_size, h),
        "hard_embedding_norm.weight": (h,),
        "soft_embedding_norm.weight": (h,),
        "embedding_projection.weight": (text.hidden_size, h),
    }
    return specs + [TensorSpec(EMBED + n, dtype, s) for n, s in embed.items()]


def is_vision_tensor(name: str) -> bool:
    """True for the tensors :func:`vision_tensor_specs` lists."""
    return name.startswith((TOWER, EMBED))


def vision_init_std(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """``(mean, std)`` of a random vision tensor: norms ~1 ± 0.05, layer scales ~0.3 (not
    timm's 1e-5, so blocks are not identities), stem bias ~0, embeddings N(0, 1), convs and
    matrices N(0, 1/fan_in) (fan_in = in/groups · k²)."""
    if name.endswith(_NORMS):
        return 1.0, 0.05
    if name.endswith("layer_scale.gamma"):
        return 0.3, 0.05
    if name.endswith("conv.bias"):
        return 0.0, 0.02
    if name.endswith("embedding.weight"):
        return 0.0, 1.0
    return 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))


def random_vision_tensors(
    text: TextConfig, seed: int = 0, dtype: np.dtype[Any] | None = None
) -> dict[str, np.ndarray]:
    """Every vision tensor of :func:`vision_tensor_specs`, random, in memory (benchmarks).

    ``dtype`` defaults to bfloat16, the released checkpoints' type.
    """
    import ml_dtypes  # noqa: PLC0415 - a dependency; only this helper needs it here

    dtype = dtype or np.dtype(ml_dtypes.bfloat16)
    return random_tensors(vision_tensor_specs(text, dtype), vision_init_std, seed, dtype)
