"""The ``folder`` camera source: the images of a folder, in name order, as frames.

JPEG, PNG, BMP, WebP and TIFF files are read with OpenCV (the ``camera``
extra); other files are ignored, and an image that cannot be decoded is
skipped — each with one warning. With ``loop`` the folder is listed again
at its end (images added meanwhile join in); a pass that finds no readable
image makes the source lost (retried with backoff) rather than spin.
Images are ``1 / max_fps`` apart on the capture timeline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.capture.camera import CameraLost
from edgeagent.capture.camera_opencv import load_cv2, to_rgb
from edgeagent.errors import CameraError

_LOGGER = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class FolderSource:
    """Frames from the image files of a folder, sorted by name."""

    def __init__(self, folder: str | Path, max_size: tuple[int, int], loop: bool = False) -> None:
        self.folder = Path(folder)
        self.max_size = max_size
        self.loop = loop
        self._cv2: Any = None
        self._paths: list[Path] = []
        self._next = 0  # index in _paths of the next image to read
        self._image: np.ndarray | None = None  # the grabbed image (BGR, as decoded)
        self._read_in_pass = 0
        self._warned: set[Path] = set()
        self._open = False

    @property
    def name(self) -> str:
        return f"folder {self.folder}"

    @property
    def live(self) -> bool:
        return False

    @property
    def fps(self) -> float | None:
        return None

    def open(self) -> None:
        self._cv2 = load_cv2()
        self._list()
        if not self._paths:
            raise CameraLost(f"{self.folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._next, self._read_in_pass, self._open = 0, 0, True

    def _list(self) -> None:
        try:
            files = sorted(p for p in self.folder.iterdir() if p.is_file())
        except OSError as exc:
            raise CameraLost(f"{self.folder}: cannot list: {exc}") from exc
        self._paths = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                self._warn(path, "not an image (by its suffix), ignored")

    def _warn(self, path: Path, what: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            _LOGGER.warning("camera folder: %s: %s", path, what)

    def grab(self) -> bool:
        if not self._open:
            raise CameraError(f"{self.name} is not open")
        while True:
            if self._next >= len(self._paths):
                if not self.loop:
                    return False
                if self._read_in_pass == 0:
                    raise CameraLost(f"{self.folder}: no readable images")
                self._list()
                self._next, self._read_in_pass = 0, 0
                continue
            path = self._paths[self._next]
            self._next += 1
            image = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
            if image is None:
                self._warn(path, "cannot be read as an image, skipped")
                continue
            self._image = image
            self._read_in_pass += 1
            return True

    def retrieve(self) -> np.ndarray:
        if self._image is None:
            raise CameraError(f"{self.name}: nothing grabbed")
        return to_rgb(self._cv2, self._image, self.max_size)

    def close(self) -> None:
        self._open, self._image = False, None
