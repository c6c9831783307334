"""Gemma 3n's vision encoder (timm MobileNetV5 + MSFA) and its projection into the text space.

Usage (``image``: ``[H, W, 3]`` uint8 RGB, any size)::

    vision = load_vision(checkpoint)       # or edgeagent.engine.load(path).vision
    tokens = vision.encode(image)          # [256, text_hidden] float32
    tokens = vision.encode(image, size=256)  # 256, 512 or 768 px (default: the processor's)

Kernels: ``reference`` (numpy float32, weights widened at use) or
``quantized`` (one ONNX Runtime graph: ``MatMulNBits`` 8-bit weights with int8
activations for every convolution and projection, :mod:`.quantized`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgeagent.engine.vision.config import BlockSpec, VisionConfig, load_vision_config
from edgeagent.engine.vision.encoder import VisionEncoder
from edgeagent.engine.vision.preprocess import ImageConfig, preprocess, resize
from edgeagent.engine.vision.weights import VisionWeights
from edgeagent.errors import EngineError

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

_LOGGER = logging.getLogger(__name__)
KERNELS = ("reference", "quantized")

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


def load_vision(
    checkpoint: Checkpoint,
    kernels: str = "reference",
    *,
    bits: int = 8,
    block_size: int | None = None,
    threads: int | None = None,
) -> VisionEncoder:
    """The vision encoder of an opened multimodal checkpoint.

    ``kernels``: ``"reference"`` (numpy) or ``"quantized"`` (ONNX Runtime over a
    ``bits``-bit copy of the tower's matrices in blocks of ``block_size`` weights,
    written beside the checkpoint on first use; ``threads``: ONNX Runtime's
    process-wide pool, 0 or None for every core). 8 bits by default: 4-bit
    codes lose too much (mean per-token cosine to the reference 0.86–0.97 on the test
    towers, 0.88 on E2B-shaped random weights, against ≥ 0.997 at 8 bits) and run no faster.
    """
    if kernels not in KERNELS:
        raise EngineError(f"unknown vision kernels {kernels!r}: one of {', '.join(KERNELS)}")
    if kernels == "reference":
        return VisionEncoder.from_checkpoint(checkpoint)
    from edgeagent.engine.vision.quantized import (  # noqa: PLC0415 - needs onnxruntime
        DEFAULT_BLOCK_SIZE,
        check_vision_format,
        quantized_vision_encoder,
        vision_store_dir,
    )

    block = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    check_vision_format(bits, block)
    ref = VisionEncoder.from_checkpoint(checkpoint)
    source = {
        name: [st.st_size, st.st_mtime_ns]
        for name in sorted(checkpoint.files)
        for st in [(checkpoint.path / name).stat()]
    }
    encoder = quantized_vision_encoder(
        ref.config, ref.weights, ref.image_config, vision_store_dir(checkpoint.path, bits, block),
        bits, block, threads or 0, source,
    )  # fmt: skip
    _LOGGER.info("vision kernels: %s", encoder.kernels)
    return encoder
