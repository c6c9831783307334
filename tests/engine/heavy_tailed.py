"""A small checkpoint that is hard to quantize: heavy-tailed weights and outlier columns.

Quantization error lives in the tails: real LLM weights are heavy-tailed and a
few input channels carry much larger weights than the rest. Random Gaussian
weights hide that, and near-uniform logits would hide any error at all. This
fixture draws every matrix from a unit-variance Student-t (5 degrees of
freedom: kurtosis 9), scales 2 % of each matrix's input columns by 8, and
gives the final norm a gain that makes the top token's probability usually
≥ 0.5. Two choices keep the random stack from being chaotic — a property of
random networks, not of trained ones, that would amplify any perturbation
(quantization or not) layer by layer: residual branches write through norms
of gain 0.1, and q/k norms keep attention scores at unit scale.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from edgeagent.engine.checkpoint import expected_tensors
from edgeagent.engine.config import TIERS_KEY, TextConfig
from edgeagent.engine.safetensors_io import SafetensorsWriter, TensorSpec

CONFIG = {
    "model_type": "gemma3n_text",
    "vocab_size": 2048,
    "vocab_size_per_layer_input": 1920,
    "hidden_size": 256,
    "hidden_size_per_layer_input": 64,
    "intermediate_size": 1024,
    "num_hidden_layers": 10,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "sliding_window": 64,
    "num_kv_shared_layers": 4,
    "laurel_rank": 32,
    "activation_sparsity_pattern": [0.95] * 3 + [0.0] * 7,
    "max_position_embeddings": 4096,
    "bos_token_id": 2,
    "eos_token_id": [1, 106],
    "pad_token_id": 0,
}
TIERS = {"half": {"ffn_dims": [512] * 10, "skip_layers": [6, 7]}}
FINAL_NORM_GAIN = 1.5
OUTLIER_FRACTION = 0.02
OUTLIER_SCALE = 8.0
DOF = 5.0  # Student-t degrees of freedom (kurtosis 9: heavy tails)
RESIDUAL_GAIN = 0.1
_RESIDUAL_NORMS = (
    "post_attention_layernorm.weight",
    "post_feedforward_layernorm.weight",
    "post_per_layer_input_norm.weight",
    "post_laurel_norm.weight",
)


def _values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        # attention scaling is 1.0: trained q/k norms keep scores moderate; unit gains would
        # give scores of std √head_dim, a near-argmax softmax that flips on any perturbation
        return shape[-1] ** -0.25 * (1.0 + 0.05 * rng.standard_normal(shape))
    if name.endswith(_RESIDUAL_NORMS):
        # trained residual branches write small updates into the stream; unit gains would
        # make a random stack chaotic (any perturbation grows layer by layer)
        return RESIDUAL_GAIN * (1.0 + 0.05 * rng.standard_normal(shape))
    if name.endswith(("norm.weight", "layernorm.weight", "altup.correct_output_scale")):
        gain = FINAL_NORM_GAIN if name == "norm.weight" else 1.0
        return gain * (1.0 + 0.05 * rng.standard_normal(shape))
    if name.endswith(("prediction_coefs.weight", "correction_coefs.weight")):
        return 0.1 * rng.standard_normal(shape)
    if name.endswith("modality_router.weight"):
        return 0.5 * np.sqrt(shape[-1]) * rng.standard_normal(shape)
    fan_in = shape[-1]
    w = rng.standard_t(DOF, shape) * np.sqrt((DOF - 2) / DOF / fan_in)  # unit-variance rows
    if len(shape) == 2 and "embed_tokens" not in name:
        cols = rng.choice(fan_in, max(1, int(OUTLIER_FRACTION * fan_in)), replace=False)
        w[:, cols] *= OUTLIER_SCALE
    return w


def write_heavy_tailed(out: Path, seed: int = 0) -> Path:
    """Write the fixture checkpoint (float32, text layout) into the new directory ``out``."""
    out.mkdir(parents=True)
    cfg = TextConfig.from_dict(CONFIG, "heavy-tailed fixture")
    shapes = expected_tensors(cfg)
    specs = [TensorSpec("model." + n, np.dtype(np.float32), s) for n, s in shapes.items()]
    with SafetensorsWriter(out / "model.safetensors", specs) as writer:
        for name, shape in shapes.items():
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            writer.write("model." + name, _values(name, shape, rng).astype(np.float32))
    config = {**cfg.to_dict(), TIERS_KEY: TIERS}
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return out
