"""Gemma 3n's audio encoder (USM conformer) and its projection into the text space.

Usage (``pcm``: 16 kHz mono float32; blocks of any size)::

    audio = load_audio(checkpoint)      # or edgeagent.engine.load(path).audio
    tokens = audio.encode(pcm)          # [n_tokens, text_hidden] float32
    stream = audio.stream()
    for block in blocks:
        tokens = stream.push(block)     # [k, text_hidden]: the tokens this block completed
    tokens = stream.flush()             # the last ones
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.audio.encoder import AudioEncoder, AudioStream
from edgeagent.engine.audio.kernels import (
    AudioKernels,
    Linear,
    audio_kernels_from,
    reference_audio_kernels,
)
from edgeagent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

__all__ = [
    "AudioConfig",
    "AudioEncoder",
    "AudioKernels",
    "AudioStream",
    "Linear",
    "audio_kernels_from",
    "load_audio",
    "reference_audio_kernels",
]


def load_audio(
    checkpoint: Checkpoint,
    kernels: AudioKernels | str = "reference",
    bits: int = 4,
    block_size: int = 256,
    threads: int = 0,
) -> AudioEncoder:
    """The audio encoder of an opened multimodal checkpoint.

    ``kernels``: ``"reference"`` (numpy), ``"quantized"`` (the engine's
    ``MatMulNBits`` over a ``bits``-bit copy of the audio projections in blocks
    of ``block_size`` weights, written beside the checkpoint on first use;
    see :data:`~edgeagent.engine.audio.quantized.DEFAULT_BLOCK_SIZE`), or a
    ready :class:`AudioKernels`.
    """
    encoder = _build(checkpoint, kernels, bits, block_size, threads)
    cfg = encoder.config
    _LOGGER.info(
        "audio encoder: %d blocks, hidden %d, %s kernels",
        cfg.num_layers, cfg.hidden_size, encoder.kernels.name,
    )  # fmt: skip
    return encoder


def _build(
    checkpoint: Checkpoint, kernels: AudioKernels | str, bits: int, block_size: int, threads: int
) -> AudioEncoder:
    if kernels == "reference":
        return AudioEncoder.from_checkpoint(checkpoint)
    if kernels == "quantized":
        from edgeagent.engine.audio.quantized import (  # noqa: PLC0415 - needs onnxruntime
            audio_store_dir,
            quantized_audio_kernels,
        )

        encoder = AudioEncoder.from_checkpoint(checkpoint)
        store = audio_store_dir(checkpoint.path, bits, block_size)
        source = {name: [st.st_size, st.st_mtime_ns] for name, st in _stats(checkpoint)}
        built = quantized_audio_kernels(
            encoder.weights, store, bits, block_size, threads, source=source
        )
        return AudioEncoder(encoder.config, encoder.weights, built, encoder.logmel.config)
    if isinstance(kernels, str):
        raise EngineError(f"unknown audio kernels {kernels!r}: reference or quantized")
    return AudioEncoder.from_checkpoint(checkpoint, kernels)


def _stats(checkpoint: Checkpoint) -> list[tuple[str, os.stat_result]]:
    """Size and mtime of each safetensors file: a changed checkpoint means a stale copy."""
    return [(name, (checkpoint.path / name).stat()) for name in sorted(checkpoint.files)]
