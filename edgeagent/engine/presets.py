"""Random-weight Gemma 3n checkpoints in the real layout (``edgeagent model init``).

Presets are data: a ``gemma3n_text`` config dict, the multimodal marker ids,
the nested tier they offer, and the tokenizer's training corpus.

- ``e2b`` / ``e4b``: the released shapes (E4B = transformers' defaults).
- ``small`` and ``tiny``: E4B scaled down, same structure — full attention
  every 5th layer, half the layers KV-shared so that skipping the first five
  shared layers (10-14) leaves a valid model with 5 shared layers (as E4B ->
  E2B skips 20-24), FFN widths that halve in the nested ``e2b`` tier,
  activation sparsity on the first 5 of 20 layers (E4B: 10 of 35), vision
  and audio vocabularies after the text vocabulary (64 ids each for tiny,
  128 for small, as released). ``tiny`` has the shapes of the parity fixture
  ``tests/fixtures/gemma3n_tiny`` (random values differ).

  ======  ======  ====  =====  ==  ====  ==  ===========  ======  ======
  preset  layers  H     heads  hd  FFN   Hp  V / Vp       window  params
  ======  ======  ====  =====  ==  ====  ==  ===========  ======  ======
  tiny    20      32    4/2    8   128   8   512/384      8       0.41 M
  small   20      512   8/2    64  2048  64  16640/16384  128     108 M
  ======  ======  ====  =====  ==  ====  ==  ===========  ======  ======

Marker ids: e2b/e4b use the released ids; tiny/small keep the released
offsets from the text vocabulary size Vp: ``<start_of_image>`` Vp-145,
``<start_of_audio>`` Vp-144, ``<end_of_image>`` Vp, ``<image_soft_token>``
Vp+1, ``<end_of_audio>`` Vp+vision, ``<audio_soft_token>`` Vp+vision+1
(tiny: 239, 240, 384, 385, 448, 449 — as in the parity fixture).

The multimodal layout adds the audio tower (``engine/audio/presets.py``) and the
vision tower (``engine/vision/presets.py``: timm ``mobilenetv5_300m_enc`` at its
real shapes for e2b/e4b, ~294 M parameters, ~590 MB in bfloat16; a tiny tower
with every block type otherwise).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from edgeagent.engine.audio.presets import (
    audio_config_dict,
    audio_init_std,
    audio_tensor_specs,
    is_audio_tensor,
)
from edgeagent.engine.checkpoint import INDEX_FILE, SINGLE_FILE, expected_tensors
from edgeagent.engine.config import RANDOM_WEIGHTS_KEY, TIERS_KEY, MultimodalTokens, TextConfig
from edgeagent.engine.safetensors_io import SafetensorsWriter, TensorSpec
from edgeagent.engine.tokenizer import TOKENIZER_FILE
from edgeagent.engine.tokenizer_build import TokenizerSpec, build_tokenizer
from edgeagent.engine.vision.presets import (
    is_vision_tensor,
    vision_config_dict,
    vision_init_std,
    vision_tensor_specs,
)
from edgeagent.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

_RELEASED_MARKERS = {
    "boi_token_id": 255_999,
    "eoi_token_id": 262_144,
    "image_token_id": 262_145,
    "boa_token_id": 256_000,
    "eoa_token_id": 262_272,
    "audio_token_id": 262_273,
}
_LAYER20_TIER = {"ffn_scale": 0.5, "skip_layers": [10, 11, 12, 13, 14]}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "description": "E4B scaled to < 2 MB, for tests",
        "text_config": {
            "vocab_size": 512,
            "vocab_size_per_layer_input": 384,
            "hidden_size": 32,
            "hidden_size_per_layer_input": 8,
            "intermediate_size": 128,
            "num_hidden_layers": 20,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "sliding_window": 8,
            "num_kv_shared_layers": 10,
            "laurel_rank": 4,
            "activation_sparsity_pattern": [0.95] * 5 + [0.0] * 15,
            "max_position_embeddings": 4096,
        },
        "vision_vocab": 64,
        "tokenizer_corpus": "builtin",
        "tiers": {"e2b": _LAYER20_TIER},
    },
    "small": {
        "description": "E4B scaled to ~100 M parameters, 16k-token vocabulary",
        "text_config": {
            "vocab_size": 16_640,
            "vocab_size_per_layer_input": 16_384,
            "hidden_size": 512,
            "hidden_size_per_layer_input": 64,
            "intermediate_size": 2048,
            "num_hidden_layers": 20,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "sliding_window": 128,
            "num_kv_shared_layers": 10,
            "laurel_rank": 16,
            "activation_sparsity_pattern": [0.95] * 5 + [0.0] * 15,
            "max_position_embeddings": 8192,
        },
        "vision_vocab": 128,
        "tokenizer_corpus": "builtin+pydoc",
        "tiers": {"e2b": _LAYER20_TIER},
    },
    "e2b": {
        "description": "Gemma 3n E2B text-decoder shapes (~4.4 B parameters, ~8.9 GB in bfloat16)",
        "text_config": {
            "intermediate_size": 8192,
            "num_hidden_layers": 30,
            "num_kv_shared_layers": 10,
            "activation_sparsity_pattern": [0.95] * 10 + [0.0] * 20,
        },
        "multimodal_tokens": _RELEASED_MARKERS,
        "tokenizer_corpus": "builtin+pydoc",
        "tiers": {},
    },
    "e4b": {
        "description": "Gemma 3n E4B text-decoder shapes (~6.8 B parameters, ~13.7 GB in bfloat16)",
        "text_config": {
            "intermediate_size": 16_384,
            "num_hidden_layers": 35,
            "num_kv_shared_layers": 15,
            "activation_sparsity_pattern": [0.95] * 10 + [0.0] * 25,
        },
        "multimodal_tokens": _RELEASED_MARKERS,
        "tokenizer_corpus": "builtin+pydoc",
        "tiers": {},
    },
}
# Defaults shared by every preset (E4B's, as transformers and the released configs have them).
_COMMON_TEXT = {
    "vocab_size": 262_400,
    "vocab_size_per_layer_input": 262_144,
    "hidden_size": 2048,
    "hidden_size_per_layer_input": 256,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "rms_norm_eps": 1e-6,
    "sliding_window": 512,
    "laurel_rank": 64,
    "altup_num_inputs": 4,
    "altup_active_idx": 0,
    "altup_coef_clip": 120.0,
    "altup_correct_scale": True,
    "final_logit_softcapping": 30.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 32_768,
    "bos_token_id": 2,
    "eos_token_id": [1, 106],
    "pad_token_id": 0,
    "tie_word_embeddings": True,
    "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    },
}
_MARKERS = {
    "boi_token_id": "<start_of_image>",
    "eoi_token_id": "<end_of_image>",
    "image_token_id": "<image_soft_token>",
    "boa_token_id": "<start_of_audio>",
    "eoa_token_id": "<end_of_audio>",
    "audio_token_id": "<audio_soft_token>",
}


@dataclass(frozen=True)
class Preset:
    """A resolved preset: validated config, marker ids, tiers and tokenizer spec."""

    name: str
    description: str
    config: TextConfig
    multimodal_tokens: MultimodalTokens
    tiers: dict[str, dict[str, list[int]]]  # name -> {"ffn_dims": [...], "skip_layers": [...]}
    tokenizer: TokenizerSpec


def preset_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_preset`."""
    return tuple(PRESETS)


