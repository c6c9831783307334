"""Random audio towers at the released shapes, and the quantized audio kernels."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from edgeagent.dsp.features import MelConfig
from edgeagent.engine import load
from edgeagent.engine.audio import AudioEncoder, load_audio, reference_audio_kernels
from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.audio.presets import (
    audio_config_dict,
    audio_tensor_specs,
    random_audio_tensors,
)
from edgeagent.engine.audio.quantized import quantized_audio_kernels
from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.presets import get_preset, tensor_specs, write_checkpoint
from edgeagent.errors import EngineError
from tests.audio.conftest import FIXTURES, read_clip

BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("preset", ["e2b", "e4b"])
def test_released_shapes_match_transformers(preset: str) -> None:
    manifest = json.loads((FIXTURES / "manifest_released_audio.json").read_text())
    text = get_preset(preset).config
    specs = audio_tensor_specs(text, BF16)
    assert {s.name: list(s.shape) for s in specs} == manifest["tensors"]
    released = manifest["audio_config"]
    ours = audio_config_dict(text)
    for key, value in ours.items():
        if key in released and key not in ("vocab_offset", "model_type"):
            assert released[key] == value or list(released[key]) == value, key
    assert ours["vocab_offset"] == 262_272 and ours["vocab_size"] == 128


def test_tiny_multimodal_checkpoint_has_a_working_audio_tower(tmp_path: Path) -> None:
    out = write_checkpoint(get_preset("tiny"), tmp_path / "tiny", layout="multimodal")
    model = load(out)
    audio = model.audio
    assert audio is model.audio  # built once
    assert audio.config.num_layers == 3 and audio.config.text_hidden_size == 32
    tokens = audio.encode(read_clip("two_clean"))
    assert tokens.shape == (audio.tokens_total(len(read_clip("two_clean"))), 32)
    assert np.all(np.isfinite(tokens))
    np.testing.assert_allclose(
        np.sqrt(np.mean(tokens**2, axis=-1)), 1.0, rtol=1e-3
    )  # unscaled norm


def test_text_layout_has_no_audio_tensors(tmp_path: Path) -> None:
    text = get_preset("tiny").config
    names = {s.name for s in tensor_specs(text, "text")}
    assert not any("audio" in n for n in names)
    mm = {s.name for s in tensor_specs(text, "multimodal")}
    assert {s.name for s in audio_tensor_specs(text, BF16)} <= mm


def test_quantized_kernels_stream_like_offline(tmp_path: Path) -> None:
    text = get_preset("tiny").config
    cfg = AudioConfig.from_dict(audio_config_dict(text), text.hidden_size, "tiny")
    tensors = random_audio_tensors(text, seed=1)
    weights = AudioWeights.from_tensors(tensors.__getitem__, cfg)
    kernels = quantized_audio_kernels(weights, tmp_path / "q8", bits=8, block_size=32)
    enc = AudioEncoder(cfg, weights, kernels, MelConfig())
    pcm = read_clip("two_pink_10db")
    whole = enc.encode(pcm)
    s = enc.stream()
    parts = [s.push(pcm[i : i + 2560]) for i in range(0, len(pcm), 2560)]
    np.testing.assert_allclose(np.concatenate([*parts, s.flush()]), whole, atol=1e-5)
    ref = AudioEncoder(cfg, weights, reference_audio_kernels(weights), MelConfig()).encode(pcm)
    cosine = np.sum(ref * whole, -1) / (
        np.linalg.norm(ref, axis=-1) * np.linalg.norm(whole, axis=-1)
    )
    assert cosine.min() > 0.98
    # The store is reused, not rewritten.
    mtime = (tmp_path / "q8" / "weights.safetensors").stat().st_mtime_ns
    quantized_audio_kernels(weights, tmp_path / "q8", bits=8, block_size=32)
    assert (tmp_path / "q8" / "weights.safetensors").stat().st_mtime_ns == mtime


def test_load_audio_with_quantized_kernels(tmp_path: Path) -> None:
    ckpt = write_checkpoint(get_preset("tiny"), tmp_path / "tiny", layout="multimodal")
    q = load_audio(open_checkpoint(ckpt), "quantized", bits=8, block_size=32)
    assert q.kernels.name == "quantized q8"
    assert (ckpt / "edgeagent-audio-q8b32" / "manifest.json").is_file()
    ref = load(ckpt).audio.encode(read_clip("one_white_5db"))
    got = q.encode(read_clip("one_white_5db"))
    cosine = np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cosine.min() > 0.98
    with pytest.raises(EngineError, match="unknown audio kernels"):
        load_audio(open_checkpoint(ckpt), "fast")
