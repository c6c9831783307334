"""``edgeagent generate`` from the command line, on a checkpoint ``model init`` wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.engine import Conversation, load


def edgeagent(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeagent", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    done = edgeagent("model", "init", "--preset", "tiny", "--out", str(out), "--seed", "1")
    assert done.returncode == 0, done.stderr
    return out


def test_generate_prints_json(tiny_preset: Path) -> None:
    done = edgeagent(
        "generate",
        "--model",
        str(tiny_preset),
        "--prompt",
        "hello there",
        "--max-new-tokens",
        "6",
        "--seed",
        "3",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert 1 <= out["new_tokens"] <= 6 and len(out["ids"]) == out["new_tokens"]
    assert out["stop_reason"] in {"eos", "length"}
    assert isinstance(out["text"], str) and out["tier"] == "full"
    assert out["random_weights"] is True
    assert "random weights" in done.stderr  # the user is told the output is noise


def test_greedy_generation_is_repeatable_and_tiers_differ(tiny_preset: Path) -> None:
    args = (
        "generate",
        "--model",
        str(tiny_preset),
        "--prompt",
        "hi",
        "--greedy",
        "--max-new-tokens",
        "8",
        "--json",
    )
    first, again = edgeagent(*args), edgeagent(*args)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["ids"] == json.loads(again.stdout)["ids"]
    nested = edgeagent(*args, "--tier", "e2b")
    assert nested.returncode == 0, nested.stderr
    assert json.loads(nested.stdout)["tier"] == "e2b"


def test_generate_streams_plain_text(tiny_preset: Path) -> None:
    done = edgeagent(
        "generate", "--model", str(tiny_preset), "--prompt", "hi", "--max-new-tokens", "4"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n")


def test_unknown_tier_and_missing_model_are_clear_errors(tiny_preset: Path, tmp_path: Path) -> None:
    bad_tier = edgeagent("generate", "--model", str(tiny_preset), "--prompt", "x", "--tier", "huge")
    assert bad_tier.returncode == 1
    assert "unknown tier 'huge'" in bad_tier.stderr and "e2b" in bad_tier.stderr
    missing = edgeagent("generate", "--model", str(tmp_path / "nope"), "--prompt", "x")
    assert missing.returncode == 1 and "nope" in missing.stderr
    assert "Traceback" not in missing.stderr + bad_tier.stderr


def test_text_turns_prefill_only_their_own_tokens(tiny_preset: Path) -> None:
    model = load(tiny_preset, max_context=512)
    conversation = Conversation(model)
    conversation.user_turn("What is the weather?")
    _, reason = conversation.reply(max_new_tokens=5)
    before = conversation.state.tokens_processed
    conversation.user_turn("And tomorrow?")
    logits, fed = conversation.feed()
    tokenizer = model.tokenizer
    assert tokenizer is not None
    turn = tokenizer.encode(
        "<start_of_turn>user\nAnd tomorrow?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert turn[0] == tokenizer.start_of_turn_id
    closing = len(tokenizer.encode("<end_of_turn>\n"))
    if reason == "length":
        closing += 1  # the answer's last token was sampled but not yet fed
    assert fed == closing + len(turn) == conversation.state.tokens_processed - before
    assert abs(logits - model.logits(conversation.ids())[-1]).max() <= 1e-4