def _scaled_markers(vocab_pl: int, vision_vocab: int) -> dict[str, int]:
    return {
        "boi_token_id": vocab_pl - 145,
        "boa_token_id": vocab_pl - 144,
        "eoi_token_id": vocab_pl,
        "image_token_id": vocab_pl + 1,
        "eoa_token_id": vocab_pl + vision_vocab,
        "audio_token_id": vocab_pl + vision_vocab + 1,
    }


def get_preset(name: str, *, random_weights: bool = True) -> Preset:
    """The preset ``name`` with its config validated exactly as a checkpoint's would be."""
    try:
        data = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    text = {**copy.deepcopy(_COMMON_TEXT), **copy.deepcopy(data["text_config"])}
    text["edgeagent_random_weights"] = random_weights
    cfg = TextConfig.from_dict(text, f"preset {name}")
    markers = data.get("multimodal_tokens") or _scaled_markers(
        cfg.vocab_size_per_layer_input, data["vision_vocab"]
    )
    tiers = {}
    for tier_name, tier in data["tiers"].items():
        dims = [max(1, round(w * tier["ffn_scale"])) for w in cfg.intermediate_sizes]
        tiers[tier_name] = {"ffn_dims": dims, "skip_layers": list(tier["skip_layers"])}
    tokenizer = TokenizerSpec(
        vocab_size=cfg.vocab_size,
        text_vocab_size=cfg.vocab_size_per_layer_input,
        special_ids={_MARKERS[k]: v for k, v in markers.items()},
        corpus=data["tokenizer_corpus"],
    )
    return Preset(name, data["description"], cfg, MultimodalTokens(**markers), tiers, tokenizer)


