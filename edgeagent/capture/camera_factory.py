"""Build the configured camera source (the seam tests replace), its capture and its frame gate.

capture = open_camera(settings.camera, on_event=events.append)
gate = frame_gate(settings.camera)
async for frame in capture.frames():          # Frame: [H, W, 3] uint8 RGB, index, at_s
    decision = gate.offer(frame.image, frame.at_s)
    if decision.send: ...                      # reason: first, scene_change, request, interval
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from edgeagent.capture.base import EventSink
from edgeagent.capture.camera import (
    CameraCapture,
    CameraOptions,
    FrameSource,
    FrameSourceFactory,
)
from edgeagent.capture.camera_files import FolderSource
from edgeagent.capture.camera_opencv import OpenCvSource, Opener, load_cv2
from edgeagent.dsp.frame_gate import FrameGate
from edgeagent.settings import CameraSettings

CameraKind = Literal["device", "stream", "file", "folder"]
_URL = re.compile(r"^(rtsps?|https?)://", re.IGNORECASE)


def camera_target(settings: CameraSettings) -> tuple[CameraKind, str | int]:
    """What ``camera.device`` names (``camera.source``, or its form under ``auto``)."""
    device, kind = settings.device, settings.source
    if kind == "auto":
        if device.isdigit() or device.startswith("/dev/"):
            kind = "device"
        elif _URL.match(device):
            kind = "stream"
        elif Path(device).is_dir() or device.endswith("/"):
            kind = "folder"
        else:
            kind = "file"
    if kind == "device" and device.isdigit():
        return kind, int(device)
    return kind, device


def camera_source_factory(
    settings: CameraSettings, max_fps: float | None = None, opener: Opener | None = None
) -> FrameSourceFactory:
    """A function making a fresh source for ``settings`` (``opener``: a fake ``VideoCapture``).

    Raises :class:`~edgeagent.errors.CameraError` at once when OpenCV is missing.
    """
    load_cv2()
    kind, target = camera_target(settings)
    size = (settings.width, settings.height)
    fps = max_fps if max_fps is not None else settings.max_fps
    if kind == "folder":

        def folder() -> FrameSource:
            return FolderSource(str(target), size, settings.file_loop)

        return folder

    def opencv() -> FrameSource:
        # A device is asked for at least 5 fps (the slowest mode most UVC cameras have):
        # fewer frames grabbed and skipped than at its default 30.
        return OpenCvSource(target, kind, size, loop=settings.file_loop,
                            request_fps=max(fps, 5.0), opener=opener)  # fmt: skip

    return opencv


def open_camera(
    settings: CameraSettings,
    on_event: EventSink | None = None,
    max_fps: float | None = None,
    opener: Opener | None = None,
) -> CameraCapture:
    """The capture supervisor (nothing opens until iteration); ``max_fps`` overrides (governor)."""
    fps = max_fps if max_fps is not None else settings.max_fps
    options = CameraOptions(
        max_fps=fps,
        realtime=settings.file_realtime,
        backoff_initial_s=settings.reopen_backoff_initial_s,
        backoff_max_s=settings.reopen_backoff_max_s,
    )
    return CameraCapture(camera_source_factory(settings, fps, opener), options, on_event)


def frame_gate(settings: CameraSettings) -> FrameGate:
    """The frame gate with the configured threshold and heartbeat."""
    return FrameGate(settings.gate_threshold, settings.gate_interval_s or None)
