"""Gemma 3n's vision encoder (timm MobileNetV5 + MSFA) and its projection into the text space.

Usage (``image``: ``[H, W, 3]`` uint8 RGB, any size)::

    vision = load_vision(checkpoint)       # or edgeagent.engine.load(path).vision
    tokens = vision.encode(image)          # [256, text_hidden] float32
    tokens = vision.encode(image, size=256)  # 256, 512 or 768 px (default: the processor's)

Only ``reference`` (numpy float32) kernels exist so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeagent.engine.vision.config import BlockSpec, VisionConfig, load_vision_config
from edgeagent.engine.vision.encoder import VisionEncoder
from edgeagent.engine.vision.preprocess import ImageConfig, preprocess, resize
from edgeagent.engine.vision.weights import VisionWeights
from edgeagent.errors import EngineError

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

__all__ = [
    "BlockSpec",
    "ImageConfig",
    "VisionConfig",
    "VisionEncoder",
    "VisionWeights",
    "load_vision",
    "load_vision_config",
    "preprocess",
    "resize",
]


def load_vision(checkpoint: Checkpoint, kernels: str = "reference") -> VisionEncoder:
    """The vision encoder of an opened multimodal checkpoint (``reference`` kernels)."""
    if kernels != "reference":
        raise EngineError(f"unknown vision kernels {kernels!r}: only reference so far")
    return VisionEncoder.from_checkpoint(checkpoint)
