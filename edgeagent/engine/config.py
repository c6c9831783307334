"""Gemma 3n text-decoder configuration: parsed from ``config.json``, validated, frozen.

Field names and defaults follow transformers' ``Gemma3nTextConfig`` (5.24): a
missing key takes the E4B default, exactly as transformers would. Two layouts
are read: ``gemma3n_text`` (a text-only checkpoint, keys under ``model.``) and
``gemma3n`` (the released multimodal checkpoint, text config under
``text_config``, text keys under ``model.language_model.``).

Every problem is a :class:`CheckpointError` that names the file and the field.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeagent.errors import CheckpointError
from edgeagent.jsonfile import read_json_object

_LOGGER = logging.getLogger(__name__)

LAYER_TYPES = ("sliding_attention", "full_attention")
SUPPORTED_ACTIVATIONS = ("gelu_pytorch_tanh",)
LAYOUT_TEXT = "text"
LAYOUT_MULTIMODAL = "multimodal"
_MODEL_TYPES = {"gemma3n_text": LAYOUT_TEXT, "gemma3n": LAYOUT_MULTIMODAL}
_DEFAULT_THETA_GLOBAL = 1_000_000.0
_DEFAULT_THETA_LOCAL = 10_000.0
_MULTIMODAL_TOKEN_KEYS = (
    "boi_token_id",
    "eoi_token_id",
    "image_token_id",
    "boa_token_id",
    "eoa_token_id",
    "audio_token_id",
)
RANDOM_WEIGHTS_KEY = "edgeagent_random_weights"
TIERS_KEY = (
    "edgeagent_tiers"  # named MatFormer plans a checkpoint declares (model init writes them)
)


@dataclass(frozen=True)
class TextConfig:
    """The Gemma 3n text decoder's hyper-parameters (sizes in elements, not bytes)."""

    vocab_size: int
    vocab_size_per_layer_input: int
    hidden_size: int
    hidden_size_per_layer_input: int
    intermediate_sizes: tuple[int, ...]
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    sliding_window: int
    layer_types: tuple[str, ...]
    rope_theta_global: float
    rope_theta_local: float
    num_kv_shared_layers: int
    altup_num_inputs: int
    altup_active_idx: int
    altup_coef_clip: float | None
    altup_correct_scale: bool
    laurel_rank: int
    activation_sparsity: tuple[float, ...]
    final_logit_softcapping: float | None
    hidden_activation: str
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    tie_word_embeddings: bool
    random_weights: bool = False

    @property
    def first_kv_shared_layer(self) -> int:
        """Index of the first layer that reads another layer's KV cache (L when none)."""
        return self.num_hidden_layers - self.num_kv_shared_layers

    def is_sliding(self, layer: int) -> bool:
        """True when ``layer`` attends over a ``sliding_window`` of positions."""
        return self.layer_types[layer] == "sliding_attention"

    def kv_source(self, layer: int) -> int:
        """The layer whose KV cache ``layer`` reads: itself for owners, else the
        last non-shared layer of the same type (transformers' ``kv_sharing_modes``)."""
        first_shared = self.first_kv_shared_layer
        if layer < first_shared:
            return layer
        wanted = self.layer_types[layer]
        for i in range(first_shared - 1, -1, -1):
            if self.layer_types[i] == wanted:
                return i
        raise AssertionError("validated config has a producer for every layer type")

    @property
    def cache_owners(self) -> tuple[int, ...]:
        """Layers that compute and hold a KV cache, in order."""
        return tuple(range(self.first_kv_shared_layer))

    def is_kv_shared(self, layer: int) -> bool:
        """True when ``layer`` has no K/V projections of its own."""
        return layer >= self.first_kv_shared_layer

    @property
    def per_layer_width(self) -> int:
        """Width of one row of ``embed_tokens_per_layer``: L * hidden_size_per_layer_input."""
        return self.num_hidden_layers * self.hidden_size_per_layer_input

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> TextConfig:
        """Parse and validate a ``gemma3n_text`` dict; ``source`` names the file in errors."""
        return _parse_text_config(_Fields(d, source), source)

    def to_dict(self) -> dict[str, Any]:
        """The ``gemma3n_text`` dict transformers 5.24 writes (plus our random-weights flag)."""
        d: dict[str, Any] = {
            "model_type": "gemma3n_text",
            "architectures": ["Gemma3nForCausalLM"],
            "vocab_size": self.vocab_size,
            "vocab_size_per_layer_input": self.vocab_size_per_layer_input,
            "hidden_size": self.hidden_size,
            "hidden_size_per_layer_input": self.hidden_size_per_layer_input,
            "intermediate_size": list(self.intermediate_sizes),
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "sliding_window": self.sliding_window,
            "layer_types": list(self.layer_types),
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": self.rope_theta_global},
                "sliding_attention": {"rope_type": "default", "rope_theta": self.rope_theta_local},
            },
            "num_kv_shared_layers": self.num_kv_shared_layers,
            "altup_num_inputs": self.altup_num_inputs,
            "altup_active_idx": self.altup_active_idx,
            "altup_coef_clip": self.altup_coef_clip,
            "altup_correct_scale": self.altup_correct_scale,
            "laurel_rank": self.laurel_rank,
            "activation_sparsity_pattern": list(self.activation_sparsity),
            "final_logit_softcapping": self.final_logit_softcapping,
            "hidden_activation": self.hidden_activation,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids),
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
        }
        if self.random_weights:
            d[RANDOM_WEIGHTS_KEY] = True
        return d


