"""Log-mel features of Gemma 3n's audio encoder, offline and block by block.

The same numbers as transformers' ``Gemma3nAudioFeatureExtractor`` (USM
front end): frames of ``frame_length + 1`` samples every ``hop_length``
(no centring, no padding), HTK pre-emphasis inside each frame (its first
sample becomes ``x[0]·(1−0.97)``; the extra last sample is never used), a
periodic Hann window, a 1024-point real FFT of the 512 windowed samples,
magnitudes, 128 triangular mel filters (125–7600 Hz, HTK mel scale, no area
normalisation), ``log(max(mel, 1e-5))``.

A frame ``t`` covers samples ``[160·t, 160·t + 513)``; a clip of ``N``
samples has ``(N − 513) // 160 + 1`` frames. The arithmetic follows the
reference's dtypes: float32 up to the magnitudes, float64 for the mel matmul
and the log, float32 out.

The processor pads a clip with zeros to a multiple of 128 samples (and cuts
it at 30 s) before this; :func:`processor_padding` reproduces that padding
for parity. Streaming callers never pad: :class:`MelStream` yields exactly
the frames that fit in the audio pushed so far.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.errors import AudioError
from edgeagent.jsonfile import read_json_object

_LOGGER = logging.getLogger(__name__)

F32 = np.float32
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class MelConfig:
    """Parameters of the log-mel front end (transformers' names; times in ms, rates in Hz)."""

    feature_size: int = 128
    sampling_rate: int = 16_000
    frame_length_ms: float = 32.0
    hop_length_ms: float = 10.0
    min_frequency: float = 125.0
    max_frequency: float = 7600.0
    preemphasis: float = 0.97
    preemphasis_htk_flavor: bool = True
    fft_overdrive: bool = True
    input_scale_factor: float = 1.0
    mel_floor: float = 1e-5
    per_bin_mean: tuple[float, ...] | None = None
    per_bin_stddev: tuple[float, ...] | None = None

    @property
    def frame_length(self) -> int:
        """Samples per analysis window (512 at 16 kHz)."""
        return round(self.sampling_rate * self.frame_length_ms / 1000.0)

    @property
    def hop_length(self) -> int:
        """Samples between frame starts (160 at 16 kHz)."""
        return round(self.sampling_rate * self.hop_length_ms / 1000.0)

    @property
    def fft_length(self) -> int:
        """FFT size: the next power of two of the frame, doubled with ``fft_overdrive``."""
        n: int = 2 ** math.ceil(math.log2(self.frame_length))
        return n * 2 if self.fft_overdrive else n

    @property
    def frame_span(self) -> int:
        """Samples one frame reads: ``frame_length + 1`` (the reference's unfold size)."""
        return self.frame_length + 1

    def frames_in(self, n_samples: int) -> int:
        """Frames a clip of ``n_samples`` samples yields."""
        return max(0, (n_samples - self.frame_span) // self.hop_length + 1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> MelConfig:
        """Read a ``preprocessor_config.json`` (or its ``feature_extractor`` part).

        Like transformers, the stored sample counts (``frame_length``,
        ``hop_length``, ``fft_length``) are ignored: sizes come from the
        millisecond fields, whose defaults are 32 and 10.
        """
        d = d.get("feature_extractor", d) if isinstance(d.get("feature_extractor"), Mapping) else d
        kwargs: dict[str, Any] = {}
        for name, default in cls.__dataclass_fields__.items():
            if name in d and d[name] is not None:
                value = d[name]
                if name.startswith("per_bin_"):
                    value = tuple(float(v) for v in value)
                elif isinstance(default.default, bool):
                    value = bool(value)
                elif isinstance(default.default, (int, float)) and not isinstance(
                    value, (int, float)
                ):
                    raise AudioError(f"{source}: field '{name}' must be a number, got {value!r}")
                kwargs[name] = value
        if d.get("dither", 0.0):
            _LOGGER.warning(
                "%s: dither %s ignored (features are deterministic)", source, d["dither"]
            )
        cfg = cls(**kwargs)
        for name in ("per_bin_mean", "per_bin_stddev"):
            values = getattr(cfg, name)
            if values is not None and len(values) != cfg.feature_size:
                raise AudioError(f"{source}: field '{name}' must have {cfg.feature_size} entries")
        if cfg.sampling_rate != 16_000:
            raise AudioError(f"{source}: sampling_rate {cfg.sampling_rate} is not 16000")
        return cfg


def load_mel_config(directory: str | Path) -> MelConfig:
    """The checkpoint's ``preprocessor_config.json``, or Gemma 3n's defaults without one."""
    path = Path(directory) / PREPROCESSOR_FILE
    if not path.is_file():
        return MelConfig()
    raw = read_json_object(path, AudioError, "preprocessor config")
    return MelConfig.from_dict(raw, str(path))


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Triangular HTK-mel filters ``[fft/2 + 1, feature_size]`` float64 (``create_fb_matrix``)."""
    n_freqs = cfg.fft_length // 2 + 1
    all_freqs = np.arange(n_freqs, dtype=np.float32) * (cfg.sampling_rate / cfg.fft_length)
    m_min = 2595.0 * math.log10(1.0 + cfg.min_frequency / 700.0)
    m_max = 2595.0 * math.log10(1.0 + cfg.max_frequency / 700.0)
    m_pts = np.linspace(m_min, m_max, cfg.feature_size + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]  # [n_mels + 1]
    slopes = f_pts[None, :] - all_freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(np.zeros(1, dtype=np.float32), np.minimum(down, up))


@dataclass(frozen=True)
class LogMel:
    """The log-mel transform for one :class:`MelConfig`; window and filters built once."""

    config: MelConfig = field(default_factory=MelConfig)
    window: np.ndarray = field(init=False, repr=False)  # [frame_length] f32, periodic Hann
    filters: np.ndarray = field(init=False, repr=False)  # [fft/2+1, n_mels] f64

    def __post_init__(self) -> None:
        n = self.config.frame_length
        hann = 0.5 * (1 - np.cos(2 * np.pi * np.arange(n, dtype=np.float32) / n))
        object.__setattr__(self, "window", hann.astype(np.float32))
        object.__setattr__(self, "filters", mel_filterbank(self.config))

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        """Every whole frame of ``pcm`` (16 kHz mono float in [-1, 1]): ``[N] -> [T, n_mels]``."""
        pcm = np.ascontiguousarray(pcm, dtype=F32).reshape(-1)
        cfg = self.config
        n_frames = cfg.frames_in(len(pcm))
        if n_frames == 0:
            return np.zeros((0, cfg.feature_size), dtype=F32)
        frames = np.lib.stride_tricks.as_strided(
            pcm,
            shape=(n_frames, cfg.frame_span),
            strides=(pcm.strides[0] * cfg.hop_length, pcm.strides[0]),
            writeable=False,
        )  # [T, 513]
        return self.frames(frames)

    def frames(self, frames: np.ndarray) -> np.ndarray:
        """Log-mel of framed audio ``[T, frame_length + 1] -> [T, n_mels]`` float32."""
        cfg = self.config
        if cfg.input_scale_factor != 1.0:
            frames = frames * F32(cfg.input_scale_factor)
        if cfg.preemphasis > 0.0:
            if cfg.preemphasis_htk_flavor:
                first = frames[:, :1] * (1.0 - cfg.preemphasis)
                rest = frames[:, 1:-1] - cfg.preemphasis * frames[:, :-2]
                emphasised = np.concatenate([first, rest], axis=-1)  # [T, 512]
            else:
                emphasised = frames[:, 1:] - cfg.preemphasis * frames[:, :-1]
        else:
            emphasised = frames[:, :-1]
        spectrum = np.fft.rfft(emphasised * self.window, n=cfg.fft_length, axis=-1)  # [T, 513] c64
        # The reference multiplies float32 magnitudes by float64 filters; casting first gives the
        # same numbers 20x faster than numpy's mixed-dtype matmul.
        mel = np.abs(spectrum).astype(np.float64) @ self.filters  # [T, 513] @ [513, n_mels]
        log_mel = np.log(np.maximum(mel, cfg.mel_floor))
        if cfg.per_bin_mean is not None:
            log_mel = log_mel - np.asarray(cfg.per_bin_mean)
        if cfg.per_bin_stddev is not None:
            log_mel = log_mel / np.asarray(cfg.per_bin_stddev)
        result: np.ndarray = log_mel.astype(F32)
        return result


class MelStream:
    """Log-mel frames as audio arrives: ``push(block)`` returns the frames it completed.

    Keeps the samples of frames not yet complete (under 513 + 160). The
    frames equal those of :class:`LogMel` over all audio pushed so far.
    """

    def __init__(self, logmel: LogMel) -> None:
        self.logmel = logmel
        self._buffer = np.zeros(0, dtype=F32)  # samples from the next frame's start
        self.frames_out = 0  # frames yielded so far
        self.samples_in = 0  # samples pushed so far

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Append ``pcm`` (float, 16 kHz mono); return the new frames ``[k, n_mels]`` float32."""
        pcm = np.asarray(pcm, dtype=F32).reshape(-1)
        self.samples_in += len(pcm)
        buffer = np.concatenate([self._buffer, pcm]) if len(self._buffer) else pcm
        cfg = self.logmel.config
        n = cfg.frames_in(len(buffer))
        out = self.logmel(buffer[: (n - 1) * cfg.hop_length + cfg.frame_span] if n else buffer[:0])
        self._buffer = np.array(buffer[n * cfg.hop_length :], dtype=F32)
        self.frames_out += n
        return out


def processor_padding(pcm: np.ndarray, multiple: int = 128) -> np.ndarray:
    """``pcm`` with zeros appended up to a multiple of ``multiple`` samples, as the processor
    does (its ``pad_to_multiple_of=128``)."""
    pcm = np.asarray(pcm, dtype=F32).reshape(-1)
    extra = -len(pcm) % multiple
    return np.concatenate([pcm, np.zeros(extra, dtype=F32)]) if extra else pcm
