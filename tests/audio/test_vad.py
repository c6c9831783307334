"""Voice activity and endpointing on the committed clips and on noise (must-show 3)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgeagent.dsp.endpoint import (
    EndpointConfig,
    SpeechAudio,
    SpeechEnd,
    SpeechStart,
    VadOutput,
    VoiceActivity,
)
from edgeagent.dsp.vad import EnergyDetector, GatedDetector, SileroDetector, make_detector
from edgeagent.errors import AudioError
from edgeagent.settings import AudioSettings
from tests.audio.conftest import clip_truth, read_clip
from tests.audio.noise import NOISES, noise

RATE = 16_000
BOUNDARY_TOLERANCE_S = 0.150
CLIPS = ("two_clean", "two_pink_10db", "one_white_5db")


def run(vad: VoiceActivity, pcm: np.ndarray, block: int, offset: int = 0) -> list[VadOutput]:
    out: list[VadOutput] = []
    for i in range(0, len(pcm), block):
        out += vad.push(pcm[i : i + block], offset + i)
    return out + vad.flush()


def utterances(out: list[VadOutput]) -> list[SpeechEnd]:
    return [o for o in out if isinstance(o, SpeechEnd)]


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("block_ms", [10, 37, 160])
def test_every_utterance_found_within_150_ms(clip: str, block_ms: int) -> None:
    vad = VoiceActivity.from_settings(AudioSettings())  # the defaults: gated Silero
    out = run(vad, read_clip(clip), block_ms * 16)
    found = utterances(out)
    truth = clip_truth(clip)["utterances"]
    assert len(found) == len(truth), [(u.start_s, u.end_s) for u in found]
    for got, want in zip(found, truth, strict=True):
        assert abs(got.start_s - want["start_s"]) <= BOUNDARY_TOLERANCE_S, (got, want)
        assert abs(got.end_s - want["end_s"]) <= BOUNDARY_TOLERANCE_S, (got, want)
        assert got.reason == "silence"


@pytest.mark.parametrize("kind", sorted(NOISES))
def test_no_speech_in_a_minute_of_noise(kind: str) -> None:
    vad = VoiceActivity.from_settings(AudioSettings())
    out = run(vad, noise(kind, 60.0, -30.0, seed=3), 320)
    assert not [o for o in out if isinstance(o, SpeechStart)]


def test_gate_keeps_silero_idle_in_steady_noise() -> None:
    gated = GatedDetector(SileroDetector())
    vad = VoiceActivity(gated)
    run(vad, noise("pink", 20.0, -45.0, seed=4), 320)
    assert gated.frames == 20 * RATE // 512
    assert gated.inner_frames < 0.05 * gated.frames  # the network ran on under 5 % of frames
    run(
        VoiceActivity(gated := GatedDetector(SileroDetector())), np.zeros(RATE * 5, np.float32), 320
    )
    assert gated.inner_frames == 0  # digital silence: never


def test_pre_roll_audio_is_handed_over_with_the_start() -> None:
    pcm = read_clip("two_clean")
    vad = VoiceActivity(make_detector("silero"), EndpointConfig(pre_roll_ms=300))
    out = run(vad, pcm, 320)
    first_start = next(o for o in out if isinstance(o, SpeechStart))
    audio = [o for o in out if isinstance(o, SpeechAudio) and o.utterance == 1]
    end = next(o for o in out if isinstance(o, SpeechEnd))
    assert audio[0].start == first_start.start - 300 * 16  # 300 ms before the first speech frame
    joined = np.concatenate([a.pcm for a in audio])
    assert [a.start for a in audio[1:]] == list(
        np.cumsum([len(a.pcm) for a in audio])[:-1] + audio[0].start
    )  # contiguous
    np.testing.assert_array_equal(joined, pcm[audio[0].start : audio[0].start + len(joined)])
    assert audio[0].start + len(joined) == end.detected  # audio flows until the end is decided
    assert end.detected - end.end >= vad.hangover - vad.frame  # the hang-over passed first
    assert first_start.detected > first_start.start  # decided after the first speech frame


def test_energy_detector_on_clean_speech() -> None:
    vad = VoiceActivity(EnergyDetector(), EndpointConfig())
    found = utterances(run(vad, read_clip("two_clean"), 160))
    truth = clip_truth("two_clean")["utterances"]
    assert len(found) == 2
    for got, want in zip(found, truth, strict=True):
        assert abs(got.start_s - want["start_s"]) <= BOUNDARY_TOLERANCE_S
        assert abs(got.end_s - want["end_s"]) <= BOUNDARY_TOLERANCE_S


class Scripted:
    """A detector that plays back probabilities, one per 10 ms frame."""

    frame_samples = 160

    def __init__(self, probabilities: list[float]) -> None:
        self.p = list(probabilities)
        self.resets = 0

    def __call__(self, frame: np.ndarray) -> float:
        return self.p.pop(0) if self.p else 0.0

    def reset(self) -> None:
        self.resets += 1


def frames(pattern: str) -> list[float]:
    """'_' silence, 'S' speech: one character per 10 ms."""
    return [1.0 if c == "S" else 0.0 for c in pattern]


def quiet_tone(n_frames: int) -> np.ndarray:
    return np.full(n_frames * 160, 0.01, np.float32)  # level the endpointer's trim finds "loud"


def test_start_needs_enough_speech_in_the_window() -> None:
    cfg = EndpointConfig(start_ms=40, hangover_ms=100, pre_roll_ms=0, trim_max_ms=0)
    # Isolated speech frames never start an utterance; 4 within 6 frames do.
    pattern = "__S__S__S___" + "S_SS_S" + "SSSSS" + "_" * 20
    vad = VoiceActivity(Scripted(frames(pattern)), cfg)
    out = run(vad, quiet_tone(len(pattern)), 160)
    starts = [o for o in out if isinstance(o, SpeechStart)]
    ends = utterances(out)
    assert [(s.start, s.detected) for s in starts] == [(12 * 160, 18 * 160)]
    assert [(e.start, e.end, e.reason) for e in ends] == [(12 * 160, 23 * 160, "silence")]
    assert ends[0].detected == (23 + 10) * 160  # after 100 ms of hang-over


def test_max_length_gap_and_stream_end() -> None:
    cfg = EndpointConfig(start_ms=20, hangover_ms=100, pre_roll_ms=0, max_utterance_s=0.5,
                         trim_max_ms=0)  # fmt: skip
    vad = VoiceActivity(Scripted(frames("S" * 80)), cfg)
    out = run(vad, quiet_tone(80), 160)
    reasons = [e.reason for e in utterances(out)]
    assert reasons == ["max_length", "stream_end"]  # 0.5 s, then the rest
    assert utterances(out)[0].end - utterances(out)[0].start == 8000
    detector = Scripted(frames("S" * 10 + "S" * 10))
    vad = VoiceActivity(detector, cfg)
    first = vad.push(quiet_tone(10), 0)
    second = vad.push(quiet_tone(10), 5000)  # the capture lost 3400 samples in between
    assert any(isinstance(o, SpeechStart) for o in first)
    gap_end = [o for o in second if isinstance(o, SpeechEnd)]
    assert gap_end and gap_end[0].reason == "gap" and detector.resets == 1


def test_events_carry_json_fields() -> None:
    start = SpeechStart(utterance=3, start=16000, detected=17600)
    end = SpeechEnd(utterance=3, start=16000, end=40000, detected=48000, reason="silence")
    assert (start.event_type, start.data()) == ("speech_start", {"utterance": 3, "start_s": 1.0})
    assert end.event_type == "speech_end"
    assert end.data() == {"utterance": 3, "start_s": 1.0, "end_s": 2.5, "reason": "silence"}


def test_unknown_or_missing_detector() -> None:
    with pytest.raises(AudioError, match="unknown voice activity detector"):
        make_detector("neural")
    if importlib.util.find_spec("webrtcvad") is None:  # measured, not chosen, not a dependency
        with pytest.raises(AudioError, match="webrtcvad-wheels"):
            make_detector("webrtc")