# -- random weights -------------------------------------------------------------------------
_PREFIX = {"text": "model.", "multimodal": "model.language_model."}
_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}
_NORM_SUFFIXES = ("norm.weight", "layernorm.weight", "altup.correct_output_scale")
_CHUNK_ELEMENTS = 1 << 24  # rows are generated ≤ 16 M elements (64 MB float32) at a time
DEFAULT_SHARD_BYTES = 2 * 1024**3
ProgressFn = Callable[[int, int], None]  # (bytes written, total bytes)


def init_std(name: str, shape: tuple[int, ...], cfg: TextConfig) -> tuple[float, float]:
    """``(mean, std)`` of tensor ``name``'s random values, chosen for a numerically sane forward.

    Linears ``[out, in]`` ~ N(0, 1/in); embeddings ~ N(0, 1/width) so that
    after their √width scaling rows have unit RMS; norm weights and AltUp's
    ``correct_output_scale`` ~ 1 ± 0.05; AltUp coefficients ~ N(0, 0.1²);
    the AltUp router ~ N(0, H/4), so that its tanh sees ~N(0, 1/4) despite
    the router's 1/H input scale and the routing is not inert.
    """
    if is_audio_tensor(name) or is_vision_tensor(name):
        return (audio_init_std if is_audio_tensor(name) else vision_init_std)(name, shape)
    if name.endswith(_NORM_SUFFIXES):
        return 1.0, 0.05
    if name.endswith(("altup.prediction_coefs.weight", "altup.correction_coefs.weight")):
        return 0.0, 0.1
    if name.endswith("altup.modality_router.weight"):
        return 0.0, 0.5 * math.sqrt(cfg.hidden_size)
    if name == "embed_tokens_per_layer.weight":
        return 0.0, 1.0 / math.sqrt(cfg.hidden_size_per_layer_input)
    return 0.0, 1.0 / math.sqrt(shape[-1])


def tensor_specs(
    cfg: TextConfig, layout: str = "text", dtype: str = "bfloat16"
) -> list[TensorSpec]:
    """Every stored tensor of a random checkpoint (full names, transformers' order)."""
    if layout not in _PREFIX:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(_PREFIX)}")
    if dtype not in _DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    prefix, np_dtype = _PREFIX[layout], _DTYPES[dtype]
    specs = [TensorSpec(prefix + n, np_dtype, s) for n, s in expected_tensors(cfg).items()]
    if layout == "multimodal":  # the towers (engine/audio/presets.py, engine/vision/presets.py)
        specs += audio_tensor_specs(cfg, np_dtype)
        specs += vision_tensor_specs(cfg, np_dtype)
    return specs


