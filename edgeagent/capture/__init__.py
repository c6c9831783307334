"""Capture: audio and camera sources, supervised and reopened when they die.

capture = open_capture(settings.audio, on_event=events.append)
async for block in capture.blocks():     # AudioBlock: 16 kHz mono float32, timestamped
    ...

camera = open_camera(settings.camera, on_event=events.append)
async for frame in camera.frames():      # Frame: [H, W, 3] uint8 RGB, index, at_s; newest kept
    ...

The camera sources need OpenCV (the ``camera`` extra), imported only when one opens.
"""

from edgeagent.capture.audio import AudioCapture, CaptureOptions
from edgeagent.capture.base import AudioBlock, RawSource, SourceEnded, SourceEvent
from edgeagent.capture.camera import CameraCapture, CameraLost, CameraOptions, Frame, FrameSource
from edgeagent.capture.camera_factory import camera_target, frame_gate, open_camera
from edgeagent.capture.factory import open_capture, source_factory

__all__ = [
    "AudioBlock",
    "AudioCapture",
    "CameraCapture",
    "CameraLost",
    "CameraOptions",
    "CaptureOptions",
    "Frame",
    "FrameSource",
    "RawSource",
    "SourceEnded",
    "SourceEvent",
    "camera_target",
    "frame_gate",
    "open_camera",
    "open_capture",
    "source_factory",
]
