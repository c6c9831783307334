"""Gemma 3n's audio path: PCM → log-mel → sub-sampling → conformer → soft tokens.

:class:`AudioEncoder` holds the immutable parts (config, weight views,
kernels, position tables); :class:`AudioStream` holds one utterance's state.
``encode(pcm)`` is one ``push`` of the whole clip followed by ``flush`` on a
fresh stream: there is a single implementation, and a stream fed in blocks
of any size yields the same tokens as one fed the whole clip.

Timing, released sizes (16 kHz): mel frames every 160 samples, each reading
513; encoder frames every 4 mel frames (40 ms), soft tokens every 4 encoder
frames (160 ms, 2560 samples). Soft token ``k`` is encoder frame ``4k``,
which reads mel frames up to ``16k + 6``, i.e. samples up to
``2560·k + 1473``: it is complete 92 ms after the start of its 160 ms
window, and ``push`` returns it from the block that brings that sample.
Everything after the sub-sampling convs is causal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.dsp.features import LogMel, MelConfig, MelStream, load_mel_config
from edgeagent.engine.audio.config import AudioConfig, load_audio_config
from edgeagent.engine.audio.conformer import (
    BlockKernels,
    BlockState,
    ConformerBlock,
    conformer_block,
)
from edgeagent.engine.audio.kernels import AudioKernels, reference_audio_kernels, rms_norm
from edgeagent.engine.audio.subsample import SubsampleState
from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.engine.reference import as_f32
from edgeagent.errors import AudioError, CheckpointError

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

F32 = np.float32


class AudioEncoder:
    """The audio encoder and its projection into the text model's embedding space."""

    def __init__(
        self, cfg: AudioConfig, weights: AudioWeights, kernels: AudioKernels, mel: MelConfig
    ) -> None:
        if mel.feature_size != cfg.input_feat_size:
            raise CheckpointError(
                f"preprocessor feature_size {mel.feature_size} != audio_config.input_feat_size "
                f"{cfg.input_feat_size}"
            )
        self.config = cfg
        self.weights = weights
        self.kernels = kernels
        self.logmel = LogMel(mel)
        self.blocks = tuple(
            ConformerBlock(cfg, w, BlockKernels.of(kernels, i))
            for i, w in enumerate(weights.conformer)
        )

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, kernels: AudioKernels | None = None) -> AudioEncoder:
        """The audio path of a multimodal checkpoint (``reference`` kernels unless given)."""
        path = Path(ckpt.path)
        cfg = load_audio_config(path, ckpt.config.hidden_size)
        weights = AudioWeights.from_checkpoint(ckpt, cfg)
        mel = load_mel_config(path)
        return cls(cfg, weights, kernels or reference_audio_kernels(weights), mel)

    # -- timing ------------------------------------------------------------------------
    @property
    def samples_per_token(self) -> int:
        """Audio per soft token: 2560 samples (160 ms) released."""
        cfg = self.config
        return self.logmel.config.hop_length * cfg.time_stride * cfg.reduction_factor

    @property
    def lookahead_samples(self) -> int:
        """Samples after a token's start that it depends on: 1473 (92 ms) released."""
        mel = self.logmel.config
        return self.config.lookahead_frames * mel.hop_length + mel.frame_span

    def tokens_ready(self, n_samples: int) -> int:
        """Soft tokens a stream has returned once ``n_samples`` samples were pushed."""
        if n_samples < self.lookahead_samples:
            return 0
        return (n_samples - self.lookahead_samples) // self.samples_per_token + 1

    def tokens_total(self, n_samples: int) -> int:
        """Soft tokens of a whole clip of ``n_samples`` samples (after ``flush``)."""
        frames = self.logmel.config.frames_in(n_samples)
        for (_, _), (st, _) in zip(self.config.sscp_kernels, self.config.sscp_strides, strict=True):
            frames = -(-frames // st)  # each conv: ceil(T / stride) with end padding
        return -(-frames // self.config.reduction_factor)

    # -- running ---------------------------------------------------------------------------
    def stream(self, project: bool = True) -> AudioStream:
        """A fresh stream: one utterance, fed block by block.

        ``project=False`` returns the encoder's own outputs ``[k, H]`` (before
        ``embed_audio``), for inspection and parity tests.
        """
        return AudioStream(self, project)

    def encode(self, pcm: np.ndarray, project: bool = True) -> np.ndarray:
        """Soft tokens of a whole clip: 16 kHz mono float ``[N] -> [tokens, text_hidden]``.

        Uses the frames that fit in ``pcm``; for the processor's exact input,
        pad first with :func:`edgeagent.dsp.features.processor_padding`.
        """
        stream = self.stream(project)
        return np.concatenate([stream.push(pcm), stream.flush()])

    def embed(self, soft: np.ndarray) -> np.ndarray:
        """Encoder outputs into the text space: ``[k, H] -> [k, text_H]`` (``embed_audio``)."""
        cfg, w = self.config, self.weights.embedder
        normed = rms_norm(soft, w.soft_embedding_norm, cfg.rms_norm_eps)
        return rms_norm(self.kernels["embedding_projection"](normed), None, cfg.rms_norm_eps)

    def pad_embedding(self) -> np.ndarray:
        """``[text_H]``: the last audio-vocabulary embedding, which the processor's fixed
        188-token layout pads short clips with (``embed_audio(input_ids=vocab_size − 1)``)."""
        cfg, w = self.config, self.weights.embedder
        hard = as_f32(w.embedding[cfg.vocab_size - 1])[None]  # [1, H]
        normed = rms_norm(hard, w.hard_embedding_norm, cfg.rms_norm_eps)
        return rms_norm(self.kernels["embedding_projection"](normed), None, cfg.rms_norm_eps)[0]


class AudioStream:
    """One utterance's encoder state: ``push`` blocks, then ``flush`` once.

    State kept between pushes: unframed samples, the sub-sampling convs'
    unread frames and cumulative norm sums, per block the last
    ``context_left − 1`` keys/values and ``kernel − 1`` conv inputs. Each
    push runs all the encoder frames it completes through every block in one
    batched pass.
    """

    def __init__(self, encoder: AudioEncoder, project: bool = True) -> None:
        cfg = encoder.config
        self.encoder = encoder
        self.project = project
        self.mel = MelStream(encoder.logmel)
        self.subsample = SubsampleState(
            cfg, encoder.weights.subsample,
            encoder.kernels["subsample_conv_projection.input_proj_linear"],
        )  # fmt: skip
        self.states = [BlockState.empty(cfg) for _ in encoder.blocks]
        self.frames = 0  # encoder frames produced
        self.tokens = 0  # soft tokens returned
        self.closed = False

    @property
    def samples(self) -> int:
        """Samples pushed so far."""
        return self.mel.samples_in

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Feed 16 kHz mono float audio; return the soft tokens it completed ``[k, text_H]``."""
        if self.closed:
            raise AudioError("audio stream already flushed")
        mel = self.mel.push(pcm)  # [m, n_mels]
        return self._encode(self.subsample(mel))

    def flush(self) -> np.ndarray:
        """End of the utterance: pad as the reference does and return the last tokens."""
        if self.closed:
            raise AudioError("audio stream already flushed")
        self.closed = True
        empty = np.zeros((0, self.encoder.config.input_feat_size), F32)
        return self._encode(self.subsample(empty, finish=True))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """New encoder frames ``[n, H]`` through every block; keep every 4th; project."""
        enc = self.encoder
        if len(x):
            for block, state in zip(enc.blocks, self.states, strict=True):
                x = conformer_block(block, x, state)  # [n, H]
        index = self.frames + np.arange(len(x))
        self.frames += len(x)
        kept = x[index % enc.config.reduction_factor == 0]  # [k, H]
        self.tokens += len(kept)
        if not self.project:
            return kept
        if len(kept) == 0:
            return np.zeros((0, enc.config.text_hidden_size), F32)
        return enc.embed(kept)  # [k, text_H]