def _fill(
    writer: SafetensorsWriter,
    spec: TensorSpec,
    rel_name: str,
    cfg: TextConfig,
    seed: int,
    tick: Callable[[int], None],
) -> None:
    """Stream one tensor's random values into ``writer``, a block of rows at a time."""
    mean, std = init_std(rel_name, spec.shape, cfg)
    rng = np.random.default_rng(
        [seed, zlib.crc32(rel_name.encode())]
    )  # independent of order/layout
    rows = spec.shape[0] if spec.shape else 1
    row_len = math.prod(spec.shape[1:])
    step = max(1, _CHUNK_ELEMENTS // max(1, row_len))
    for start in range(0, rows, step):
        n = min(step, rows - start)
        block = rng.standard_normal((n, row_len), dtype=np.float32)  # [n, row_len]
        block *= np.float32(std)
        block += np.float32(mean)
        writer.write(spec.name, block.astype(spec.dtype))
        tick(n * row_len * spec.dtype.itemsize)


def _plan_shards(specs: list[TensorSpec], max_bytes: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def config_json(preset: Preset, layout: str, dtype: str) -> dict[str, Any]:
    """The ``config.json`` of a random checkpoint in ``layout``."""
    text = preset.config.to_dict()
    text["dtype"] = dtype
    extra: dict[str, Any] = {**preset.multimodal_tokens.as_dict(), RANDOM_WEIGHTS_KEY: True}
    if preset.tiers:
        extra[TIERS_KEY] = preset.tiers
    if layout == "text":
        return {**text, **extra}
    return {
        "model_type": "gemma3n",
        "architectures": ["Gemma3nForConditionalGeneration"],
        "text_config": text,
        "audio_config": audio_config_dict(preset.config),
        "vision_config": vision_config_dict(preset.config),
        "vision_soft_tokens_per_image": 256,
        "dtype": dtype,
        "tie_word_embeddings": True,
        **extra,
    }


def write_checkpoint(
    preset: Preset,
    out: str | Path,
    *,
    seed: int = 0,
    layout: str = "text",
    dtype: str = "bfloat16",
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: ProgressFn | None = None,
) -> Path:
    """Write a random checkpoint of ``preset`` into the new or empty directory ``out``.

    Files are written into a sibling temporary directory and renamed into
    place at the end, so ``out`` is either complete or absent. Memory use is
    one block of rows (≤ 64 MB) whatever the model size.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty directory; refusing to overwrite")
    specs = tensor_specs(preset.config, layout, dtype)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        _write_weights(
            tmp, specs, preset.config, prefix=_PREFIX[layout], seed=seed,
            max_shard_bytes=max_shard_bytes, progress=progress,
        )  # fmt: skip
        cfg_text = json.dumps(config_json(preset, layout, dtype), indent=2) + "\n"
        (tmp / "config.json").write_text(cfg_text, encoding="utf-8")
        build_tokenizer(preset.tokenizer).save(str(tmp / TOKENIZER_FILE))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _LOGGER.info("wrote %s preset (%s layout, %s) to %s", preset.name, layout, dtype, out)
    return out


def _write_weights(
    tmp: Path,
    specs: list[TensorSpec],
    cfg: TextConfig,
    *,
    prefix: str,
    seed: int,
    max_shard_bytes: int,
    progress: ProgressFn | None,
) -> None:
    """``model.safetensors``, or shards of at most ``max_shard_bytes`` plus their index."""
    total = sum(s.nbytes for s in specs)
    done = 0

    def tick(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    shards = _plan_shards(specs, max_shard_bytes)
    n = len(shards)
    names = (
        [SINGLE_FILE]
        if n == 1
        else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    )
    for file_name, shard in zip(names, shards, strict=True):
        with SafetensorsWriter(tmp / file_name, shard, {"format": "pt"}) as writer:
            for spec in shard:
                tower = is_audio_tensor(spec.name) or is_vision_tensor(spec.name)
                rel = spec.name if tower else spec.name[len(prefix) :]
                _fill(writer, spec, rel, cfg, seed, tick)
    if n > 1:
        weight_map = {s.name: f for f, shard in zip(names, shards, strict=True) for s in shard}
        index = {
            "metadata": {
                "total_size": total,
                "total_parameters": sum(math.prod(s.shape) for s in specs),
            },
            "weight_map": dict(sorted(weight_map.items())),
        }
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