@dataclass(frozen=True)
class MultimodalTokens:
    """Token ids of the image/audio markers (None when the config does not say)."""

    boi_token_id: int | None = None
    eoi_token_id: int | None = None
    image_token_id: int | None = None
    boa_token_id: int | None = None
    eoa_token_id: int | None = None
    audio_token_id: int | None = None

    def as_dict(self) -> dict[str, int]:
        """The ids that are set, under their released config keys."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class CheckpointConfig:
    """Everything read from a checkpoint's ``config.json``."""

    text: TextConfig
    layout: str  # "text" | "multimodal"
    multimodal_tokens: MultimodalTokens
    path: Path
    declared_tiers: Mapping[str, Any] = field(default_factory=dict)  # "edgeagent_tiers"


class _Fields:
    """Typed, validated access to one config dict; every error names file and field."""

    def __init__(self, d: Mapping[str, Any], source: str) -> None:
        if not isinstance(d, Mapping):
            raise CheckpointError(
                f"{source}: text config must be a JSON object, got {type(d).__name__}"
            )
        self.d = d
        self.source = source

    def fail(self, name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: field '{name}' {problem}")

    def get(self, name: str, default: Any) -> Any:
        value = self.d.get(name, default)
        return default if value is None and default is not None else value

    def int_(self, name: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is missing")
        return self.check_int(name, value, minimum)

    def check_int(self, name: str, value: Any, minimum: int) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {value}")
        return value

    def float_(self, name: str, default: float | None, positive: bool = True) -> float:
        value = self.get(name, default)
        return self.check_float(name, value, positive)

    def check_float(self, name: str, value: Any, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, f"must be a number, got {value!r}")
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(
                name, f"must be a finite{' positive' if positive else ''} number, got {value!r}"
            )
        return float(value)

    def opt_float(self, name: str, default: float | None) -> float | None:
        value = self.d.get(name, default) if name in self.d else default
        return None if value is None else self.check_float(name, value)

    def bool_(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def opt_id(self, name: str, default: int | None, vocab: int) -> int | None:
        value = self.d.get(name, default) if name in self.d else default
        if value is None:
            return None
        value = self.check_int(name, value, 0)
        if value >= vocab:
            raise self.fail(name, f"must be < vocab_size {vocab}, got {value}")
        return value

    def per_layer(self, name: str, value: Any, n: int) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            return [value] * n
        if len(value) != n:
            raise self.fail(name, f"must have one entry per layer ({n}), got {len(value)}")
        return list(value)


def _parse_text_config(f: _Fields, source: str) -> TextConfig:
    n_layers = f.int_("num_hidden_layers", 35)
    hidden = f.int_("hidden_size", 2048)
    n_heads = f.int_("num_attention_heads", 8)
    n_kv = f.int_("num_key_value_heads", 2)
    if hidden % n_heads:
        raise f.fail("num_attention_heads", f"({n_heads}) must divide hidden_size ({hidden})")
    if n_heads % n_kv:
        raise f.fail("num_key_value_heads", f"({n_kv}) must divide num_attention_heads ({n_heads})")
    vocab = f.int_("vocab_size", 262_400)
    vocab_pl = f.int_("vocab_size_per_layer_input", 262_144)
    if vocab_pl > vocab:
        raise f.fail("vocab_size_per_layer_input", f"({vocab_pl}) must be <= vocab_size ({vocab})")
    inter = f.per_layer("intermediate_size", f.get("intermediate_size", 16_384), n_layers)
    intermediate_sizes = tuple(f.check_int("intermediate_size", v, 1) for v in inter)
    layer_types = _layer_types(f, n_layers)
    n_shared = f.int_("num_kv_shared_layers", 15, minimum=0)
    if n_shared >= n_layers:
        raise f.fail(
            "num_kv_shared_layers", f"must be < num_hidden_layers ({n_layers}), got {n_shared}"
        )
    producers = set(layer_types[: n_layers - n_shared])
    for i in range(n_layers - n_shared, n_layers):
        if layer_types[i] not in producers:
            raise f.fail(
                "num_kv_shared_layers",
                f"({n_shared}) leaves layer {i} ({layer_types[i]}) "
                "without a KV-producing layer of its type",
            )
    n_altup = f.int_("altup_num_inputs", 4)
    active = f.int_("altup_active_idx", 0, minimum=0)
    if active >= n_altup:
        raise f.fail("altup_active_idx", f"must be < altup_num_inputs ({n_altup}), got {active}")
    activation = f.get("hidden_activation", "gelu_pytorch_tanh")
    if activation not in SUPPORTED_ACTIVATIONS:
        raise f.fail(
            "hidden_activation", f"{activation!r} is not supported (only {SUPPORTED_ACTIVATIONS})"
        )
    if f.get("attention_bias", False) is not False:
        raise f.fail(
            "attention_bias", "must be false (biased attention projections are not supported)"
        )
    tie = f.bool_("tie_word_embeddings", True)
    if not tie:
        raise f.fail("tie_word_embeddings", "must be true (Gemma 3n ties lm_head to embed_tokens)")
    theta_global, theta_local = _rope_thetas(f)
    return TextConfig(
        vocab_size=vocab,
        vocab_size_per_layer_input=vocab_pl,
        hidden_size=hidden,
        hidden_size_per_layer_input=f.int_("hidden_size_per_layer_input", 256),
        intermediate_sizes=intermediate_sizes,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=f.int_("head_dim", hidden // n_heads),
        rms_norm_eps=f.float_("rms_norm_eps", 1e-6),
        sliding_window=f.int_("sliding_window", 512),
        layer_types=layer_types,
        rope_theta_global=theta_global,
        rope_theta_local=theta_local,
        num_kv_shared_layers=n_shared,
        altup_num_inputs=n_altup,
        altup_active_idx=active,
        altup_coef_clip=f.opt_float("altup_coef_clip", 120.0),
        altup_correct_scale=f.bool_("altup_correct_scale", True),
        laurel_rank=f.int_("laurel_rank", 64),
        activation_sparsity=_sparsity(f, n_layers),
        final_logit_softcapping=f.opt_float("final_logit_softcapping", 30.0),
        hidden_activation=activation,
        max_position_embeddings=f.int_("max_position_embeddings", 32_768),
        bos_token_id=f.opt_id("bos_token_id", 2, vocab),
        eos_token_ids=_eos_ids(f, vocab),
        pad_token_id=f.opt_id("pad_token_id", 0, vocab),
        tie_word_embeddings=tie,
        random_weights=f.bool_(RANDOM_WEIGHTS_KEY, False),
    )


def _layer_types(f: _Fields, n_layers: int) -> tuple[str, ...]:
    value = f.d.get("layer_types")
    if value is None:
        return tuple(
            "full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(n_layers)
        )
    if not isinstance(value, list):
        raise f.fail("layer_types", f"must be a list, got {value!r}")
    types = f.per_layer("layer_types", value, n_layers)
    for i, t in enumerate(types):
        if t not in LAYER_TYPES:
            raise f.fail("layer_types", f"entry {i} is {t!r}; known types are {LAYER_TYPES}")
    return tuple(types)


def _sparsity(f: _Fields, n_layers: int) -> tuple[float, ...]:
    value = f.d.get("activation_sparsity_pattern")
    if value is None:
        n_sparse = 10 if n_layers > 10 else 0
        return (0.95,) * n_sparse + (0.0,) * (n_layers - n_sparse)
    out = []
    for i, v in enumerate(f.per_layer("activation_sparsity_pattern", value, n_layers)):
        s = f.check_float("activation_sparsity_pattern", v, positive=False)
        if not 0.0 <= s < 1.0:
            raise f.fail("activation_sparsity_pattern", f"entry {i} must be in [0, 1), got {s}")
        out.append(s)
    return tuple(out)


def _eos_ids(f: _Fields, vocab: int) -> tuple[int, ...]:
    value = f.d.get("eos_token_id", 1) if "eos_token_id" in f.d else 1
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    ids = tuple(f.check_int("eos_token_id", v, 0) for v in values)
    for i in ids:
        if i >= vocab:
            raise f.fail("eos_token_id", f"must be < vocab_size {vocab}, got {i}")
    return ids


def _rope_thetas(f: _Fields) -> tuple[float, float]:
    """(global, local) RoPE base from ``rope_parameters`` or the released ``rope_theta`` keys."""
    if f.d.get("rope_scaling") is not None:
        raise f.fail("rope_scaling", f"is not supported, got {f.d['rope_scaling']!r}")
    params = f.d.get("rope_parameters")
    theta_global = f.float_("rope_theta", _DEFAULT_THETA_GLOBAL)
    theta_local = f.float_("rope_local_base_freq", _DEFAULT_THETA_LOCAL)
    if params is None:
        return theta_global, theta_local
    if not isinstance(params, Mapping):
        raise f.fail("rope_parameters", f"must be an object, got {params!r}")
    result = {"full_attention": theta_global, "sliding_attention": theta_local}
    for layer_type in result:
        p = params.get(layer_type)
        if p is None:
            continue
        name = f"rope_parameters.{layer_type}"
        if not isinstance(p, Mapping):
            raise f.fail(name, f"must be an object, got {p!r}")
        if p.get("rope_type", "default") != "default":
            raise f.fail(f"{name}.rope_type", f"must be 'default', got {p.get('rope_type')!r}")
        if "rope_theta" in p:
            result[layer_type] = f.check_float(f"{name}.rope_theta", p["rope_theta"])
    return result["full_attention"], result["sliding_attention"]


def _multimodal_tokens(d: Mapping[str, Any], source: str, vocab: int) -> MultimodalTokens:
    f = _Fields(d, source)
    return MultimodalTokens(**{k: f.opt_id(k, None, vocab) for k in _MULTIMODAL_TOKEN_KEYS})


def load_checkpoint_config(directory: str | Path) -> CheckpointConfig:
    """Read and validate ``DIR/config.json`` (either layout)."""
    path = Path(directory) / "config.json"
    source = str(path)
    if not path.is_file():
        raise CheckpointError(
            f"{source}: config.json not found (is {directory} a Gemma 3n checkpoint?)"
        )
    raw = read_json_object(path, CheckpointError, "config")
    model_type = raw.get("model_type")
    layout = _MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if layout is None:
        raise CheckpointError(
            f"{source}: field 'model_type' is {model_type!r}; "
            f"expected one of {sorted(_MODEL_TYPES)}"
        )
    text_dict: Any = raw
    if layout == LAYOUT_MULTIMODAL:
        text_dict = raw.get("text_config")
        if not isinstance(text_dict, dict):
            raise CheckpointError(
                f"{source}: field 'text_config' must be an object, got {text_dict!r}"
            )
        text_dict = dict(text_dict)
        # Released multimodal configs may keep these at the top level only.
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", RANDOM_WEIGHTS_KEY):
            if key not in text_dict and key in raw:
                text_dict[key] = raw[key]
        text_source = f"{source} (text_config)"
    else:
        text_source = source
    text = TextConfig.from_dict(text_dict, text_source)
    tokens = _multimodal_tokens(raw, source, text.vocab_size)
    _LOGGER.debug("read %s: layout %s, %d layers", source, layout, text.num_hidden_layers)
    declared = raw.get(TIERS_KEY, {})
    if not isinstance(declared, dict):
        raise CheckpointError(f"{source}: field '{TIERS_KEY}' must be an object, got {declared!r}")
    return CheckpointConfig(
        text=text, layout=layout, multimodal_tokens=tokens, path=path, declared_tiers=declared
    )


def read_config(directory: str | Path) -> tuple[TextConfig, str]:
    """``(TextConfig, layout)`` of the checkpoint in ``directory``; layout "text"|"multimodal"."""
    cfg = load_checkpoint_config(directory)
    return cfg.text, cfg.layout
