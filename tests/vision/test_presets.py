"""``model init --layout multimodal`` writes a vision tower: released shapes for e2b/e4b (the
timm manifest), a tiny one that runs; the released structure loads through the weight reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from edgeagent.cli import main as cli_main
from edgeagent.engine import load
from edgeagent.engine.presets import get_preset
from edgeagent.engine.vision import VisionConfig, VisionWeights
from edgeagent.engine.vision.presets import vision_config_dict, vision_tensor_specs
from tests.vision.conftest import FIXTURES

BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (FIXTURES / "manifest_released_vision.json").read_text(encoding="utf-8")
    )
    return data


@pytest.mark.parametrize("preset", ["e2b", "e4b"])
def test_released_presets_match_the_timm_manifest(preset: str, manifest: dict[str, Any]) -> None:
    text = get_preset(preset).config
    specs = vision_tensor_specs(text, BF16)
    want = {name: shape for name, shape in manifest["tower_tensors"]}
    want.update(manifest["embed_vision_tensors"][str(text.hidden_size)])
    got = {s.name: list(s.shape) for s in specs}
    assert got == want  # every name and shape, nothing extra
    tower = [s.name for s in specs if s.name.startswith("model.vision_tower.")]
    assert tower == [name for name, _ in manifest["tower_tensors"]]  # timm's state-dict order
    n_tower = sum(int(np.prod(s.shape)) for s in specs if s.name.startswith("model.vision_"))
    assert n_tower == manifest["parameters"]["vision_tower"]


def test_released_structure_loads_through_the_weight_reader(manifest: dict[str, Any]) -> None:
    """Zero-memory stand-ins of the released shapes pass the reader's shape checks."""
    cfg = VisionConfig.from_dict({}, 2048, "released")
    assert (
        len(cfg.blocks)
        == sum(
            1
            for n, _ in manifest["tower_tensors"]
            if n.endswith(("bn2.weight", "pw_proj.bn.weight", "attn.output.proj.weight"))
        )
        - 1
    )  # the MSFA's ffn also has a pw_proj
    shapes = {n: s for n, s in manifest["tower_tensors"]} | manifest["embed_vision_tensors"]["2048"]
    fake = {n: np.broadcast_to(np.zeros((), BF16), tuple(s)) for n, s in shapes.items()}
    weights = VisionWeights.from_tensors(fake.__getitem__, cfg)
    assert len(weights.blocks) == len(cfg.blocks) == 84
    assert cfg.msfa_in_chs == 1920 and cfg.hidden_size == 2048


def test_tiny_config_has_every_block_type() -> None:
    text = get_preset("tiny").config
    cfg = VisionConfig.from_dict(vision_config_dict(text), text.hidden_size, "tiny")
    assert {b.kind for b in cfg.blocks} == {"er", "uir", "mqa"}
    assert any(b.kind == "mqa" and b.kv_stride > 1 for b in cfg.blocks)


def test_model_init_multimodal_tiny_encodes_an_image(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    args = ["model", "init", "--preset", "tiny", "--out", str(out), "--layout", "multimodal"]
    assert cli_main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["edgeagent_structure"]["stem_size"] == 8
    model = load(out)
    assert model.audio.config.hidden_size > 0  # the audio tower is still there
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    tokens = model.vision.encode(image, size=256)
    assert tokens.shape == (256, model.config.hidden_size) and tokens.dtype == np.float32
    assert np.isfinite(tokens).all()
    # non-degenerate: tokens differ from place to place and from image to image
    assert tokens.std(axis=0).mean() > 0.1
    other = model.vision.encode(np.zeros_like(image), size=256)
    assert np.abs(other - tokens).max() > 0.1
    soft = model.vision.encode_pixels(np.full((256, 256, 3), 0.5, np.float32), project=False)
    assert np.isfinite(soft).all() and 0.3 < float(soft.std()) < 10
