"""TextConfig parsing: defaults, both rope formats, KV sharing, and every validation error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeagent.engine.config import TextConfig, load_checkpoint_config, read_config
from edgeagent.errors import CheckpointError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

TINY: dict[str, Any] = {
    "model_type": "gemma3n_text",
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
}


def parse(**changes: Any) -> TextConfig:
    return TextConfig.from_dict({**TINY, **changes}, "cfg.json")


def test_defaults_are_e4b() -> None:
    cfg = TextConfig.from_dict({}, "x")
    assert cfg.num_hidden_layers == 35 and cfg.hidden_size == 2048
    assert cfg.intermediate_sizes == (16384,) * 35
    assert cfg.vocab_size == 262400 and cfg.vocab_size_per_layer_input == 262144
    assert cfg.activation_sparsity == (0.95,) * 10 + (0.0,) * 25
    assert cfg.rope_theta_global == 1e6 and cfg.rope_theta_local == 1e4
    assert cfg.layer_types[4] == "full_attention" and cfg.layer_types[3] == "sliding_attention"
    assert cfg.first_kv_shared_layer == 20
    assert cfg.cache_owners == tuple(range(20))
    assert cfg.eos_token_ids == (1,) and cfg.bos_token_id == 2 and cfg.pad_token_id == 0
    assert cfg.altup_coef_clip == 120.0 and cfg.final_logit_softcapping == 30.0
    assert not cfg.random_weights


def test_kv_sources_follow_transformers_sharing() -> None:
    cfg = TextConfig.from_dict({}, "x")  # E4B: layers 20..34 read 18 (sliding) or 19 (full)
    assert [cfg.kv_source(i) for i in range(20)] == list(range(20))
    assert [cfg.kv_source(i) for i in range(20, 35)] == [18, 18, 18, 18, 19] * 3
    e2b = TextConfig.from_dict({"num_hidden_layers": 30, "num_kv_shared_layers": 10}, "x")
    assert [e2b.kv_source(i) for i in range(20, 30)] == [18, 18, 18, 18, 19] * 2
    assert e2b.is_sliding(18) and not e2b.is_sliding(19)
    none_shared = parse(num_kv_shared_layers=0)
    assert none_shared.cache_owners == tuple(range(20))


def test_per_layer_lists_and_eos_list() -> None:
    cfg = parse(
        intermediate_size=[128] * 10 + [64] * 10,
        eos_token_id=[1, 106],
        activation_sparsity_pattern=[0.5] * 20,
    )
    assert cfg.intermediate_sizes[-1] == 64 and cfg.eos_token_ids == (1, 106)
    assert cfg.activation_sparsity == (0.5,) * 20
    assert parse(eos_token_id=None).eos_token_ids == ()


def test_rope_formats() -> None:
    old = parse(rope_theta=5e5, rope_local_base_freq=2e3)
    assert (old.rope_theta_global, old.rope_theta_local) == (5e5, 2e3)
    new = parse(
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 3e5},
            "sliding_attention": {"rope_type": "default", "rope_theta": 3e3},
        }
    )
    assert (new.rope_theta_global, new.rope_theta_local) == (3e5, 3e3)


def test_to_dict_round_trips() -> None:
    cfg = parse(eos_token_id=[1, 106], edgeagent_random_weights=True)
    again = TextConfig.from_dict(cfg.to_dict(), "again")
    assert again == cfg and again.random_weights


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"hidden_size": "32"}, "hidden_size", "integer"),
        ({"hidden_size": True}, "hidden_size", "integer"),
        ({"num_hidden_layers": 0}, "num_hidden_layers", ">= 1"),
        ({"vocab_size": -5}, "vocab_size", ">= 1"),
        (
            {"intermediate_size": [128] * 19},
            "intermediate_size",
            "one entry per layer (20), got 19",
        ),
        ({"intermediate_size": [128] * 19 + [0]}, "intermediate_size", ">= 1"),
        ({"num_key_value_heads": 3}, "num_key_value_heads", "must divide"),
        ({"num_attention_heads": 5}, "num_attention_heads", "must divide hidden_size"),
        ({"layer_types": ["sliding_attention"] * 19 + ["chunked"]}, "layer_types", "'chunked'"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types", "one entry per layer"),
        ({"num_kv_shared_layers": 20}, "num_kv_shared_layers", "must be < num_hidden_layers"),
        ({"num_kv_shared_layers": -1}, "num_kv_shared_layers", ">= 0"),
        ({"num_kv_shared_layers": 16}, "num_kv_shared_layers", "without a KV-producing layer"),
        ({"activation_sparsity_pattern": [1.0] * 20}, "activation_sparsity_pattern", "[0, 1)"),
        ({"activation_sparsity_pattern": [0.1] * 3}, "activation_sparsity_pattern", "per layer"),
        ({"activation_sparsity_pattern": ["x"] * 20}, "activation_sparsity_pattern", "number"),
        ({"hidden_activation": "silu"}, "hidden_activation", "not supported"),
        ({"rms_norm_eps": 0}, "rms_norm_eps", "positive"),
        ({"rope_theta": "big"}, "rope_theta", "number"),
        ({"rope_parameters": {"full_attention": {"rope_type": "yarn"}}}, "rope_type", "'default'"),
        ({"rope_scaling": {"factor": 8.0}}, "rope_scaling", "not supported"),
        ({"altup_active_idx": 4}, "altup_active_idx", "< altup_num_inputs"),
        ({"altup_coef_clip": -1.0}, "altup_coef_clip", "positive"),
        ({"altup_correct_scale": "yes"}, "altup_correct_scale", "true or false"),
        ({"vocab_size_per_layer_input": 600}, "vocab_size_per_layer_input", "<= vocab_size"),
        ({"eos_token_id": [1, 9999]}, "eos_token_id", "< vocab_size"),
        ({"bos_token_id": "2"}, "bos_token_id", "integer"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings", "must be true"),
        ({"attention_bias": True}, "attention_bias", "must be false"),
    ],
)
def test_invalid_fields_name_file_and_field(
    changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(CheckpointError) as err:
        parse(**changes)
    message = str(err.value)
    assert message.startswith("cfg.json: field ") and field in message and words in message, message


def _write(tmp_path: Path, content: str | dict[str, Any]) -> Path:
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    return tmp_path


def test_read_config_text_layout(tmp_path: Path) -> None:
    cfg, layout = read_config(_write(tmp_path, TINY))
    assert layout == "text" and cfg.hidden_size == 32


def test_read_config_multimodal_layout(tmp_path: Path) -> None:
    text = {k: v for k, v in TINY.items() if k != "model_type"}
    top = {
        "model_type": "gemma3n",
        "text_config": text,
        "eos_token_id": [1, 106],
        "boi_token_id": 239,
        "eoi_token_id": 384,
        "image_token_id": 385,
        "boa_token_id": 240,
        "eoa_token_id": 448,
        "audio_token_id": 449,
        "edgeagent_random_weights": True,
    }
    full = load_checkpoint_config(_write(tmp_path, top))
    assert full.layout == "multimodal" and full.text.num_hidden_layers == 20
    assert full.text.eos_token_ids == (1, 106) and full.text.random_weights
    assert full.multimodal_tokens.as_dict() == {
        "boi_token_id": 239,
        "eoi_token_id": 384,
        "image_token_id": 385,
        "boa_token_id": 240,
        "eoa_token_id": 448,
        "audio_token_id": 449,
    }


def test_read_config_fixtures() -> None:
    text = load_checkpoint_config(FIXTURES / "gemma3n_tiny" / "text")
    multimodal = load_checkpoint_config(FIXTURES / "gemma3n_tiny" / "multimodal")
    assert text.layout == "text" and multimodal.layout == "multimodal"
    assert text.text == multimodal.text  # same model in two layouts and two rope formats
    assert multimodal.multimodal_tokens.image_token_id == 385


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "cannot read config"),
        ("[1, 2]", "must be a JSON object"),
        ({"model_type": "llama"}, "field 'model_type' is 'llama'"),
        ({"hidden_size": 32}, "field 'model_type' is None"),
        ({"model_type": "gemma3n", "text_config": 5}, "field 'text_config' must be an object"),
        (
            {"model_type": "gemma3n", "text_config": {"hidden_size": 0}},
            "(text_config): field 'hidden_size'",
        ),
        (
            {"model_type": "gemma3n", "text_config": {}, "image_token_id": 10**7},
            "field 'image_token_id'",
        ),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str | dict[str, Any], words: str) -> None:
    with pytest.raises(CheckpointError) as err:
        read_config(_write(tmp_path, content))
    assert str(tmp_path / "config.json") in str(err.value) and words in str(err.value)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        read_config(tmp_path)


def test_undecodable_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read config"):
        read_config(tmp_path)
