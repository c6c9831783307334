"""Streaming equals offline, and soft tokens come out as soon as their audio is in (must-show 2)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edgeagent.engine.audio import AudioEncoder, AudioKernels
from edgeagent.engine.audio.encoder import AudioStream
from edgeagent.errors import AudioError
from tests.audio.conftest import MODELS, read_clip

STREAM_TOLERANCE = 1e-5
BLOCKS_MS = (10, 37, 160, 480)


def released_tokens_ready(n_samples: int) -> int:
    """Token k reads samples up to 2560·k + 1473: its 160 ms window's start plus 92 ms."""
    return 0 if n_samples < 1473 else (n_samples - 1473) // 2560 + 1


def blocks(pcm: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("block_ms", BLOCKS_MS)
def test_stream_equals_encode(model: str, block_ms: int, encoders: dict[str, AudioEncoder]) -> None:
    enc = encoders[model]
    pcm = read_clip("two_pink_10db")
    whole = enc.encode(pcm)
    stream = enc.stream()
    parts = []
    for block in blocks(pcm, block_ms * 16):
        parts.append(stream.push(block))
        # Every token whose audio has been pushed is out, none earlier.
        assert stream.tokens == enc.tokens_ready(stream.samples)
        if model == "gemma3n_audio_tiny":
            assert stream.tokens == released_tokens_ready(stream.samples)
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    assert (
        streamed.shape == whole.shape == (enc.tokens_total(len(pcm)), enc.config.text_hidden_size)
    )
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=STREAM_TOLERANCE)


def test_random_block_sizes(tiny_encoder: AudioEncoder) -> None:
    pcm = read_clip("one_white_5db")
    rng = np.random.default_rng(5)
    cuts = np.cumsum(rng.integers(0, 3000, size=200))
    cuts = cuts[cuts < len(pcm)]
    stream = tiny_encoder.stream()
    parts = [stream.push(p) for p in np.split(pcm, cuts)]  # includes empty blocks
    parts.append(stream.flush())
    np.testing.assert_allclose(
        np.concatenate(parts), tiny_encoder.encode(pcm), rtol=0, atol=STREAM_TOLERANCE
    )


def test_first_token_after_92_ms_then_one_per_160_ms(tiny_encoder: AudioEncoder) -> None:
    stream = tiny_encoder.stream()
    pcm = read_clip("two_clean")
    assert len(stream.push(pcm[:1472])) == 0
    assert len(stream.push(pcm[1472:1473])) == 1  # sample 1473 completes mel frame 6
    assert len(stream.push(pcm[1473 : 1473 + 2559])) == 0
    assert len(stream.push(pcm[4032:4033])) == 1


class CountingKernels:
    """Wraps a backend; records the rows each projection sees per call."""

    def __init__(self, inner: AudioKernels) -> None:
        self.calls: dict[str, list[int]] = {}
        self.kernels = AudioKernels(
            "counting", {n: self._wrap(n, f) for n, f in inner.linears.items()}
        )

    def _wrap(self, name, fn):  # type: ignore[no-untyped-def]
        def call(x: np.ndarray) -> np.ndarray:
            self.calls.setdefault(name, []).append(len(x))
            return fn(x)

        return call


def test_stream_keeps_state_and_batches_each_push(tiny_encoder: AudioEncoder) -> None:
    counting = CountingKernels(tiny_encoder.kernels)
    enc = AudioEncoder(
        tiny_encoder.config, tiny_encoder.weights, counting.kernels, tiny_encoder.logmel.config
    )
    pcm = read_clip("two_clean")
    stream = enc.stream()
    for block in blocks(pcm, 2560):
        before = {k: len(v) for k, v in counting.calls.items()}
        stream.push(block)
        for name, rows in counting.calls.items():  # one batched call per projection per push
            assert len(rows) - before.get(name, 0) <= 1, name
    stream.flush()
    frames = stream.frames
    # Nothing is recomputed: every encoder frame passes through each projection exactly once.
    for name, rows in counting.calls.items():
        if name.startswith(("conformer.", "subsample")):
            assert sum(rows) == frames, name
    assert (
        sum(counting.calls["embedding_projection"]) == stream.tokens == enc.tokens_total(len(pcm))
    )
    assert max(counting.calls["conformer.0.attention.attn.q_proj"]) == 4  # 160 ms = 4 frames


def test_stream_after_flush_is_closed(tiny_encoder: AudioEncoder) -> None:
    stream: AudioStream = tiny_encoder.stream()
    stream.push(np.zeros(3000, np.float32))
    stream.flush()
    with pytest.raises(AudioError):
        stream.push(np.zeros(10, np.float32))
    with pytest.raises(AudioError):
        stream.flush()


def test_independent_streams(tiny_encoder: AudioEncoder) -> None:
    a, b = tiny_encoder.stream(), tiny_encoder.stream()
    pcm = read_clip("two_clean")[:20000]
    out_a = [a.push(x) for x in blocks(pcm, 1600)]
    out_b = [b.push(x) for x in blocks(pcm, 4000)]
    np.testing.assert_array_equal(
        np.concatenate([*out_a, a.flush()]), np.concatenate([*out_b, b.flush()])
    )
