"""The random audio tower that ``edgeagent model init --layout multimodal`` writes.

The released E2B and E4B share one audio encoder (USM conformer, hidden
1536, 12 blocks, ~681 M parameters) and differ only in the embedder's output
width (the text hidden size, 2048 for both). Scaled-down presets keep the
released block structure — chunk 12, left context 13, right 0, conv kernel
5, reduction 4, 128 mel bins, two stride-2 convs — at small widths.

The preset is chosen by the text decoder's width: 2048 (e2b, e4b) gets the
released encoder, 512 (small) ``small``, anything else ``tiny``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.config import TextConfig
from edgeagent.engine.safetensors_io import TensorSpec
from edgeagent.engine.tower_weights import random_tensors

TOWER = "model.audio_tower."
EMBED = "model.embed_audio."
_RELEASED: dict[str, Any] = {
    "hidden_size": 1536,
    "conf_num_attention_heads": 8,
    "conf_num_hidden_layers": 12,
    "sscp_conv_channel_size": [128, 32],
}
AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    "released": _RELEASED,
    "small": {
        "hidden_size": 256,
        "conf_num_attention_heads": 4,
        "conf_num_hidden_layers": 4,
        "sscp_conv_channel_size": [32, 16],
    },
    "tiny": {
        "hidden_size": 24,
        "conf_num_attention_heads": 4,
        "conf_num_hidden_layers": 3,
        "sscp_conv_channel_size": [8, 4],
    },
}
_COMMON: dict[str, Any] = {
    "model_type": "gemma3n_audio",
    "input_feat_size": 128,
    "rms_norm_eps": 1e-6,
    "gradient_clipping": 1e10,
    "conf_attention_chunk_size": 12,
    "conf_attention_context_left": 13,
    "conf_attention_context_right": 0,
    "conf_attention_logit_cap": 50.0,
    "conf_conv_kernel_size": 5,
    "conf_reduction_factor": 4,
    "conf_residual_weight": 0.5,
    "sscp_conv_group_norm_eps": 1e-3,
    "sscp_conv_kernel_size": [[3, 3], [3, 3]],
    "sscp_conv_stride_size": [[2, 2], [2, 2]],
}


def audio_preset_name(text: TextConfig) -> str:
    """Which audio tower goes with a text decoder of this width."""
    return {2048: "released", 512: "small"}.get(text.hidden_size, "tiny")


def audio_config_dict(text: TextConfig) -> dict[str, Any]:
    """The ``audio_config`` of ``config.json`` for a random multimodal checkpoint.

    The audio vocabulary (hard tokens) is the last 128 ids of the text
    vocabulary, or what is left after text and vision ids in scaled presets.
    """
    vocab = min(128, max(1, (text.vocab_size - text.vocab_size_per_layer_input) // 2))
    return {
        **_COMMON,
        **AUDIO_PRESETS[audio_preset_name(text)],
        "vocab_size": vocab,
        "vocab_offset": text.vocab_size - vocab,
    }


def audio_tensor_specs(text: TextConfig, dtype: np.dtype[Any]) -> list[TensorSpec]:
    """Every ``model.audio_tower.*`` and ``model.embed_audio.*`` tensor, transformers' order."""
    cfg = AudioConfig.from_dict(audio_config_dict(text), text.hidden_size, "audio preset")
    h, k = cfg.hidden_size, cfg.conv_kernel_size
    c0, c1 = cfg.sscp_channels
    f1 = cfg.sscp_freq_sizes[2]
    shapes: dict[str, tuple[int, ...]] = {
        "subsample_conv_projection.conv_0.conv.weight": (c0, 1, 3, 3),
        "subsample_conv_projection.conv_0.norm.weight": (c0,),
        "subsample_conv_projection.conv_1.conv.weight": (c1, c0, 3, 3),
        "subsample_conv_projection.conv_1.norm.weight": (c1,),
        "subsample_conv_projection.input_proj_linear.weight": (h, c1 * f1),
    }
    for i in range(cfg.num_layers):
        p = f"conformer.{i}."
        for part in ("ffw_layer_start", "ffw_layer_end"):
            shapes[f"{p}{part}.pre_layer_norm.weight"] = (h,)
            shapes[f"{p}{part}.ffw_layer_1.weight"] = (4 * h, h)
            shapes[f"{p}{part}.ffw_layer_2.weight"] = (h, 4 * h)
            shapes[f"{p}{part}.post_layer_norm.weight"] = (h,)
            if part == "ffw_layer_start":
                a = p + "attention."
                shapes[a + "pre_attn_norm.weight"] = (h,)
                shapes[a + "attn.per_dim_scale"] = (cfg.head_dim,)
                shapes[a + "attn.relative_position_embedding.pos_proj.weight"] = (h, h)
                for name in ("q_proj", "k_proj", "v_proj"):
                    shapes[f"{a}attn.{name}.weight"] = (h, h)
                shapes[a + "post.weight"] = (h, h)
                shapes[a + "post_norm.weight"] = (h,)
                shapes[p + "lconv1d.pre_layer_norm.weight"] = (h,)
                shapes[p + "lconv1d.linear_start.weight"] = (2 * h, h)
                shapes[p + "lconv1d.depthwise_conv1d.weight"] = (h, 1, k)
                shapes[p + "lconv1d.conv_norm.weight"] = (h,)
                shapes[p + "lconv1d.linear_end.weight"] = (h, h)
        shapes[p + "norm.weight"] = (h,)
    specs = [TensorSpec(TOWER + n, dtype, s) for n, s in shapes.items()]
    embed = {
        "embedding.weight": (cfg.vocab_size, h),
        "hard_embedding_norm.weight": (h,),
        "soft_embedding_norm.weight": (h,),
        "embedding_projection.weight": (text.hidden_size, h),
    }
    return specs + [TensorSpec(EMBED + n, dtype, s) for n, s in embed.items()]


def is_audio_tensor(name: str) -> bool:
    """True for the tensors :func:`audio_tensor_specs` lists."""
    return name.startswith((TOWER, EMBED))


def audio_init_std(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """``(mean, std)`` of a random audio tensor: norms ~1 ± 0.05, per-dim scales ~0,
    embeddings N(0, 1), convs and matrices N(0, 1/fan_in)."""
    if name.endswith("norm.weight"):
        return 1.0, 0.05
    if name.endswith("per_dim_scale"):
        return 0.0, 0.1
    if name.endswith("embedding.weight"):
        return 0.0, 1.0
    return 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))


def random_audio_tensors(
    text: TextConfig, seed: int = 0, dtype: np.dtype[Any] | None = None
) -> dict[str, np.ndarray]:
    """Every audio tensor of :func:`audio_tensor_specs`, random, in memory (benchmarks, tests).

    ``dtype`` defaults to bfloat16, the released checkpoints' type.
    """
    import ml_dtypes  # noqa: PLC0415 - a dependency; only this helper needs it here

    dtype = dtype or np.dtype(ml_dtypes.bfloat16)
    return random_tensors(audio_tensor_specs(text, dtype), audio_init_std, seed, dtype)
