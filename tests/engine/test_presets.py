"""``edgeagent model init``: random checkpoints in the real layout; dry-run = real manifests."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.commands import model as model_command
from edgeagent.engine.checkpoint import expected_tensors, open_checkpoint
from edgeagent.engine.config import TextConfig
from edgeagent.engine.presets import PRESETS, get_preset, init_std, write_checkpoint
from edgeagent.errors import ConfigError

MANIFESTS = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"
REPO = Path(__file__).resolve().parents[2]


def run_handler(*argv: str) -> int:
    """Parse ``argv`` with the model command's own parser and call its handler (no cli.py)."""
    parser = argparse.ArgumentParser(prog="edgeagent")
    model_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.handler(args))


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgeagent ARGV`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "edgeagent", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


@pytest.mark.parametrize("layout", ["text", "multimodal"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_is_small_and_reopens(tmp_path: Path, layout: str, dtype: str) -> None:
    out = write_checkpoint(get_preset("tiny"), tmp_path / "tiny", layout=layout, dtype=dtype)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert dir_size(out) < 2 * 1024 * 1024
    ckpt = open_checkpoint(out)
    assert ckpt.layout == layout and ckpt.config.random_weights
    assert ckpt.config == get_preset("tiny").config
    assert ckpt.multimodal_tokens == get_preset("tiny").multimodal_tokens
    assert not ckpt.has("layers.10.self_attn.k_proj.weight")  # as transformers 5.24 saves
    assert not any(k.startswith("lm_head") for k in ckpt.all_tensor_names())
    assert ckpt.tokenizer is not None and ckpt.tokenizer.vocab_size == 512
    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == ("gemma3n_text" if layout == "text" else "gemma3n")
    assert raw["edgeagent_random_weights"] is True and raw["image_token_id"] == 385


def test_tiny_matches_the_parity_fixture_shapes() -> None:
    fixture = open_checkpoint(MANIFESTS.parent / "gemma3n_tiny" / "text").config
    ours = get_preset("tiny").config
    ignore = {"random_weights", "max_position_embeddings"}
    assert {k: v for k, v in vars(ours).items() if k not in ignore} == {
        k: v for k, v in vars(fixture).items() if k not in ignore
    }


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_nested_tier_is_valid(name: str) -> None:
    preset = get_preset(name)
    cfg = preset.config
    tier = preset.tiers["e2b"]
    skip = set(tier["skip_layers"])
    assert tier["ffn_dims"] == [w // 2 for w in cfg.intermediate_sizes]
    assert skip == set(range(cfg.first_kv_shared_layer, cfg.first_kv_shared_layer + 5))
    producers = {cfg.kv_source(i) for i in range(cfg.num_hidden_layers)} - set(
        cfg.cache_owners[:-2]
    )
    assert not producers & skip
    kept = [i for i in range(cfg.num_hidden_layers) if i not in skip]
    # the nested model keeps the E2B pattern: full attention every 5th kept layer
    assert [cfg.layer_types[i] for i in kept][4::5] == ["full_attention"] * (len(kept) // 5)


def test_small_is_about_100m() -> None:
    cfg = get_preset("small").config
    n = sum(math.prod(s) for s in expected_tensors(cfg).values())
    assert 80e6 < n < 130e6


def test_same_seed_same_bytes_other_seed_other_values(tmp_path: Path) -> None:
    preset = get_preset("tiny")
    a = write_checkpoint(preset, tmp_path / "a", seed=1)
    b = write_checkpoint(preset, tmp_path / "b", seed=1)
    c = write_checkpoint(preset, tmp_path / "c", seed=2)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    # values do not depend on the layout
    m = write_checkpoint(preset, tmp_path / "m", seed=1, layout="multimodal")
    np.testing.assert_array_equal(
        open_checkpoint(a).tensor("layers.3.mlp.up_proj.weight"),
        open_checkpoint(m).tensor("layers.3.mlp.up_proj.weight"),
    )


def test_random_values_are_scaled(tmp_path: Path) -> None:
    ckpt = open_checkpoint(write_checkpoint(get_preset("small"), tmp_path / "s", dtype="float32"))
    cfg: TextConfig = ckpt.config
    for name in [
        "layers.0.mlp.down_proj.weight",
        "layers.0.self_attn.q_proj.weight",
        "embed_tokens.weight",
        "embed_tokens_per_layer.weight",
        "layers.5.input_layernorm.weight",
        "layers.5.altup.correct_output_scale",
    ]:
        w = ckpt.tensor(name)
        mean, std = init_std(name, w.shape, cfg)
        assert abs(float(w.mean()) - mean) < 0.02 and abs(float(w.std()) / std - 1) < 0.12, name
    assert np.all(ckpt.tensor("layers.0.altup.correct_output_scale") != 0)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_checkpoint(get_preset("tiny"), tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no partial directory left


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_preset("huge")


def _dry_run_manifest(text: str) -> tuple[dict[str, list[int]], int]:
    lines = text.strip().splitlines()
    tensors = {}
    for line in lines[:-1]:
        name, dtype, shape = line.split()
        assert dtype == "BF16"
        tensors[name] = [int(d) for d in shape.split("x")]
    assert lines[-1].startswith("total parameters: ")
    return tensors, int(lines[-1].split()[2])


@pytest.mark.parametrize("name", ["e2b", "e4b"])
def test_dry_run_matches_the_real_manifest(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = MANIFESTS / f"gemma3n_{name}.json"
    manifest: dict[str, Any] = json.loads(path.read_text())
    assert run_handler("model", "init", "--preset", name, "--dry-run") == 0
    tensors, total = _dry_run_manifest(capsys.readouterr().out)
    expected = {k: v for k, v in manifest["tensors"].items() if not k.startswith("lm_head")}
    assert tensors == expected
    assert total == manifest["num_parameters"]
    assert (
        tensors["model.embed_tokens_per_layer.weight"][0]
        * tensors["model.embed_tokens_per_layer.weight"][1]
        == manifest["num_per_layer_embedding_parameters"]
    )
    ours = get_preset(name).config
    real = TextConfig.from_dict(manifest["config"], str(path))
    assert ours == real.__class__(
        **{**vars(real), "random_weights": True, "eos_token_ids": ours.eos_token_ids}
    )


def test_init_and_info_through_the_handler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny"
    assert (
        run_handler(
            "model", "init", "--preset", "tiny", "--out", str(out), "--layout", "multimodal"
        )
        == 0
    )
    assert "wrote tiny" in capsys.readouterr().out
    assert run_handler("model", "info", str(out), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "multimodal" and info["random_weights"] is True
    assert info["text_parameters"] == 410968  # the tiny fixture's shapes
    assert info["parameters"] > info["text_parameters"]  # plus the audio tower of the layout
    assert info["dtypes"] == ["BF16"] and info["tokenizer"] is True
    assert run_handler("model", "info", str(out)) == 0
    assert "random_weights" in capsys.readouterr().out


def test_preset_table_is_data() -> None:
    assert set(PRESETS) == {"tiny", "small", "e2b", "e4b"}
    assert all(isinstance(p["text_config"], dict) for p in PRESETS.values())


def test_cli_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    done = run_cli("model", "init", "--preset", "tiny", "--out", str(out), "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert open_checkpoint(out).config.random_weights
    dry = run_cli("model", "init", "--preset", "e4b", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.strip().endswith("bytes)")
    bad = run_cli("model", "info", str(tmp_path / "missing"))
    assert bad.returncode != 0 and "checkpoint directory not found" in bad.stderr
