"""Tokenizer: round trips (byte fallback), specials at Gemma's ids, markers, vocabulary size."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeagent.engine.presets import get_preset
from edgeagent.engine.tokenizer import Tokenizer, load_tokenizer
from edgeagent.engine.tokenizer_build import build_tokenizer
from edgeagent.errors import TokenizerError

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and   multiple spaces, trailing ",
    "line one\nline two\n\n\ttabbed",
    "Ünïcödé façade — naïve café",
    "日本語のテキスト and 中文",
    "emoji 🙂🚀 and \x00 control \x7f bytes",
    "",
]


@pytest.fixture(scope="module", params=["tiny", "small"])
def tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The preset's tokenizer, saved to tokenizer.json and loaded back as a checkpoint would."""
    d = tmp_path_factory.mktemp(request.param)
    build_tokenizer(get_preset(request.param).tokenizer).save(str(d / "tokenizer.json"))
    loaded = load_tokenizer(d)
    assert loaded is not None
    return loaded


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_specials_at_gemma_ids(tok: Tokenizer) -> None:
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert tok.token_to_id("<unk>") == 3
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (105, 106)
    assert tok.token_to_id("<no such token>") is None


def test_chat_markers_are_single_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>\n")
    assert ids[0] == 105 and 106 in ids and ids.count(105) == 1
    assert tok.decode(ids) == "user\nhi\n"
    assert tok.decode(ids, skip_special_tokens=False) == "<start_of_turn>user\nhi<end_of_turn>\n"


def test_no_bos_added(tok: Tokenizer) -> None:
    # The tokenizer.json's post-processor adds <bos> (as Gemma's does); encode() must not.
    assert tok.backend.encode("hi").ids[0] == 2
    assert 2 not in tok.encode("hi")


def test_vocabulary_matches_model(tok: Tokenizer) -> None:
    preset = get_preset("tiny" if tok.vocab_size == 512 else "small")
    assert tok.vocab_size == preset.config.vocab_size
    assert all(tok.id_to_token(i) is not None for i in range(tok.vocab_size))
    assert all(tok.token_to_id(f"<0x{b:02X}>") is not None for b in range(256))
    text_vocab = preset.config.vocab_size_per_layer_input
    assert all(
        i < text_vocab for i in tok.encode(" ".join(TEXTS))
    )  # text never uses multimodal ids


def test_multimodal_markers(tok: Tokenizer) -> None:
    preset = get_preset("tiny" if tok.vocab_size == 512 else "small")
    m = preset.multimodal_tokens
    assert tok.token_to_id("<start_of_image>") == m.boi_token_id
    assert tok.token_to_id("<end_of_image>") == m.eoi_token_id
    assert tok.token_to_id("<image_soft_token>") == m.image_token_id
    assert tok.token_to_id("<start_of_audio>") == m.boa_token_id
    assert tok.token_to_id("<end_of_audio>") == m.eoa_token_id
    assert tok.token_to_id("<audio_soft_token>") == m.audio_token_id
    assert tok.encode("<audio_soft_token><audio_soft_token>") == [m.audio_token_id] * 2


def test_tiny_marker_ids_are_the_fixture_ones() -> None:
    m = get_preset("tiny").multimodal_tokens
    assert (m.boi_token_id, m.boa_token_id, m.eoi_token_id, m.image_token_id) == (
        239,
        240,
        384,
        385,
    )
    assert (m.eoa_token_id, m.audio_token_id) == (448, 449)


def test_small_vocabulary_compresses_english() -> None:
    tok = Tokenizer(build_tokenizer(get_preset("small").tokenizer))
    text = "The function returns the value of the object and the list of arguments."
    assert len(tok.encode(text)) < len(text) / 3


def test_build_is_deterministic() -> None:
    spec = get_preset("tiny").tokenizer
    assert build_tokenizer(spec).to_str() == build_tokenizer(spec).to_str()


def test_decode_out_of_range(tok: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([-1])


def test_missing_tokenizer_is_none(tmp_path: Path) -> None:
    assert load_tokenizer(tmp_path) is None
