"""Gemma 3n's audio encoder (USM conformer) and its projection into the text space.

from edgeagent.engine.audio import load_audio
audio = load_audio(checkpoint)               # or edgeagent.engine.load(path).audio
tokens = audio.encode(pcm)                   # [n_tokens, text_hidden] float32
stream = audio.stream()
for block in blocks:                         # 16 kHz mono float32, any size
    tokens = stream.push(block)              # [k, text_hidden]: tokens completed so far
tokens = stream.flush()                      # the last ones
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.audio.encoder import AudioEncoder, AudioStream
from edgeagent.engine.audio.kernels import (
    AudioKernels,
    Linear,
    audio_kernels_from,
    reference_audio_kernels,
)

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


def load_audio(checkpoint: Checkpoint, kernels: AudioKernels | None = None) -> AudioEncoder:
    """The audio encoder of an opened multimodal checkpoint (``reference`` kernels by default)."""
    return AudioEncoder.from_checkpoint(checkpoint, kernels)
