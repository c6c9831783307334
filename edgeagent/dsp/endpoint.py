"""Endpointing: speech start and end from frame probabilities, with pre-roll and hang-over.

:class:`VoiceActivity` takes timestamped 16 kHz audio as it arrives and
returns, in order:

- :class:`SpeechStart` once ``start_ms`` of speech frames fall within a
  window of 1.5 × ``start_ms``; its ``start`` is the first speech frame of
  that window (not the moment of the decision, ``detected``);
- :class:`SpeechAudio` from ``pre_roll_ms`` before the start until the end
  is decided — the audio an encoder stream should get;
- :class:`SpeechEnd` once ``hangover_ms`` pass without speech, after
  ``max_utterance_s``, at a gap in the timeline, or at the end of the
  stream. Unless cut at the maximum length, ``end`` is the end of the last speech frame, moved
  back (by at most ``trim_max_ms``) to the last frame whose speech-band
  energy was ``trim_db`` above the noise floor: a neural detector's
  probability decays 100–200 ms after the voice stops.

Times are timeline sample indices (16 kHz) as in
:class:`edgeagent.capture.AudioBlock`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edgeagent.dsp.vad import EnergyDetector, VoiceDetector, make_detector
from edgeagent.settings import AudioSettings

F32 = np.float32
RATE = 16_000
EndReason = Literal["silence", "max_length", "gap", "stream_end"]


@dataclass(frozen=True)
class EndpointConfig:
    """Thresholds of the endpointer (see ``audio.vad_*`` in the settings)."""

    threshold: float = 0.5  # speech probability of a speech frame
    start_ms: int = 100
    hangover_ms: int = 500
    pre_roll_ms: int = 300
    max_utterance_s: float = 30.0
    trim_db: float = 2.0  # end: back to the last frame this far above the noise floor …
    trim_max_ms: int = 150  # … but by at most this much (0 dB or 0 ms: no trimming)


@dataclass(frozen=True)
class SpeechStart:
    """An utterance began at timeline sample ``start`` (decided at ``detected``)."""

    utterance: int
    start: int
    detected: int

    @property
    def start_s(self) -> float:
        return self.start / RATE

    event_type = "speech_start"

    def data(self) -> dict[str, Any]:
        """The ``<base>/event`` fields besides ``event_type``."""
        return {"utterance": self.utterance, "start_s": round(self.start_s, 3)}


@dataclass(frozen=True)
class SpeechAudio:
    """Audio of an utterance (pre-roll included), from timeline sample ``start``."""

    utterance: int
    start: int
    pcm: np.ndarray = field(repr=False)  # [n] float32


@dataclass(frozen=True)
class SpeechEnd:
    """The utterance that began at ``start`` ended at ``end`` (decided at ``detected``)."""

    utterance: int
    start: int
    end: int
    detected: int
    reason: EndReason

    @property
    def start_s(self) -> float:
        return self.start / RATE

    @property
    def end_s(self) -> float:
        return self.end / RATE

    event_type = "speech_end"

    def data(self) -> dict[str, Any]:
        """The ``<base>/event`` fields besides ``event_type``."""
        return {
            "utterance": self.utterance,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "reason": self.reason,
        }


VadOutput = SpeechStart | SpeechAudio | SpeechEnd


class VoiceActivity:
    """A detector and the endpointing state machine over one audio timeline."""

    def __init__(self, detector: VoiceDetector, config: EndpointConfig | None = None) -> None:
        self.detector = detector
        self.config = cfg = config or EndpointConfig()
        self.frame = detector.frame_samples
        frame_ms = 1000 * self.frame / RATE
        self.start_frames = max(1, round(cfg.start_ms / frame_ms))
        self.window: deque[tuple[int, bool]] = deque(maxlen=max(1, round(1.5 * self.start_frames)))
        self.hangover = round(cfg.hangover_ms * RATE / 1000)
        self.pre_roll = round(cfg.pre_roll_ms * RATE / 1000)
        self.max_samples = round(cfg.max_utterance_s * RATE)
        self.trim_max = round(cfg.trim_max_ms * RATE / 1000)
        self.energy = EnergyDetector(frame_ms=frame_ms)  # only to place the end
        self._last_loud_end = 0
        self.utterances = 0
        self._pending = np.zeros(0, F32)  # samples not yet in a frame
        self._pending_start = 0  # timeline index of _pending[0]
        self._ring = np.zeros(0, F32)  # recent audio while idle, for the pre-roll
        self._ring_start = 0
        self._speech_start: int | None = None  # in an utterance: its start
        self._last_speech_end = 0
        self._out: list[VadOutput] = []

    @classmethod
    def from_settings(cls, settings: AudioSettings) -> VoiceActivity:
        """The detector and thresholds ``audio.vad*`` ask for."""
        config = EndpointConfig(
            threshold=settings.vad_threshold,
            start_ms=settings.vad_start_ms,
            hangover_ms=settings.vad_hangover_ms,
            pre_roll_ms=settings.vad_pre_roll_ms,
            max_utterance_s=settings.vad_max_utterance_s,
        )
        return cls(make_detector(settings.vad), config)

    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None

    def push(self, pcm: np.ndarray, start: int) -> list[VadOutput]:
        """Audio from timeline sample ``start``; returns what happened, in order."""
        self._out = []
        if start != self._pending_start + len(self._pending):
            self._discontinuity(start)
        self._pending = np.concatenate([self._pending, np.asarray(pcm, F32)])
        n = len(self._pending) // self.frame * self.frame
        for offset in range(0, n, self.frame):
            self._frame(self._pending[offset : offset + self.frame], self._pending_start + offset)
        self._pending, self._pending_start = self._pending[n:], self._pending_start + n
        return self._merged(self._out)

    def flush(self) -> list[VadOutput]:
        """End of the stream: close an open utterance."""
        self._out = []
        if self._speech_start is not None:
            self._end(self._pending_start, "stream_end")
        return self._out

    # -- per frame -------------------------------------------------------------------------
    def _frame(self, frame: np.ndarray, at: int) -> None:
        speech = self.detector(frame) >= self.config.threshold
        end = at + len(frame)
        if self.energy.snr_db(frame) >= self.config.trim_db:
            self._last_loud_end = end
        if self._speech_start is None:
            self._keep(frame, at)
            self.window.append((at, speech))
            if speech and sum(s for _, s in self.window) >= self.start_frames:
                first = next(a for a, s in self.window if s)
                self._begin(first, end)
            return
        self._out.append(SpeechAudio(self.utterances, at, frame))
        if speech:
            self._last_speech_end = end
        if end - self._last_speech_end >= self.hangover:
            self._end(end, "silence")
        elif end - self._speech_start >= self.max_samples:
            self._end(end, "max_length")

    def _begin(self, first: int, now: int) -> None:
        self.utterances += 1
        self._speech_start, self._last_speech_end = first, now
        self._out.append(SpeechStart(self.utterances, first, now))
        audio_from = max(self._ring_start, first - self.pre_roll)
        self._out.append(
            SpeechAudio(self.utterances, audio_from, self._ring[audio_from - self._ring_start :])
        )
        self._ring, self._ring_start = np.zeros(0, F32), now
        self.window.clear()

    def _end(self, now: int, reason: EndReason) -> None:
        assert self._speech_start is not None
        end = now
        if reason != "max_length":  # speech stopped: detectors lag its end, trust the energy there
            end = self._last_speech_end
            if self.trim_max > 0:
                end = max(self._last_loud_end, end - self.trim_max, self._speech_start + 1)
                end = min(end, self._last_speech_end)
        self._out.append(SpeechEnd(self.utterances, self._speech_start, end, now, reason))
        self._speech_start = None
        self._ring, self._ring_start = np.zeros(0, F32), now

    def _keep(self, frame: np.ndarray, at: int) -> None:
        """Remember recent idle audio: pre-roll plus the start window."""
        if len(self._ring) == 0:
            self._ring_start = at
        self._ring = np.concatenate([self._ring, frame])
        keep = self.pre_roll + self.frame * (self.window.maxlen or 1)
        if len(self._ring) > keep:
            drop = len(self._ring) - keep
            self._ring, self._ring_start = self._ring[drop:], self._ring_start + drop

    def _discontinuity(self, start: int) -> None:
        if self._speech_start is not None:
            self._end(self._pending_start + len(self._pending), "gap")
        self.detector.reset()
        self.energy.reset()
        self.window.clear()
        self._pending, self._pending_start = np.zeros(0, F32), start
        self._ring, self._ring_start = np.zeros(0, F32), start

    @staticmethod
    def _merged(out: list[VadOutput]) -> list[VadOutput]:
        """Join consecutive audio of the same utterance into one :class:`SpeechAudio`."""
        merged: list[VadOutput] = []
        for item in out:
            prev = merged[-1] if merged else None
            if (
                isinstance(item, SpeechAudio)
                and isinstance(prev, SpeechAudio)
                and prev.utterance == item.utterance
                and prev.start + len(prev.pcm) == item.start
            ):
                merged[-1] = SpeechAudio(
                    item.utterance, prev.start, np.concatenate([prev.pcm, item.pcm])
                )
            else:
                merged.append(item)
        return merged
