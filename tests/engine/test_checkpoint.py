"""Checkpoint: layouts, zero-copy views, shards, unused KV tensors, towers, header-only opening."""

from __future__ import annotations

import json
import mmap
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from edgeagent.engine.checkpoint import expected_tensors, open_checkpoint
from edgeagent.engine.presets import config_json, get_preset, tensor_specs, write_checkpoint
from edgeagent.engine.safetensors_io import SafetensorsFile, TensorSpec, build_header
from edgeagent.errors import CheckpointError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gemma3n_tiny"


def _mmap_base(arr: np.ndarray) -> object:
    base: object = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_fixture_layouts_hold_the_same_text_weights() -> None:
    text, mm = open_checkpoint(FIXTURES / "text"), open_checkpoint(FIXTURES / "multimodal")
    assert (text.layout, text.prefix) == ("text", "model.")
    assert (mm.layout, mm.prefix) == ("multimodal", "model.language_model.")
    assert text.config == mm.config
    for name in expected_tensors(text.config):
        a, b = text.tensor(name), mm.tensor(name)
        assert a.dtype == np.float32 and b.dtype == ml_dtypes.bfloat16  # stored dtypes, unconverted
        np.testing.assert_array_equal(a, b.astype(np.float32), err_msg=name)


def test_views_are_zero_copy_and_read_only() -> None:
    ckpt = open_checkpoint(FIXTURES / "text")
    w = ckpt.tensor("layers.0.mlp.gate_proj.weight")  # [128, 32]
    assert w.shape == (128, 32) and not w.flags.writeable and not w.flags.owndata
    assert isinstance(_mmap_base(w), mmap.mmap)
    assert np.shares_memory(w, ckpt.tensor("layers.0.mlp.gate_proj.weight"))


def test_views_outlive_the_checkpoint() -> None:
    w = open_checkpoint(FIXTURES / "text").tensor("embed_tokens.weight")
    expected = load_file(str(FIXTURES / "text" / "model.safetensors"))["model.embed_tokens.weight"]
    np.testing.assert_array_equal(w, expected)  # the mmap stays alive through the view


def test_values_match_the_safetensors_library() -> None:
    ckpt = open_checkpoint(FIXTURES / "text")
    for name, ref in load_file(str(FIXTURES / "text" / "model.safetensors")).items():
        np.testing.assert_array_equal(ckpt.raw_tensor(name), ref, err_msg=name)


def test_unused_shared_kv_present_or_absent() -> None:
    text, mm = open_checkpoint(FIXTURES / "text"), open_checkpoint(FIXTURES / "multimodal")
    shared = "layers.15.self_attn.k_proj.weight"
    assert not text.has(shared) and mm.has(shared)  # transformers-saved vs released layout
    assert text.has("layers.9.self_attn.k_proj.weight")
    assert text.config.kv_source(15) == 8 and text.config.kv_source(19) == 9


def test_towers_ignored_but_reachable() -> None:
    mm = open_checkpoint(FIXTURES / "multimodal")
    audio = mm.tensors_under("model.audio_tower.")
    assert audio and all(n.startswith("model.audio_tower.") for n in audio)
    assert mm.tensors_under("model.embed_vision.")
    assert mm.raw_tensor(audio[0]).size > 0
    assert not any("tower" in n or n.startswith("model.") for n in mm.names())


def test_multimodal_tokens_and_tokenizer_absent() -> None:
    mm = open_checkpoint(FIXTURES / "multimodal")
    assert mm.multimodal_tokens.audio_token_id == 449
    assert mm.tokenizer is None  # the fixture has no tokenizer.json


def test_sharded_equals_single(tmp_path: Path) -> None:
    preset = get_preset("tiny")
    single = open_checkpoint(write_checkpoint(preset, tmp_path / "one", dtype="float32"))
    sharded = open_checkpoint(
        write_checkpoint(preset, tmp_path / "many", dtype="float32", max_shard_bytes=300_000)
    )
    assert len(sharded.files) > 1 and len(single.files) == 1
    assert single.names() == sharded.names()
    for name in single.names():
        np.testing.assert_array_equal(single.tensor(name), sharded.tensor(name))


def test_mixed_dtypes_are_fine(tmp_path: Path) -> None:
    """Some tensors F16, some BF16, some F32 in one file: each comes back in its own dtype."""
    cfg = get_preset("tiny").config
    specs = []
    dtypes = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
    for i, (name, shape) in enumerate(expected_tensors(cfg).items()):
        specs.append(TensorSpec("model." + name, dtypes[i % 3], shape))
    out = tmp_path / "mixed"
    out.mkdir()
    ref = write_checkpoint(get_preset("tiny"), tmp_path / "ref", dtype="float32")
    for f in ("config.json", "tokenizer.json"):
        (out / f).write_bytes((ref / f).read_bytes())
    src = SafetensorsFile(ref / "model.safetensors")
    with open(out / "model.safetensors", "wb") as fh:
        fh.write(build_header(specs))
        for spec in specs:
            fh.write(np.asarray(src.get(spec.name), dtype=spec.dtype).tobytes())
    ckpt = open_checkpoint(out)
    assert {str(ckpt.tensor(n).dtype) for n in ckpt.names()} == {"float32", "float16", "bfloat16"}


def test_validation_reads_headers_only(tmp_path: Path) -> None:
    """An E2B-shaped checkpoint (~8.9 GB, a sparse file: all holes) opens instantly."""
    preset = get_preset("e2b")
    specs = tensor_specs(preset.config, "text", "bfloat16")
    header = build_header(specs)
    ckpt_dir = tmp_path / "e2b"
    ckpt_dir.mkdir()
    with open(ckpt_dir / "model.safetensors", "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + sum(s.nbytes for s in specs))
    (ckpt_dir / "config.json").write_text(json.dumps(config_json(preset, "text", "bfloat16")))
    start = time.monotonic()
    ckpt = open_checkpoint(ckpt_dir)
    assert time.monotonic() - start < 2.0
    assert ckpt.info("embed_tokens_per_layer.weight").shape == (262144, 30 * 256)
    assert ckpt.tensor("layers.29.mlp.down_proj.weight").shape == (2048, 8192)
    assert ckpt.describe()["parameters"] == 4_435_182_688


def test_tokenizer_loaded_lazily(tmp_path: Path) -> None:
    ckpt = open_checkpoint(write_checkpoint(get_preset("tiny"), tmp_path / "t"))
    assert "tokenizer" not in vars(ckpt)
    tok = ckpt.tokenizer
    assert tok is not None and tok is ckpt.tokenizer and tok.vocab_size == ckpt.config.vocab_size


@pytest.mark.parametrize("layout", ["text", "multimodal"])
def test_unknown_tensor_lookup(tmp_path: Path, layout: str) -> None:
    ckpt = open_checkpoint(write_checkpoint(get_preset("tiny"), tmp_path / layout, layout=layout))
    with pytest.raises(CheckpointError, match=r"no tensor .*layers\.99"):
        ckpt.tensor("layers.99.mlp.up_proj.weight")
