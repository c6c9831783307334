"""Gemma 3n audio-encoder configuration: ``audio_config`` of a multimodal ``config.json``.

Field names and defaults follow transformers' ``Gemma3nAudioConfig`` (5.24);
a missing key takes the released value. Every problem is a
:class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeagent.errors import CheckpointError
from edgeagent.jsonfile import read_json_object

_DEFAULTS: dict[str, Any] = {
    "vocab_size": 128,
    "vocab_offset": 262_272,
    "input_feat_size": 128,
    "hidden_size": 1536,
    "rms_norm_eps": 1e-6,
    "gradient_clipping": 1e10,
    "conf_attention_chunk_size": 12,
    "conf_attention_context_left": 13,
    "conf_attention_context_right": 0,
    "conf_attention_logit_cap": 50.0,
    "conf_num_attention_heads": 8,
    "conf_num_hidden_layers": 12,
    "conf_conv_kernel_size": 5,
    "conf_reduction_factor": 4,
    "conf_residual_weight": 0.5,
    "sscp_conv_channel_size": (128, 32),
    "sscp_conv_group_norm_eps": 1e-3,
    "sscp_conv_kernel_size": ((3, 3), (3, 3)),
    "sscp_conv_stride_size": ((2, 2), (2, 2)),
}
SSCP_FREQ_PADDING = (1, 1)  # transformers pads frequency by one bin on each side


@dataclass(frozen=True)
class AudioConfig:
    """The USM conformer encoder and its embedder (sizes in elements; ``text_hidden_size``
    is the decoder's width, the embedder's output)."""

    hidden_size: int
    num_heads: int
    num_layers: int
    input_feat_size: int
    rms_norm_eps: float
    gradient_clipping: float
    chunk_size: int
    context_left: int
    context_right: int
    logit_cap: float
    conv_kernel_size: int
    reduction_factor: int
    residual_weight: float
    sscp_channels: tuple[int, int]
    sscp_group_norm_eps: float
    sscp_kernels: tuple[tuple[int, int], tuple[int, int]]  # (time, freq) per conv
    sscp_strides: tuple[tuple[int, int], tuple[int, int]]  # (time, freq) per conv
    vocab_size: int
    vocab_offset: int
    text_hidden_size: int

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def max_past(self) -> int:
        """Frames before a query that it attends to (``context_left − 1``; 12 released)."""
        return max(0, self.context_left - 1)

    @property
    def sscp_freq_sizes(self) -> tuple[int, int, int]:
        """Frequency bins into conv 0, out of conv 0, out of conv 1 (128, 64, 32 released)."""
        sizes = [self.input_feat_size]
        for (_, kf), (_, sf) in zip(self.sscp_kernels, self.sscp_strides, strict=True):
            sizes.append((sizes[-1] + sum(SSCP_FREQ_PADDING) - kf) // sf + 1)
        return sizes[0], sizes[1], sizes[2]

    @property
    def time_stride(self) -> int:
        """Mel frames per encoder frame (4 released: 40 ms)."""
        return math.prod(s for s, _ in self.sscp_strides)

    @property
    def lookahead_frames(self) -> int:
        """Mel frames after an encoder frame's first one that it reads (6 released)."""
        (k0, _), (k1, _) = self.sscp_kernels
        (s0, _), _ = self.sscp_strides
        return (k0 - 1) + (k1 - 1) * s0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], text_hidden_size: int, source: str) -> AudioConfig:
        """Parse and validate an ``audio_config`` dict."""
        get = _Getter(d, source)
        cfg = cls(
            hidden_size=get.int_("hidden_size"),
            num_heads=get.int_("conf_num_attention_heads"),
            num_layers=get.int_("conf_num_hidden_layers"),
            input_feat_size=get.int_("input_feat_size"),
            rms_norm_eps=get.float_("rms_norm_eps"),
            gradient_clipping=get.float_("gradient_clipping"),
            chunk_size=get.int_("conf_attention_chunk_size"),
            context_left=get.int_("conf_attention_context_left"),
            context_right=get.int_("conf_attention_context_right", minimum=0),
            logit_cap=get.float_("conf_attention_logit_cap"),
            conv_kernel_size=get.int_("conf_conv_kernel_size"),
            reduction_factor=get.int_("conf_reduction_factor"),
            residual_weight=get.float_("conf_residual_weight"),
            sscp_channels=get.pair("sscp_conv_channel_size"),
            sscp_group_norm_eps=get.float_("sscp_conv_group_norm_eps"),
            sscp_kernels=get.pairs("sscp_conv_kernel_size"),
            sscp_strides=get.pairs("sscp_conv_stride_size"),
            vocab_size=get.int_("vocab_size"),
            vocab_offset=get.int_("vocab_offset", minimum=0),
            text_hidden_size=text_hidden_size,
        )
        if cfg.hidden_size % cfg.num_heads:
            raise get.fail("conf_num_attention_heads", "must divide hidden_size")
        if cfg.context_right != 0:
            raise get.fail(
                "conf_attention_context_right",
                f"is {cfg.context_right}; only 0 (causal attention, as released) is supported",
            )
        if min(cfg.sscp_freq_sizes) < 1:
            raise get.fail("input_feat_size", "is too small for the sub-sampling convolutions")
        return cfg


class _Getter:
    def __init__(self, d: Mapping[str, Any], source: str) -> None:
        self.d, self.source = d, source

    def fail(self, name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: field 'audio_config.{name}' {problem}")

    def value(self, name: str) -> Any:
        v = self.d.get(name)
        return _DEFAULTS[name] if v is None else v

    def int_(self, name: str, minimum: int = 1) -> int:
        v = self.value(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(name, f"must be an integer >= {minimum}, got {v!r}")
        return v

    def float_(self, name: str) -> float:
        v = self.value(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise self.fail(name, f"must be a positive number, got {v!r}")
        return float(v)

    def pair(self, name: str, v: Any = None) -> tuple[int, int]:
        v = self.value(name) if v is None else v
        if (
            not isinstance(v, (list, tuple))
            or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
        ):
            raise self.fail(name, f"must be two positive integers, got {v!r}")
        return int(v[0]), int(v[1])

    def pairs(self, name: str) -> tuple[tuple[int, int], tuple[int, int]]:
        v = self.value(name)
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise self.fail(name, f"must be two [time, freq] pairs, got {v!r}")
        return self.pair(name, v[0]), self.pair(name, v[1])


def load_audio_config(directory: str | Path, text_hidden_size: int) -> AudioConfig:
    """The ``audio_config`` of ``DIR/config.json``; a text-only checkpoint is an error."""
    path = Path(directory) / "config.json"
    audio = read_json_object(path, CheckpointError, "config").get("audio_config")
    if not isinstance(audio, dict):
        raise CheckpointError(
            f"{path}: no 'audio_config' object: this checkpoint has no audio encoder "
            "(the multimodal layout has one)"
        )
    return AudioConfig.from_dict(audio, text_hidden_size, str(path))
