"""Build the configured audio source (the seam tests replace) and its capture supervisor."""

from __future__ import annotations

from edgeagent.capture.audio import AudioCapture, CaptureOptions, SourceFactory
from edgeagent.capture.base import EventSink, RawSource
from edgeagent.capture.command import CommandSource
from edgeagent.capture.pyaudio_source import PyAudioSource
from edgeagent.capture.wavfile import WavFileSource
from edgeagent.errors import ConfigError
from edgeagent.settings import AudioSettings


def command_argv(settings: AudioSettings) -> tuple[str, ...]:
    """The command with ``{rate}``, ``{channels}``, ``{format}``, ``{device}`` filled in."""
    values = {
        "rate": str(settings.sample_rate_hz),
        "channels": str(settings.channels),
        "format": settings.sample_format,
        "device": settings.device,
    }
    try:
        return tuple(arg.format(**values) for arg in settings.command)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"audio.command: bad placeholder in {settings.command!r}: {exc}") from exc


def source_factory(settings: AudioSettings) -> SourceFactory:
    """A function making a fresh raw source as ``audio.source`` says."""
    frames = max(1, settings.sample_rate_hz * settings.block_ms // 1000)
    if settings.source == "command":
        argv = command_argv(settings)

        def command() -> RawSource:
            return CommandSource(argv, settings.sample_rate_hz, settings.channels,
                                 settings.sample_format, frames)  # fmt: skip

        return command
    if settings.source == "pyaudio":

        def pyaudio() -> RawSource:
            return PyAudioSource(
                settings.device, settings.sample_rate_hz, settings.channels, frames
            )

        return pyaudio
    path = settings.file
    if path is None:
        raise ConfigError('audio.file: the "file" source needs a WAV file')

    def wav() -> RawSource:
        return WavFileSource(path, settings.block_ms, settings.file_realtime, settings.file_loop)

    return wav


def open_capture(settings: AudioSettings, on_event: EventSink | None = None) -> AudioCapture:
    """The capture supervisor for ``settings`` (nothing is opened until iteration starts)."""
    options = CaptureOptions(
        channel=settings.channel,
        gain_db=settings.gain_db,
        backoff_initial_s=settings.reopen_backoff_initial_s,
        backoff_max_s=settings.reopen_backoff_max_s,
    )
    return AudioCapture(source_factory(settings), options, on_event)
