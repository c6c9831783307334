"""The quantized audio kernels: fused sessions, bound buffers, block sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeagent.dsp.features import MelConfig
from edgeagent.engine.audio import AudioEncoder
from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.audio.kernels import (
    FUSED_PARTS,
    AudioKernels,
    fused_or_composed,
    projection_weights,
)
from edgeagent.engine.audio.presets import audio_config_dict, random_audio_tensors
from edgeagent.engine.audio.quantized import (
    MAX_BOUND_ROWS,
    AudioSessions,
    quantized_audio_kernels,
)
from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.engine.ort_kernels import SessionFactory
from edgeagent.engine.presets import get_preset
from edgeagent.engine.quantize import MANIFEST_FILE, QuantizedStore
from edgeagent.errors import EngineError
from tests.audio.conftest import read_clip


def tiny_tower(seed: int = 1) -> tuple[AudioConfig, AudioWeights]:
    text = get_preset("tiny").config
    cfg = AudioConfig.from_dict(audio_config_dict(text), text.hidden_size, "tiny")
    tensors = random_audio_tensors(text, seed=seed)
    return cfg, AudioWeights.from_tensors(tensors.__getitem__, cfg)


def unfused_kernels(weights: AudioWeights, store: Path) -> AudioKernels:
    """One session per projection over the same store: what the fused sessions replace."""
    manifest = json.loads((store / MANIFEST_FILE).read_text(encoding="utf-8"))
    sessions = AudioSessions(SessionFactory(QuantizedStore(store, manifest), 0))
    return AudioKernels(
        "unfused", {name: sessions.projection(name) for name, _ in projection_weights(weights)}
    )


def test_fused_sessions_compute_the_composed_projections(tmp_path: Path) -> None:
    cfg, weights = tiny_tower()
    fused = quantized_audio_kernels(weights, tmp_path / "q", bits=8, block_size=32)
    assert set(fused.fused) == {
        f"conformer.{i}.{part}" for i in range(cfg.num_layers) for part in FUSED_PARTS
    }
    inside = {f"conformer.{i}.{n}" for i in range(cfg.num_layers) for p in FUSED_PARTS.values()
              for n in p}  # fmt: skip
    assert not inside & set(fused.linears)  # no session is built twice
    unfused = unfused_kernels(weights, tmp_path / "q")
    rng = np.random.default_rng(0)
    for i in range(cfg.num_layers):
        for part in FUSED_PARTS:
            x = rng.standard_normal((5, cfg.hidden_size)).astype(np.float32)
            got, want = (fused_or_composed(k, i, part)(x) for k in (fused, unfused))
            if not part.endswith("qkv"):  # one output; q/k/v are three
                got, want = (got,), (want,)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=part)
    pcm = read_clip("one_white_5db")
    mel = MelConfig()
    np.testing.assert_allclose(
        AudioEncoder(cfg, weights, fused, mel).encode(pcm),
        AudioEncoder(cfg, weights, unfused, mel).encode(pcm),
        atol=1e-4,
    )


def test_bound_calls_keep_one_buffer_whatever_the_row_count(tmp_path: Path) -> None:
    """A lagging stream pushes 1..64 rows at a time: results stay right, memory does not grow."""
    cfg, weights = tiny_tower()
    post = quantized_audio_kernels(weights, tmp_path / "q", bits=8, block_size=32).linears[
        "conformer.0.attention.post"
    ]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((MAX_BOUND_ROWS, cfg.hidden_size)).astype(np.float32)
    whole = post(x).copy()
    first = post(x[:1])
    for rows in range(1, MAX_BOUND_ROWS + 1):
        y = post(x[:rows])
        assert y.shape == (rows, whole.shape[1])
        assert np.shares_memory(y, first)  # every row count writes the same buffer
        np.testing.assert_allclose(y, whole[:rows], atol=1e-6)  # rows do not interact
    big = rng.standard_normal((MAX_BOUND_ROWS + 3, cfg.hidden_size)).astype(np.float32)
    a, b = post(big), post(big)
    assert not np.shares_memory(a, b)  # whole clips get fresh arrays
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(post(big[:4]), a[:4], atol=1e-6)


def test_4_bit_blocks_of_256_stream_like_offline(tmp_path: Path) -> None:
    cfg, weights = tiny_tower(seed=2)
    kernels = quantized_audio_kernels(weights, tmp_path / "q4", bits=4, block_size=256)
    assert json.loads((tmp_path / "q4" / MANIFEST_FILE).read_text())["block_size"] == 256
    enc = AudioEncoder(cfg, weights, kernels, MelConfig())
    pcm = read_clip("two_clean")
    whole = enc.encode(pcm)
    s = enc.stream()
    parts = [s.push(pcm[i : i + 2560]) for i in range(0, len(pcm), 2560)]
    np.testing.assert_allclose(np.concatenate([*parts, s.flush()]), whole, atol=1e-5)
    with pytest.raises(EngineError, match="block size"):
        quantized_audio_kernels(weights, tmp_path / "bad", bits=4, block_size=512)
