"""Clear errors: bad images, a checkpoint without a vision tower, missing or mis-shaped tensors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeagent.engine import load
from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.safetensors_io import SafetensorsWriter, TensorSpec
from edgeagent.engine.vision import VisionConfig, VisionEncoder, VisionWeights
from edgeagent.errors import CheckpointError, VisionError
from tests.vision.conftest import FIXTURES, REDUCED

AUDIO_ONLY = FIXTURES.parent / "audio" / "gemma3n_audio_tiny"


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((32, 32, 3), dtype=np.float32), "uint8"),
        (np.zeros((32, 32), dtype=np.uint8), r"\[H, W, 3\]"),
        (np.zeros((32, 32, 4), dtype=np.uint8), r"\[H, W, 3\]"),
        (np.zeros((0, 32, 3), dtype=np.uint8), r"\[H, W, 3\]"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_images_are_rejected(reduced: VisionEncoder, image: object, match: str) -> None:
    with pytest.raises(VisionError, match=match):
        reduced.encode(image)  # type: ignore[arg-type]


def test_sizes_that_do_not_give_a_16x16_grid_are_rejected(reduced: VisionEncoder) -> None:
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(VisionError, match="multiple of 256"):
        reduced.encode(img, size=300)
    with pytest.raises(VisionError, match="square"):
        reduced.encode_pixels(np.zeros((256, 128, 3), dtype=np.float32))


def test_checkpoint_without_vision_config() -> None:
    with pytest.raises(CheckpointError, match="no 'vision_config'"):
        load(AUDIO_ONLY).vision  # noqa: B018 - the property loads


def _rewrite(src: Path, dst: Path, drop: str = "", reshape: str = "") -> None:
    """Copy a checkpoint, leaving out tensor ``drop`` or giving ``reshape`` a wrong shape."""
    shutil.copytree(src, dst)
    ckpt = open_checkpoint(src)
    tensors = {n: np.array(ckpt.raw_tensor(n)) for n in ckpt.all_tensor_names() if n != drop}
    if reshape:
        tensors[reshape] = np.concatenate([tensors[reshape]] * 2)
    specs = [TensorSpec(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    (dst / "model.safetensors").unlink()
    with SafetensorsWriter(dst / "model.safetensors", specs, {"format": "pt"}) as w:
        for n, t in tensors.items():
            w.write(n, t)


def test_checkpoint_without_vision_tensors(tmp_path: Path) -> None:
    ckpt = open_checkpoint(REDUCED)
    tower = ckpt.tensors_under("model.vision_tower.")
    shutil.copytree(REDUCED, tmp_path / "c")
    tensors = {n: np.array(ckpt.raw_tensor(n)) for n in ckpt.all_tensor_names() if n not in tower}
    specs = [TensorSpec(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    (tmp_path / "c" / "model.safetensors").unlink()
    with SafetensorsWriter(tmp_path / "c" / "model.safetensors", specs, {"format": "pt"}) as w:
        for n, t in tensors.items():
            w.write(n, t)
    with pytest.raises(CheckpointError, match="no vision encoder"):
        load(tmp_path / "c").vision  # noqa: B018


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    name = "model.vision_tower.timm_model.blocks.2.2.attn.key.down_conv.weight"
    _rewrite(REDUCED, tmp_path / "c", drop=name)
    with pytest.raises(CheckpointError, match=re.escape(name)):
        load(tmp_path / "c").vision  # noqa: B018


def test_misshaped_tensor_is_named(tmp_path: Path) -> None:
    name = "model.vision_tower.timm_model.msfa.norm.weight"
    _rewrite(REDUCED, tmp_path / "c", reshape=name)
    with pytest.raises(CheckpointError, match=re.escape(f"{name} has shape [128]")):
        load(tmp_path / "c").vision  # noqa: B018


def test_bad_structure_is_reported(tmp_path: Path) -> None:
    raw = json.loads((REDUCED / "config.json").read_text())["vision_config"]
    raw["edgeagent_structure"]["arch_def"][0][0] = "er_r2_k3_s2_e4_c16"
    with pytest.raises(CheckpointError, match="er_r2_k3_s2_e4_c16"):
        VisionConfig.from_dict(raw, 16, "config.json")
    with pytest.raises(CheckpointError, match="only mobilenetv5_300m_enc"):
        VisionConfig.from_dict({"architecture": "resnet50"}, 16, "config.json")


def test_in_memory_weights_report_missing_names(reduced: VisionEncoder) -> None:
    with pytest.raises(
        CheckpointError, match=r"missing tensor model\.vision_tower\.timm_model\.conv_stem"
    ):
        VisionWeights.from_tensors({}.__getitem__, reduced.config)
