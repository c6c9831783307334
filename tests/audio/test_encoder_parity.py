"""The audio encoder and its projection equal transformers on the fixture models (must-show 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeagent.dsp.features import processor_padding
from edgeagent.engine import load
from edgeagent.engine.audio import AudioEncoder, load_audio
from edgeagent.engine.audio.conformer import BlockState, conformer_block
from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.errors import CheckpointError
from tests.audio.conftest import FIXTURES, MODELS, PARITY_CLIPS, TOLERANCE, read_clip

TINY_TEXT = FIXTURES.parent / "gemma3n_tiny" / "text"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("clip", PARITY_CLIPS)
def test_encoder_and_projection_match_transformers(
    model: str, clip: str, encoders: dict[str, AudioEncoder], audio_reference: dict[str, np.ndarray]
) -> None:
    enc, pcm = encoders[model], read_clip(clip)
    hidden = enc.encode(pcm, project=False)
    tokens = enc.encode(pcm)
    want_hidden = audio_reference[f"{model}/{clip}/encoder"]
    want_tokens = audio_reference[f"{model}/{clip}/projected"]
    assert hidden.shape == want_hidden.shape and tokens.shape == want_tokens.shape
    assert len(tokens) == enc.tokens_total(len(pcm))
    np.testing.assert_allclose(hidden, want_hidden, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(tokens, want_tokens, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("model", MODELS)
def test_processor_padded_clip_matches_transformers_default_call(
    model: str, encoders: dict[str, AudioEncoder], audio_reference: dict[str, np.ndarray]
) -> None:
    # 43040 samples: the processor pads to 43136, one more mel frame than the clip itself has.
    pcm = read_clip("one_white_5db")
    padded = processor_padding(pcm)
    mel = encoders[model].logmel.config
    assert mel.frames_in(len(padded)) == mel.frames_in(len(pcm)) + 1
    tokens = encoders[model].encode(padded)
    want = audio_reference[f"{model}/one_white_5db_processor/projected"]
    np.testing.assert_allclose(tokens, want, rtol=0, atol=TOLERANCE)


def test_blocks_match_transformers_step_by_step(
    tiny_encoder: AudioEncoder, audio_reference: dict[str, np.ndarray]
) -> None:
    stream = tiny_encoder.stream(project=False)
    x = stream.subsample(stream.mel.push(read_clip("two_clean")), finish=True)
    key = "gemma3n_audio_tiny/two_clean/debug_"
    np.testing.assert_allclose(x, audio_reference[key + "subsample"], rtol=0, atol=1e-5)
    for i, block in enumerate(tiny_encoder.blocks):
        x = conformer_block(block, x, BlockState.empty(tiny_encoder.config))
        np.testing.assert_allclose(x, audio_reference[f"{key}block{i}"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("model", MODELS)
def test_pad_embedding_matches_transformers(
    model: str, encoders: dict[str, AudioEncoder], audio_reference: dict[str, np.ndarray]
) -> None:
    np.testing.assert_allclose(
        encoders[model].pad_embedding(), audio_reference[f"{model}/pad_embedding"], atol=TOLERANCE
    )


def test_released_timing_constants(tiny_encoder: AudioEncoder) -> None:
    # 160 ms per token; token k needs samples up to 2560k + 1473 (six mel frames of look-ahead).
    assert tiny_encoder.samples_per_token == 2560
    assert tiny_encoder.lookahead_samples == 1473
    assert [tiny_encoder.tokens_ready(n) for n in (1472, 1473, 4032, 4033)] == [0, 1, 1, 2]
    assert tiny_encoder.tokens_total(512) == 0
    assert tiny_encoder.tokens_total(513) == 1


def test_short_and_silent_input(tiny_encoder: AudioEncoder) -> None:
    assert tiny_encoder.encode(np.zeros(400, np.float32)).shape == (0, 16)
    silent = tiny_encoder.encode(np.zeros(16000, np.float32))
    assert silent.shape == (tiny_encoder.tokens_total(16000), 16) and np.all(np.isfinite(silent))


def test_text_only_checkpoint_has_no_audio() -> None:
    with pytest.raises(CheckpointError, match="audio_config"):
        load_audio(open_checkpoint(TINY_TEXT))


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "gemma3n_audio_tiny", target)
    return target


def test_bad_audio_config_names_the_field(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["audio_config"]["conf_attention_context_right"] = 2
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"audio_config\.conf_attention_context_right"):
        load_audio(open_checkpoint(path))
    cfg["audio_config"]["conf_attention_context_right"] = 0
    cfg["audio_config"]["hidden_size"] = 32
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"audio_tower\.subsample_conv_projection"):
        load_audio(open_checkpoint(path))


def test_engine_load_offers_the_audio_encoder(audio_reference: dict[str, np.ndarray]) -> None:
    model = load(FIXTURES / "gemma3n_audio_tiny")
    tokens = model.audio.encode(read_clip("two_clean"))
    want = audio_reference["gemma3n_audio_tiny/two_clean/projected"]
    np.testing.assert_allclose(tokens, want, rtol=0, atol=TOLERANCE)
    assert tokens.shape[1] == model.config.hidden_size  # soft tokens in the text space
