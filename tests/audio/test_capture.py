"""Audio sources: a real command writing PCM, WAV files, a PyAudio device behind a fake module."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from edgeagent.capture import AudioBlock, AudioCapture, CaptureOptions, SourceEvent
from edgeagent.capture.base import SourceEnded
from edgeagent.capture.command import CommandSource
from edgeagent.capture.factory import command_argv, source_factory
from edgeagent.capture.pyaudio_source import PyAudioSource, find_input_device
from edgeagent.capture.wavfile import WavFileSource, read_wav, write_wav
from edgeagent.errors import AudioError, ConfigError
from edgeagent.settings import AudioSettings
from tests.audio.conftest import CLIPS

WRITER = Path(__file__).with_name("pcm_writer.py")


def writer(*args: str) -> list[str]:
    return [sys.executable, str(WRITER), *args]


def peak_freq(pcm: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


async def first_run(capture: AudioCapture, events: list[SourceEvent]) -> list[AudioBlock]:
    """Blocks until the source has been lost and reopened once (then stop capturing)."""
    out: list[AudioBlock] = []
    async with contextlib.aclosing(capture.blocks()) as blocks:
        async for block in blocks:
            if any(e.kind == "reopened" for e in events):
                out.append(block)  # the first block of the second run
                break
            out.append(block)
    return out


async def test_command_source_stereo_48k_is_converted_to_16k_mono() -> None:
    argv = writer("--rate", "48000", "--channels", "2", "--seconds", "0.5", "--freq", "440")
    events: list[SourceEvent] = []
    capture = AudioCapture(
        lambda: CommandSource(argv, 48000, channels=2, block_frames=960),
        CaptureOptions(channel=1, backoff_initial_s=0.05),
        on_event=events.append,
    )
    async with asyncio.timeout(30):
        blocks = await first_run(capture, events)
    first = blocks[:-1]
    pcm = np.concatenate([b.pcm for b in first])
    assert len(pcm) == 8000  # 0.5 s at 16 kHz, whatever the block boundaries
    assert [b.start for b in first] == [0, *np.cumsum([len(b.pcm) for b in first[:-1]])]
    assert abs(peak_freq(pcm) - 440) < 3
    middle = pcm[500:-500]
    np.testing.assert_allclose(np.sqrt(np.mean(middle**2)), (2 / 3) / np.sqrt(2), rtol=2e-3)


async def test_command_that_exits_is_reopened_and_the_gap_reported() -> None:
    # A real program writing PCM in real time, then failing like an unplugged device.
    argv = writer("--seconds", "0.3", "--paced", "--exit-status", "3", "--message", "device gone")
    events: list[SourceEvent] = []
    pids: list[int | None] = []

    def factory() -> CommandSource:
        source = CommandSource(argv, 16000, block_frames=160)
        pids.append(None)
        return source

    capture = AudioCapture(factory, CaptureOptions(backoff_initial_s=0.25), events.append)
    async with asyncio.timeout(30):
        blocks = await first_run(capture, events)
    kinds = [e.kind for e in events]
    assert kinds == ["opened", "lost", "reopened"]
    lost, reopened = events[1], events[2]
    assert "exited with status 3" in lost.reason and "device gone" in lost.reason
    assert lost.retry_in_s == 0.25 and lost.attempt == 1
    assert lost.event_type == "audio_source_lost" and lost.data()["retry_in_s"] == 0.25
    assert reopened.gap_s is not None and 0.2 <= reopened.gap_s < 5.0
    first_run_end = blocks[-2].end
    assert first_run_end == 4800  # all 0.3 s arrived before the exit
    assert lost.at_s == pytest.approx(0.3)
    # The timeline jumps by the gap: block timestamps stay on the wall clock.
    assert blocks[-1].start == first_run_end + round(reopened.gap_s * 16000)
    assert reopened.at_s == pytest.approx(blocks[-1].start_s)


async def test_missing_program_backs_off_exponentially() -> None:
    delays: list[float] = []
    events: list[SourceEvent] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 6:
            raise asyncio.CancelledError

    capture = AudioCapture(
        lambda: CommandSource(["/nonexistent/arecord", "-q"], 16000),
        CaptureOptions(backoff_initial_s=0.5, backoff_max_s=4.0),
        events.append,
        sleep=fake_sleep,
    )
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await anext(capture.blocks())
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(e.kind == "lost" and "cannot start" in e.reason for e in events)
    assert [e.attempt for e in events] == [1, 2, 3, 4, 5, 6]


async def test_stopping_capture_terminates_the_program() -> None:
    argv = writer("--seconds", "60", "--paced")
    sources: list[CommandSource] = []

    def factory() -> CommandSource:
        sources.append(CommandSource(argv, 16000, block_frames=160))
        return sources[-1]

    capture = AudioCapture(factory)
    async with asyncio.timeout(30):
        async with contextlib.aclosing(capture.blocks()) as blocks:
            async for block in blocks:
                pid = sources[0].pid
                assert pid is not None and len(block.pcm) > 0
                break
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped


async def test_output_faster_than_it_is_read_is_held_back_and_arrives_whole() -> None:
    source = CommandSource(writer("--seconds", "4"), 16000, block_frames=160)  # 128 kB at once
    parts = []
    async with asyncio.timeout(30):
        await source.open()
        output = source._output
        assert output is not None
        for _ in range(2000):  # until a backlog of 32 blocks, where reading pauses
            if len(output.buffer) >= 32 * 320:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        # held at the backlog plus at most one pipe read, not the whole output
        assert len(output.buffer) < 100_000
        with pytest.raises(SourceEnded, match="status 0"):
            while (frames := await source.read()) is not None:
                parts.append(frames[:, 0])
        await source.close()
    pcm = np.concatenate(parts)
    assert len(pcm) == 64000  # resumed every time: nothing lost
    assert abs(peak_freq(pcm) - 440.0) < 5.0


async def test_command_formats_and_partial_frames() -> None:
    for fmt in ("S32_LE", "FLOAT_LE"):
        source = CommandSource(writer("--seconds", "0.05", "--format", fmt), 16000, 1, fmt, 400)
        async with asyncio.timeout(20):
            await source.open()
            frames = await source.read()
            assert frames is not None and frames.shape == (400, 1)
            rest = await source.read()  # 800 samples in all: a short last block
            assert rest is not None and rest.shape == (400, 1)
            with pytest.raises(AudioError, match="status 0"):
                await source.read()
            await source.close()
        assert abs(np.max(np.abs(np.concatenate([frames, rest]))) - 0.5) < 1e-3


# -- WAV files -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


async def test_wav_file_paced_in_real_time() -> None:
    clock = FakeClock()
    source = WavFileSource(CLIPS / "two_clean.wav", block_ms=20, clock=clock, sleep=clock.sleep)
    events: list[SourceEvent] = []
    capture = AudioCapture(lambda: source, on_event=events.append, clock=clock, sleep=clock.sleep)
    async with asyncio.timeout(20):
        blocks = [b async for b in capture.blocks()]
    pcm, rate = read_wav(CLIPS / "two_clean.wav")
    np.testing.assert_array_equal(np.concatenate([b.pcm for b in blocks]), pcm[:, 0])
    assert clock.now == pytest.approx(100.0 + len(pcm) / rate)  # one clip's duration passed
    assert all(0 < s <= 0.0201 for s in clock.sleeps)
    assert [e.kind for e in events] == ["opened", "ended"]


async def test_wav_file_fast_and_looped(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    write_wav(path, np.linspace(-0.5, 0.5, 1000), rate=16000)
    fast = WavFileSource(path, block_ms=10, realtime=False, loop=True)
    capture = AudioCapture(lambda: fast)
    async with asyncio.timeout(20):
        async with contextlib.aclosing(capture.blocks()) as blocks:
            got = []
            async for block in blocks:
                got.append(block.pcm)
                if sum(map(len, got)) >= 2500:
                    break
    pcm = np.concatenate(got)
    np.testing.assert_allclose(pcm[1000:2000], pcm[:1000])  # it started over


async def test_wav_stereo_44k1_24bit_channel_and_gain(tmp_path: Path) -> None:
    rate, n = 44100, 44100
    t = np.arange(n) / rate
    left, right = 0.1 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 1000 * t)
    ints = np.round(np.stack([left, right], 1) * (1 << 23)).astype(np.int32).reshape(-1)
    raw = np.stack([ints & 0xFF, (ints >> 8) & 0xFF, (ints >> 16) & 0xFF], 1).astype(np.uint8)
    path = tmp_path / "stereo24.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(rate)
        w.writeframes(raw.tobytes())
    capture = AudioCapture(
        lambda: WavFileSource(path, realtime=False), CaptureOptions(channel=1, gain_db=6.0206)
    )
    async with asyncio.timeout(20):
        pcm = np.concatenate([b.pcm async for b in capture.blocks()])
    assert len(pcm) == 16000
    assert abs(peak_freq(pcm) - 1000) < 2
    np.testing.assert_allclose(np.sqrt(np.mean(pcm[400:-400] ** 2)), 0.4 / np.sqrt(2), rtol=1e-3)


async def test_bad_wav_is_an_audio_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioError, match="cannot read WAV"):
        await WavFileSource(bad).open()
    with pytest.raises(AudioError, match="cannot read WAV"):
        read_wav(tmp_path / "missing.wav")


# -- PyAudio, behind a fake module -----------------------------------------------------------


class FakeStream:
    def __init__(self, device: FakePyAudio, frames: int) -> None:
        self.device, self.frames = device, frames

    def read(self, n: int, exception_on_overflow: bool = True) -> bytes:
        self.device.reads += 1
        if self.device.reads == self.device.unplug_after:
            raise OSError(-9999, "Unanticipated host error")
        return (np.full(n, 1000, "<i2")).tobytes()

    def stop_stream(self) -> None: ...

    def close(self) -> None:
        FakePyAudio.closed += 1


class FakePyAudio:
    instances: ClassVar[list[FakePyAudio]] = []
    unplug_after = 0
    reads = 0
    closed = 0

    def __init__(self) -> None:
        FakePyAudio.instances.append(self)
        self.opened: dict[str, Any] = {}
        self.devices = [
            {"name": "HDA Intel: ALC (hw:0,0)", "maxInputChannels": 2},
            {"name": "HDMI out", "maxInputChannels": 0},
            {"name": "USB Audio Device: Mic (hw:1,0)", "maxInputChannels": 1},
        ]

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return self.devices[i]

    def open(self, **kwargs: Any) -> FakeStream:
        self.opened = kwargs
        return FakeStream(self, kwargs["frames_per_buffer"])

    def terminate(self) -> None: ...


FAKE_PYAUDIO = SimpleNamespace(PyAudio=FakePyAudio, paInt16=8)


def test_input_device_by_name_index_or_default() -> None:
    pa = FakePyAudio()
    assert find_input_device(pa, "usb") == 2
    assert find_input_device(pa, "0") == 0
    assert find_input_device(pa, "default") is None
    with pytest.raises(AudioError, match=r"no input device 'HDMI'.*0: HDA Intel"):
        find_input_device(pa, "HDMI")
    with pytest.raises(AudioError, match="no input device '1'"):
        find_input_device(pa, "1")


async def test_unplugged_pyaudio_device_is_reopened() -> None:
    FakePyAudio.instances.clear()
    FakePyAudio.unplug_after, FakePyAudio.reads, FakePyAudio.closed = 4, 0, 0
    events: list[SourceEvent] = []
    capture = AudioCapture(
        lambda: PyAudioSource("USB", 48000, 1, 960, module=FAKE_PYAUDIO),  # type: ignore[arg-type]
        CaptureOptions(backoff_initial_s=0.01),
        events.append,
    )
    async with asyncio.timeout(20):
        blocks = await first_run(capture, events)
    assert [e.kind for e in events] == ["opened", "lost", "reopened"]
    assert "Unanticipated host error" in events[1].reason
    assert FakePyAudio.instances[0].opened["input_device_index"] == 2
    assert FakePyAudio.instances[0].opened["rate"] == 48000
    assert len(FakePyAudio.instances) == 2 and FakePyAudio.closed >= 1
    assert np.allclose(blocks[1].pcm[100:], 1000 / 32768, atol=1e-4)


async def test_pyaudio_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    with pytest.raises(AudioError, match=r"edgeagent\[audio\]"):
        await PyAudioSource("default", 16000).open()


# -- settings to sources ---------------------------------------------------------------------


def test_command_placeholders_from_settings() -> None:
    s = AudioSettings(device="plughw:1,0", sample_rate_hz=48000, channels=2)
    assert command_argv(s) == (
        "arecord", "-q", "-t", "raw", "-f", "S16_LE", "-c", "2", "-r", "48000", "-D", "plughw:1,0",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"audio\.command"):
        command_argv(AudioSettings(command=("rec", "{volume}")))


def test_factory_builds_each_source(tmp_path: Path) -> None:
    assert isinstance(source_factory(AudioSettings())(), CommandSource)
    assert isinstance(source_factory(AudioSettings(source="pyaudio"))(), PyAudioSource)
    wav = source_factory(AudioSettings(source="file", file=tmp_path / "x.wav"))()
    assert isinstance(wav, WavFileSource)
    with pytest.raises(ConfigError, match=r"audio\.file"):
        source_factory(AudioSettings(source="file"))


def test_audio_settings_validation() -> None:
    with pytest.raises(ValueError, match="reopen_backoff_max_s"):
        AudioSettings(reopen_backoff_initial_s=5, reopen_backoff_max_s=1)
    with pytest.raises(ValueError, match="channel 2 needs channels"):
        AudioSettings(channel=2, channels=2)
