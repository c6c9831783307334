"""Camera sources read through OpenCV (headless, the ``camera`` extra): devices, streams, files.

:class:`OpenCvSource` wraps ``cv2.VideoCapture`` for a V4L2 device (a path
such as ``/dev/video0`` or an index), a network stream (``rtsp://``,
``http(s)://``, through FFmpeg, with open and read timeouts so that a dead
stream fails instead of hanging) and a video file (optionally looped).
``cv2`` is imported only when a source opens; without it the error names
the extra to install. OpenCV's errors are translated into
:class:`~edgeagent.errors.CameraError` here.

Every frame leaves as ``[H, W, 3]`` uint8 RGB, downscaled (area
interpolation, aspect kept) to fit ``max_size``; frames are never enlarged.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgeagent.capture.camera import CameraLost
from edgeagent.errors import CameraError

_LOGGER = logging.getLogger(__name__)
_STREAM_TIMEOUT_MS = 10_000  # open and read timeouts of network streams

EXTRA_HINT = "pip install 'edgeagent[camera]'"
OpenCvKind = Literal["device", "stream", "file"]
Opener = Callable[[str | int], Any]
"""Makes a ``cv2.VideoCapture``-like object for a target (the seam tests replace)."""


def load_cv2() -> Any:
    """The ``cv2`` module; a :class:`CameraError` naming the extra if OpenCV is missing."""
    try:
        import cv2  # noqa: PLC0415 - optional extra, imported when a camera opens
    except ImportError as exc:
        raise CameraError(
            f"camera sources need OpenCV, which is not installed: {EXTRA_HINT}"
        ) from exc
    return cv2


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest size within ``max_width × max_height`` with the aspect of ``width × height``."""
    scale = min(max_width / width, max_height / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(cv2: Any, image: np.ndarray, max_size: tuple[int, int]) -> np.ndarray:
    """An OpenCV image (BGR, BGRA or grey) -> ``[H, W, 3]`` uint8 RGB within ``max_size``."""
    if image.dtype != np.uint8:
        raise CameraLost(f"unsupported frame type {image.dtype}")
    h, w = image.shape[:2]
    size = fit_size(w, h, *max_size)
    try:
        if size != (w, h):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if image.ndim == 2:
            return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
        if image.shape[2] == 4:
            return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB))
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    except cv2.error as exc:
        raise CameraLost(f"cannot convert a frame of shape {image.shape}: {exc}") from exc


class OpenCvSource:
    """A device, stream or video file through ``cv2.VideoCapture``."""

    def __init__(
        self,
        target: str | int,
        kind: OpenCvKind,
        max_size: tuple[int, int],
        loop: bool = False,
        request_fps: float | None = None,
        opener: Opener | None = None,
    ) -> None:
        self.target, self.kind, self.max_size = target, kind, max_size
        self.loop = loop
        self.request_fps = request_fps  # asked of a device (it picks its nearest mode)
        self._opener = opener
        self._cv2: Any = None
        self._cap: Any = None
        self._fps: float | None = None
        self._grabbed = 0  # frames grabbed since open (a looped file with none does not spin)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.target}"

    @property
    def live(self) -> bool:
        return self.kind != "file"

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        cv2 = self._cv2 = load_cv2()
        if self.kind == "file" and not Path(str(self.target)).is_file():
            raise CameraLost(f"{self.target}: no such file")
        try:
            cap = self._opener(self.target) if self._opener else self._video_capture(cv2)
            if not cap.isOpened():
                cap.release()
                raise CameraLost(f"OpenCV cannot open {self.name}")
            if self.kind == "device":
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.max_size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.max_size[1])
                if self.request_fps is not None:
                    cap.set(cv2.CAP_PROP_FPS, self.request_fps)
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        except cv2.error as exc:
            raise CameraLost(f"OpenCV cannot open {self.name}: {exc}") from exc
        self._cap, self._grabbed = cap, 0
        self._fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else None

    def _video_capture(self, cv2: Any) -> Any:
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, _STREAM_TIMEOUT_MS]  # fmt: skip
            return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if self.kind == "device" and sys.platform.startswith("linux"):
            return cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        return cv2.VideoCapture(self.target)

    def grab(self) -> bool:
        cap, cv2 = self._cap, self._cv2
        if cap is None:
            raise CameraError(f"{self.name} is not open")
        try:
            ok = bool(cap.grab())
            if not ok and self.kind == "file" and self.loop and self._grabbed > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._grabbed = 0
                ok = bool(cap.grab())
        except cv2.error as exc:
            raise CameraLost(f"{self.name}: {exc}") from exc
        if ok:
            self._grabbed += 1
            return True
        if self.live:
            raise CameraLost("no frame: the device is gone or the stream ended")
        return False

    def retrieve(self) -> np.ndarray:
        cap, cv2 = self._cap, self._cv2
        if cap is None:
            raise CameraError(f"{self.name} is not open")
        try:
            ok, image = cap.retrieve()
        except cv2.error as exc:
            raise CameraLost(f"{self.name}: cannot decode a frame: {exc}") from exc
        if not ok or image is None:
            raise CameraLost(f"{self.name}: cannot decode a frame")
        return to_rgb(cv2, image, self.max_size)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
