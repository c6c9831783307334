"""Helpers of the camera tests: the committed video, a fake VideoCapture, collecting frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.capture.camera import CameraCapture, Frame

VIDEO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "video"
VIDEO = VIDEO_DIR / "scene_cuts.avi"


def video_truth() -> dict[str, Any]:
    """``scene_cuts.json``: size, fps, frame count, cut indices (scripts/make_test_video.py)."""
    result: dict[str, Any] = json.loads((VIDEO_DIR / "scene_cuts.json").read_text())
    return result


async def collect(capture: CameraCapture, limit: int | None = None) -> list[Frame]:
    """Frames until the capture ends or ``limit`` frames arrived, all under a 60 s timeout."""
    out: list[Frame] = []
    async with asyncio.timeout(60), contextlib.aclosing(capture.frames()) as frames:
        async for frame in frames:
            out.append(frame)
            if limit is not None and len(out) >= limit:
                break
    return out


def solid_bgr(height: int, width: int, value: int) -> np.ndarray:
    """A BGR image whose pixels encode ``value`` (for telling fake frames apart)."""
    return np.full((height, width, 3), value % 256, np.uint8)


class FakeVideoCapture:
    """Stands in for ``cv2.VideoCapture`` at the hardware seam: replays frames, then fails.

    ``frames``: BGR images returned one by one, ``1 / fps`` apart (``grab`` blocks until
    the next frame, like a camera's); after them ``grab`` fails like an unplugged
    camera (or, with ``hold``, waits on it first, to keep a reader busy).
    ``opened=False``: the device cannot be opened at all.
    """

    def __init__(
        self,
        frames: list[np.ndarray],
        opened: bool = True,
        fps: float = 30.0,
        hold: threading.Event | None = None,
    ) -> None:
        self.frames, self.opened, self.fps, self.hold = list(frames), opened, fps, hold
        self.position = 0
        self.released = False
        self.props: dict[int, float] = {}
        self.exhausted = threading.Event()  # set when grab ran out of frames

    def isOpened(self) -> bool:  # OpenCV's name
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.fps

    def grab(self) -> bool:
        if self.position < len(self.frames):
            time.sleep(1.0 / self.fps)
            self.position += 1
            return True
        self.exhausted.set()
        if self.hold is not None:
            self.hold.wait(30)
        return False

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return True, self.frames[self.position - 1]

    def release(self) -> None:
        self.released = True
