"""The frame gate: which camera frames go on to the vision encoder.

Encoding a frame costs the vision tower plus 256 soft tokens of prefill, so
the gate lets a frame through only when it matters: the first frame, a
changed scene, a heartbeat every ``interval_s`` (0 or ``None``: no
heartbeat), or an explicit :meth:`FrameGate.request` (``cmd/ask`` with
``"look": true``): the next frame offered goes on.

The comparison is cheap and tolerant of what a still camera sees anyway.
Each frame becomes a thumbnail (:func:`thumbnail`): luma, area-averaged to
32×24, blurred by a [1, 2, 1] kernel, then normalised to zero mean and unit
standard deviation. The score is half the mean squared difference of two
thumbnails, i.e. ``1 − r`` with ``r`` their correlation: 0 for the same
structure, about 1 for unrelated scenes, up to 2 for an inverted one.

- Sensor noise: area averaging divides it by the square root of the pixels
  per cell (25 at 160×120; 200 at 640×480, where every second row is used).
- Flicker and exposure changes (gain and offset of the whole picture) vanish
  in the normalisation.
- Shake of a pixel or two is a fraction of a cell, and the blur spreads an
  edge over neighbouring cells; a small moving object covers a few cells.
- A flat picture (lens covered, darkness) has its deviation floored at
  ``_FLAT_STD`` grey levels, so its noise is not blown up into structure.

The frame is always compared with the last frame *sent on*, not with the
previous one, so a slow drift (the sun moving, a slow pan) adds up and fires
once it is large.

Default threshold, measured on ``tests/fixtures/video/scene_cuts.avi``
(``scripts/make_test_video.py``: σ 4 noise, ±8 % flicker, ±2 px shake, a
moving ball; MJPG) through the video-file source: steady frames score at
most 0.018, 0.018, 0.030 and 0.054 against their shot's first frame (shot by
shot), the three cuts 0.87, 1.34 and 1.55. :data:`DEFAULT_THRESHOLD` 0.25
sits 4.6× above the worst steady frame and 3.5× below the weakest cut
(``benchmarks/README.md``, "Vision: camera path on a static scene").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

GateReason = Literal["first", "scene_change", "request", "interval"]

THUMB_W, THUMB_H = 32, 24
DEFAULT_THRESHOLD = 0.25
_FLAT_STD = 4.0  # grey levels: deviation below which a thumbnail counts as flat
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, RGB order


def _edges(n: int, cells: int) -> np.ndarray:
    """Start index of each of ``cells`` near-equal bins over ``n`` (distinct, ascending)."""
    return np.unique(np.linspace(0, n, min(cells, n), endpoint=False).astype(np.intp))


def _smooth(x: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 blur along both axes, edges repeated (halves the score of shake)."""
    if min(x.shape) < 2:
        return x  # a frame a pixel high or wide: nothing to blur
    y = x.copy()
    y[1:-1] = (x[:-2] + 2 * x[1:-1] + x[2:]) / 4
    y[0], y[-1] = (3 * x[0] + x[1]) / 4, (3 * x[-1] + x[-2]) / 4
    z = y.copy()
    z[:, 1:-1] = (y[:, :-2] + 2 * y[:, 1:-1] + y[:, 2:]) / 4
    z[:, 0], z[:, -1] = (3 * y[:, 0] + y[:, 1]) / 4, (3 * y[:, -1] + y[:, -2]) / 4
    return z


def thumbnail(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (or ``[H, W]`` grey) -> normalised ``[≤24, ≤32]`` float32 luma.

    Frames at least 16 times the thumbnail's height use every ``step``-th row only,
    keeping 8 or more rows per cell (480 rows: every second). Whole rows, because numpy
    copies a view strided along rows fast and one strided along pixels slowly.
    """
    step = max(1, image.shape[0] // (8 * THUMB_H))
    if step > 1:
        image = image[::step]  # [H / step, W, 3]
    h, w = image.shape[:2]
    grey = image.astype(np.float32) @ _LUMA if image.ndim == 3 else image.astype(np.float32)
    rows, cols = _edges(h, THUMB_H), _edges(w, THUMB_W)
    sums = np.add.reduceat(np.add.reduceat(grey, cols, axis=1), rows, axis=0)  # [24, 32]
    counts = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
    cells = _smooth(sums / counts)  # area average, grey levels
    centred = cells - cells.mean()
    scale = max(float(centred.std()), _FLAT_STD)
    return (centred / scale).astype(np.float32)  # type: ignore[no-any-return]


def change_score(a: np.ndarray, b: np.ndarray) -> float:
    """How different two thumbnails are: ``mean((a − b)²) / 2``, i.e. ``1 − r``.

    0 for the same structure, about 1 for unrelated scenes.
    """
    if a.shape != b.shape:
        return 1.0  # the resolution changed (a different camera): a different scene
    return float(np.mean((a - b) ** 2) / 2.0)


@dataclass(frozen=True)
class GateDecision:
    """What the gate made of one frame: sent on or held, why, and how changed it looked."""

    send: bool
    reason: GateReason | None  # None when held
    score: float  # change against the last frame sent (0.0 for the first)

    @property
    def scene_changed(self) -> bool:
        """The first frame or a change beyond the threshold: publish a ``scene_change`` event."""
        return self.reason in ("first", "scene_change")

    def data(self, frame_index: int, at_s: float, frame_id: str) -> dict[str, Any]:
        """The fields of a ``scene_change`` event on ``<base>/event`` (docs/mqtt.md);
        ``frame_id``: the id the frame's results (``<base>/vision``, answers) carry."""
        return {
            "frame_id": frame_id,
            "frame_index": frame_index,
            "at_s": round(at_s, 3),
            "reason": self.reason,
            "score": round(self.score, 4),
        }


class FrameGate:
    """Decides, frame by frame, whether to send a frame on; keeps the last sent frame's thumbnail.

    ``offer(image, now)``: ``now`` is the frame's time in seconds on any clock
    that the caller keeps consistent (the capture timeline, ``Frame.at_s``).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, interval_s: float | None = None):
        if threshold <= 0:
            raise ValueError("threshold must be above 0")
        self.threshold = threshold
        self.interval_s = interval_s or None
        self._last: np.ndarray | None = None  # thumbnail of the last frame sent
        self._last_at = 0.0
        self._requested = False
        self.offered = self.sent = 0

    def request(self) -> None:
        """Send the next offered frame on, whatever it looks like."""
        self._requested = True

    @property
    def pending_request(self) -> bool:
        """A request is waiting for the next frame."""
        return self._requested

    def reset(self) -> None:
        """Forget the last sent frame: the next one is sent as ``first`` (e.g. a new camera)."""
        self._last = None

    def offer(self, image: np.ndarray, now: float) -> GateDecision:
        """Decide about one frame (``[H, W, 3]`` uint8 RGB)."""
        self.offered += 1
        thumb = thumbnail(image)
        if self._last is None:
            return self._send(thumb, now, "first", 0.0)
        score = change_score(thumb, self._last)
        if score >= self.threshold:
            return self._send(thumb, now, "scene_change", score)
        if self._requested:
            return self._send(thumb, now, "request", score)
        if self.interval_s is not None and now - self._last_at >= self.interval_s:
            return self._send(thumb, now, "interval", score)
        return GateDecision(False, None, score)

    def _send(
        self, thumb: np.ndarray, now: float, reason: GateReason, score: float
    ) -> GateDecision:
        self._last, self._last_at, self._requested = thumb, now, False
        self.sent += 1
        return GateDecision(True, reason, score)
