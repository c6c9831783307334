"""The frame gate: quiet on noise, flicker, shake and small motion; fires on cuts, on the
heartbeat and on request; and must-show 2 on the committed video through the real file source."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.capture.camera import CameraCapture, CameraOptions
from edgeagent.capture.camera_factory import frame_gate, open_camera
from edgeagent.capture.camera_opencv import OpenCvSource
from edgeagent.dsp.frame_gate import DEFAULT_THRESHOLD, FrameGate, change_score, thumbnail
from edgeagent.settings import CameraSettings
from tests.capture_video.conftest import VIDEO, collect, video_truth
from tests.publish.mqtt_helpers import VALIDATORS

H, W = 240, 320


def scene(seed: int, margin: int = 4) -> np.ndarray:
    """A textured still scene (smooth shading, rectangles, discs), float RGB, with a margin."""
    rng = np.random.default_rng(seed)
    h, w = H + 2 * margin, W + 2 * margin
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3))
    img[:] = rng.uniform(60, 190, size=3)
    img += (yy / h - 0.5)[..., None] * rng.uniform(-60, 60, size=3)
    for _ in range(8):
        colour = rng.uniform(0, 255, size=3)
        y0, x0 = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
        if rng.random() < 0.5:
            img[y0 : y0 + int(rng.integers(20, 100)), x0 : x0 + int(rng.integers(20, 120))] = colour
        else:
            img[(yy - y0) ** 2 + (xx - x0) ** 2 <= rng.uniform(10, 50) ** 2] = colour
    return img


def shoot(
    img: np.ndarray,
    rng: np.random.Generator,
    noise: float = 0.0,
    gain: float = 1.0,
    offset: float = 0.0,
    shift: tuple[int, int] = (0, 0),
    margin: int = 4,
) -> np.ndarray:
    """One camera frame of a scene: shifted crop, gain/offset, Gaussian noise, uint8 RGB."""
    dy, dx = shift[0] + margin, shift[1] + margin
    frame = img[dy : dy + H, dx : dx + W] * gain + offset
    if noise:
        frame = frame + rng.normal(0, noise, size=frame.shape)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def run(gate: FrameGate, frames: list[np.ndarray], dt: float = 1.0) -> list[tuple[int, str | None]]:
    """Indices and reasons of the frames sent on."""
    sent = []
    for i, frame in enumerate(frames):
        decision = gate.offer(frame, i * dt)
        if decision.send:
            sent.append((i, decision.reason))
    return sent


def test_noise_flicker_shake_and_a_small_moving_object_do_not_fire() -> None:
    rng = np.random.default_rng(1)
    still = scene(10)
    frames = []
    for i in range(60):
        frame = shoot(
            still,
            rng,
            noise=8.0,  # twice the fixture video's sensor noise
            gain=1.0 + 0.25 * np.sin(i / 3),  # ±25 % flicker
            offset=15 * np.cos(i / 5),
            shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))),  # ±2 px shake
        )
        frame[100:108, 5 * i : 5 * i + 8] = 255  # a small bright object crossing
        frames.append(frame)
    gate = FrameGate()
    assert run(gate, frames) == [(0, "first")]
    assert gate.offered == 60 and gate.sent == 1


def test_exposure_jumps_do_not_fire_but_darkness_does() -> None:
    rng = np.random.default_rng(2)
    still = scene(11)
    dark = np.zeros((H + 8, W + 8, 3))
    frames = [
        shoot(still, rng, noise=4),
        shoot(still, rng, noise=4, gain=0.5),  # auto-exposure halves the picture
        shoot(still, rng, noise=4, gain=1.4, offset=-30),
        shoot(dark, rng, noise=3),  # lens covered: flat, only noise
        shoot(dark, rng, noise=3),  # still flat: noise is not structure
        shoot(still, rng, noise=4),  # uncovered
    ]
    assert run(FrameGate(), frames) == [(0, "first"), (3, "scene_change"), (5, "scene_change")]


@pytest.mark.parametrize("seed", range(5))
def test_hard_cuts_fire_once_each(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shots = [scene(100 * seed + k) for k in range(3)]
    frames = [shoot(shots[i // 10], rng, noise=4, shift=(int(i % 3) - 1, 0)) for i in range(30)]
    gate = FrameGate()
    sent = run(gate, frames)
    assert sent == [(0, "first"), (10, "scene_change"), (20, "scene_change")]
    assert change_score(thumbnail(frames[10]), thumbnail(frames[9])) > 2 * DEFAULT_THRESHOLD


def test_interval_sends_a_heartbeat_and_zero_disables_it() -> None:
    rng = np.random.default_rng(3)
    still = scene(12)
    frames = [shoot(still, rng, noise=4) for _ in range(21)]
    assert run(FrameGate(interval_s=5.0), frames) == [
        (0, "first"), (5, "interval"), (10, "interval"), (15, "interval"), (20, "interval"),
    ]  # fmt: skip
    assert run(FrameGate(interval_s=0), frames) == [(0, "first")]
    assert run(FrameGate(interval_s=7.5), frames, dt=0.5) == [(0, "first"), (15, "interval")]


def test_request_sends_the_next_frame_once() -> None:
    rng = np.random.default_rng(4)
    still, other = scene(13), scene(14)
    gate = FrameGate()
    assert gate.offer(shoot(still, rng, noise=4), 0.0).reason == "first"
    assert not gate.offer(shoot(still, rng, noise=4), 1.0).send
    gate.request()
    assert gate.pending_request
    decision = gate.offer(shoot(still, rng, noise=4), 2.0)
    assert decision.send and decision.reason == "request" and decision.score < 0.1
    assert not gate.pending_request and not gate.offer(shoot(still, rng, noise=4), 3.0).send
    # A request met by a cut: reported as the scene change, and the request is used up.
    gate.request()
    cut = gate.offer(shoot(other, rng, noise=4), 4.0)
    assert cut.reason == "scene_change" and cut.scene_changed and not gate.pending_request
    assert not gate.offer(shoot(other, rng, noise=4), 5.0).send
    gate.reset()
    assert gate.offer(shoot(other, rng, noise=4), 6.0).reason == "first"


def test_scale_does_not_matter_and_the_event_matches_the_schema() -> None:
    rng = np.random.default_rng(5)
    gate = FrameGate()
    gate.offer(shoot(scene(15), rng), 0.0)
    assert not gate.offer(np.ascontiguousarray(shoot(scene(15), rng)[::4, ::4]), 0.5).send
    tiny = np.ascontiguousarray(shoot(scene(15), rng)[::16, ::16])  # 20×15: a coarser thumbnail
    decision = gate.offer(tiny, 1.0)
    assert decision.send and decision.reason == "scene_change" and decision.score == 1.0
    payload = {"msg_id": "0" * 32, "seq": 1, "ts": "2026-01-01T00:00:00Z",
               "event_type": "scene_change", **decision.data(7, 1.0, "f" * 32)}  # fmt: skip
    assert payload["frame_index"] == 7 and payload["reason"] == "scene_change"
    assert not list(VALIDATORS["event"].iter_errors(payload))
    bad = {**payload, "reason": "interval"}
    assert list(VALIDATORS["event"].iter_errors(bad))


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold"):
        FrameGate(threshold=0)


# -- must-show 2 ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_fps", [30.0, 10.0, 5.0])
async def test_gate_on_the_video_sends_the_first_frame_and_one_per_cut(max_fps: float) -> None:
    """Through the real video-file source, heartbeat off: exactly frame 0 and each cut."""
    truth = video_truth()
    capture = CameraCapture(
        lambda: OpenCvSource(str(VIDEO), "file", (640, 480)),
        CameraOptions(max_fps=max_fps, realtime=False),
    )
    gate = FrameGate(interval_s=None)
    sent = []
    steady_scores = []
    for frame in await collect(capture):
        decision = gate.offer(frame.image, frame.at_s)
        if decision.send:
            sent.append((frame.index, decision.reason))
        else:
            steady_scores.append(decision.score)
    assert truth["cuts"] == [30, 60, 90]
    assert sent == [(0, "first")] + [(cut, "scene_change") for cut in truth["cuts"]]
    assert max(steady_scores) < DEFAULT_THRESHOLD / 3  # a wide margin, not a near miss


async def test_gate_from_settings_on_the_video() -> None:
    settings = CameraSettings(device=str(VIDEO), max_fps=10, file_realtime=False)
    gate = frame_gate(settings)
    sent = [
        f.index for f in await collect(open_camera(settings)) if gate.offer(f.image, f.at_s).send
    ]
    assert sent == [0, *video_truth()["cuts"]]
