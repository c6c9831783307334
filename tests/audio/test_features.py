"""Log-mel features: transformers' numbers, block by block as audio arrives."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edgeagent.dsp.features import (
    LogMel,
    MelConfig,
    MelStream,
    load_mel_config,
    processor_padding,
)
from edgeagent.errors import AudioError
from tests.audio.conftest import FIXTURES, PARITY_CLIPS, TOLERANCE, read_clip


def test_synthetic_signal_matches_transformers(audio_reference: dict[str, np.ndarray]) -> None:
    pcm = audio_reference["synthetic_pcm"]  # silence, a full-scale square wave, a chirp
    ours = LogMel()(pcm)
    want = audio_reference["synthetic_features"]
    assert ours.shape == want.shape == (MelConfig().frames_in(len(pcm)), 128)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, want, rtol=0, atol=TOLERANCE)
    assert np.all(ours[:5] == np.float32(np.log(1e-5)))  # digital silence sits at the floor


@pytest.mark.parametrize("clip", PARITY_CLIPS)
def test_speech_matches_transformers(clip: str, audio_reference: dict[str, np.ndarray]) -> None:
    ours = LogMel()(read_clip(clip)[:8000])
    np.testing.assert_allclose(ours, audio_reference[f"{clip}_features"], rtol=0, atol=TOLERANCE)


def test_frame_count_and_span() -> None:
    cfg = MelConfig()
    assert (cfg.frame_length, cfg.hop_length, cfg.fft_length, cfg.frame_span) == (
        512,
        160,
        1024,
        513,
    )
    assert [cfg.frames_in(n) for n in (0, 512, 513, 672, 673, 16000)] == [0, 0, 1, 1, 2, 97]
    assert LogMel()(np.zeros(512, np.float32)).shape == (0, 128)


@pytest.mark.parametrize("block", [1, 160, 37 * 16, 513, 4000])
def test_stream_equals_offline_bitwise(block: int) -> None:
    pcm = read_clip("two_pink_10db")
    logmel = LogMel()
    stream = MelStream(logmel)
    parts = [stream.push(pcm[i : i + block]) for i in range(0, len(pcm), block)]
    assert stream.frames_out == logmel.config.frames_in(len(pcm))
    np.testing.assert_array_equal(np.concatenate(parts), logmel(pcm))


def test_stream_yields_a_frame_once_its_513_samples_are_in() -> None:
    stream = MelStream(LogMel())
    counts = []
    for _ in range(12):
        stream.push(np.zeros(100, np.float32))
        counts.append(stream.frames_out)
    assert counts == [MelConfig().frames_in(100 * (i + 1)) for i in range(12)]
    assert counts[5] == 1 and counts[4] == 0  # 513 samples arrive with the 6th block of 100


def test_processor_padding() -> None:
    assert len(processor_padding(np.ones(51520, np.float32))) == 51584
    assert len(processor_padding(np.ones(256, np.float32))) == 256
    padded = processor_padding(np.ones(130, np.float32))
    assert len(padded) == 256 and np.all(padded[130:] == 0)


def test_checkpoint_preprocessor_config_is_read() -> None:
    cfg = load_mel_config(FIXTURES / "gemma3n_audio_tiny")
    assert cfg == MelConfig()  # the fixture stores transformers' defaults, as released
    assert load_mel_config(FIXTURES) == MelConfig()  # no file: the defaults


def test_per_bin_normalisation_and_scale() -> None:
    pcm = read_clip("two_clean")[:4000]
    mean, std = tuple(np.linspace(-1, 1, 128)), tuple(np.linspace(0.5, 2, 128))
    cfg = MelConfig.from_dict({"per_bin_mean": mean, "per_bin_stddev": std}, "test")
    plain = LogMel()(pcm).astype(np.float64)
    np.testing.assert_allclose(LogMel(cfg)(pcm), (plain - mean) / std, atol=1e-5)
    louder = LogMel(MelConfig(input_scale_factor=2.0))(pcm)
    above_floor = plain > np.log(1e-5) + 1
    np.testing.assert_allclose(louder[above_floor], plain[above_floor] + np.log(2), atol=1e-4)


def test_bad_preprocessor_configs(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AudioError, match="per_bin_mean"):
        MelConfig.from_dict({"per_bin_mean": [0.0] * 3}, "x")
    with pytest.raises(AudioError, match="sampling_rate"):
        MelConfig.from_dict({"sampling_rate": 8000}, "x")
    with pytest.raises(AudioError, match="preemphasis"):
        MelConfig.from_dict({"preemphasis": "high"}, "x")
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(AudioError, match="cannot read"):
        load_mel_config(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"dither": 1e-4}))
    with caplog.at_level(logging.WARNING):
        assert load_mel_config(tmp_path) == MelConfig()
    assert "dither" in caplog.text
