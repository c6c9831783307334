"""Capture: audio (and later camera) sources, supervised and reopened when they die.

capture = open_capture(settings.audio, on_event=events.append)
async for block in capture.blocks():     # AudioBlock: 16 kHz mono float32, timestamped
    ...
"""

from edgeagent.capture.audio import AudioCapture, CaptureOptions
from edgeagent.capture.base import AudioBlock, RawSource, SourceEnded, SourceEvent
from edgeagent.capture.factory import open_capture, source_factory

__all__ = [
    "AudioBlock",
    "AudioCapture",
    "CaptureOptions",
    "RawSource",
    "SourceEnded",
    "SourceEvent",
    "open_capture",
    "source_factory",
]
