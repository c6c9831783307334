"""Camera sources: the committed video file, image folders written here, caps, ends, reopening.

Real files throughout; the only fake is ``cv2.VideoCapture`` for a device that
disappears (the hardware seam, through ``OpenCvSource``'s ``opener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeagent.capture import SourceEvent
from edgeagent.capture.camera import CameraCapture, CameraOptions
from edgeagent.capture.camera_factory import camera_target, frame_gate, open_camera
from edgeagent.capture.camera_files import FolderSource
from edgeagent.capture.camera_opencv import OpenCvSource, fit_size, load_cv2
from edgeagent.config import load_settings
from edgeagent.errors import CameraError
from edgeagent.settings import CameraSettings
from tests.capture_video.conftest import VIDEO, FakeVideoCapture, collect, solid_bgr, video_truth

BIG = (640, 480)
NOWHERE = Path("/nonexistent")


def video_capture(
    max_fps: float = 60.0,
    max_size: tuple[int, int] = BIG,
    loop: bool = False,
    events: list[SourceEvent] | None = None,
    path: Path = VIDEO,
) -> CameraCapture:
    return CameraCapture(
        lambda: OpenCvSource(str(path), "file", max_size, loop=loop),
        CameraOptions(max_fps=max_fps, realtime=False),
        None if events is None else events.append,
    )


class RecordingSleep:
    """An injected ``sleep``: records the backoff delays and runs an action per call."""

    def __init__(self, action: object = None) -> None:
        self.delays: list[float] = []
        self.action = action

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if callable(self.action):
            self.action(len(self.delays))
        await asyncio.sleep(0)


# -- the video file ------------------------------------------------------------------------


async def test_video_file_delivers_every_frame_as_rgb_with_index_and_media_time() -> None:
    truth = video_truth()
    events: list[SourceEvent] = []
    frames = await collect(video_capture(events=events))
    assert len(frames) == truth["frames"] == 120
    assert [f.index for f in frames] == list(range(120))
    assert [f.at_s for f in frames] == pytest.approx([i / truth["fps"] for i in range(120)])
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(a.captured_at <= b.captured_at for a, b in itertools.pairwise(frames))
    # RGB, not OpenCV's BGR: the same frame read directly and converted.
    direct = cv2.VideoCapture(str(VIDEO))
    ok, bgr = direct.read()
    direct.release()
    assert ok
    np.testing.assert_array_equal(frames[0].image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert [e.event_type for e in events] == ["camera_source_opened", "camera_source_ended"]
    assert events[0].source == f"file {VIDEO}" and events[1].at_s == pytest.approx(12.0)


async def test_resolution_cap_downscales_keeping_aspect_and_never_enlarges() -> None:
    small = await collect(video_capture(max_size=(100, 100)), limit=3)
    assert {f.image.shape for f in small} == {(75, 100, 3)}
    wide = await collect(video_capture(max_size=(640, 60)), limit=3)
    assert {f.image.shape for f in wide} == {(60, 80, 3)}
    same = await collect(video_capture(max_size=(4096, 4096)), limit=3)
    assert {f.image.shape for f in same} == {(120, 160, 3)}


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((1920, 1080), (640, 480), (640, 360)),
        ((1080, 1920), (640, 480), (270, 480)),
        ((320, 240), (640, 480), (320, 240)),
        ((641, 481), (640, 480), (640, 480)),
    ],
)
def test_fit_size(size: tuple[int, int], box: tuple[int, int], expected: tuple[int, int]) -> None:
    assert fit_size(*size, *box) == expected


async def test_fps_cap_skips_the_frames_in_between() -> None:
    capture = video_capture(max_fps=2.5)  # a 10 fps file: every fourth frame
    frames = await collect(capture)
    assert [f.index for f in frames] == list(range(0, 120, 4))
    assert [f.at_s for f in frames] == pytest.approx([0.4 * i for i in range(30)])
    assert capture.grabbed == 120 and capture.delivered == 30 and capture.dropped == 0


async def test_end_of_file_with_loop_starts_over_and_the_timeline_goes_on() -> None:
    events: list[SourceEvent] = []
    frames = await collect(video_capture(loop=True, events=events), limit=250)
    assert [f.index for f in frames] == list(range(250))
    assert frames[130].at_s == pytest.approx(13.0)
    np.testing.assert_array_equal(frames[120].image, frames[0].image)
    np.testing.assert_array_equal(frames[249].image, frames[9].image)
    assert [e.kind for e in events] == ["opened"]  # never ended


async def test_realtime_file_delivers_on_the_media_timeline() -> None:
    # Paced in real time (the pacing itself is measured by benchmarks/camera_static.py: no
    # timing assertions here): frames keep their media time whatever the wall clock did.
    capture = CameraCapture(
        lambda: OpenCvSource(str(VIDEO), "file", BIG), CameraOptions(max_fps=10, realtime=True)
    )
    frames = await collect(capture, limit=3)
    assert [f.at_s for f in frames] == pytest.approx([f.index / 10 for f in frames])
    assert frames[0].index == 0 and frames[0].index < frames[1].index < frames[2].index


async def test_missing_file_is_retried_with_backoff_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "late.avi"
    events: list[SourceEvent] = []

    def appear(calls: int) -> None:
        if calls == 2:
            shutil.copy(VIDEO, path)

    sleep = RecordingSleep(appear)
    capture = CameraCapture(
        lambda: OpenCvSource(str(path), "file", BIG),
        CameraOptions(max_fps=60, realtime=False, backoff_initial_s=0.5, backoff_max_s=0.75),
        events.append,
        sleep=sleep,
    )
    frames = await collect(capture, limit=5)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert sleep.delays == [0.5, 0.75]  # doubling, capped
    assert [e.kind for e in events] == ["lost", "lost", "reopened"]
    assert "no such file" in events[0].reason and events[1].attempt == 2
    assert events[2].event_type == "camera_source_reopened" and events[2].attempt == 2


# -- a device that disappears (fake VideoCapture) -----------------------------------------


async def test_vanished_device_is_reopened_with_backoff_and_reported() -> None:
    runs = [
        FakeVideoCapture([solid_bgr(480, 640, v) for v in range(5)]),
        FakeVideoCapture([], opened=False),  # still gone
        FakeVideoCapture([solid_bgr(480, 640, 100 + v) for v in range(3)]),
    ]
    opened: list[str | int] = []

    def opener(target: str | int) -> FakeVideoCapture:
        opened.append(target)
        return runs[len(opened) - 1]

    events: list[SourceEvent] = []
    sleep = RecordingSleep()
    capture = CameraCapture(
        lambda: OpenCvSource("/dev/video7", "device", (320, 240), opener=opener),
        CameraOptions(max_fps=60, backoff_initial_s=0.25),
        events.append,
        sleep=sleep,
    )
    frames: list[int] = []
    async with asyncio.timeout(30), contextlib.aclosing(capture.frames()) as stream:
        async for frame in stream:
            assert frame.image.shape == (240, 320, 3)  # capped
            frames.append(int(frame.image[0, 0, 0]))
            if frame.image[0, 0, 0] == 102:
                break
    # Live frames may be dropped (newest kept), but none invented and the order holds.
    assert (
        frames == sorted(frames)
        and frames[-1] == 102
        and set(frames) <= {0, 1, 2, 3, 4, 100, 101, 102}
    )
    assert opened == ["/dev/video7"] * 3
    assert [e.kind for e in events] == ["opened", "lost", "lost", "reopened"]
    lost = events[1]
    assert lost.event_type == "camera_source_lost" and "device is gone" in lost.reason
    assert lost.data()["retry_in_s"] == 0.25 and lost.attempt == 1
    assert "cannot open" in events[2].reason and events[2].attempt == 2
    assert sleep.delays == [0.25, 0.5]
    assert all(run.released for run in runs)
    assert runs[0].props[cv2.CAP_PROP_FRAME_WIDTH] == 320


async def test_live_source_keeps_only_the_newest_frame_for_a_slow_consumer() -> None:
    hold = threading.Event()
    fake = FakeVideoCapture([solid_bgr(120, 160, v) for v in range(10)], hold=hold)
    capture = CameraCapture(
        lambda: OpenCvSource(0, "device", BIG, opener=lambda _: fake), CameraOptions(max_fps=60)
    )
    try:
        async with asyncio.timeout(30), contextlib.aclosing(capture.frames()) as stream:
            first = await anext(stream)
            # The reader grabs all ten while nobody takes them, then waits in grab.
            await asyncio.to_thread(fake.exhausted.wait, 30)
            second = await anext(stream)
            hold.set()
    finally:
        hold.set()
    assert second.index == 9 and second.image[0, 0, 0] == 9
    assert capture.dropped == 8 and first.index < 9  # all but the two taken
    assert capture.delivered == 2


async def test_stream_url_is_a_live_source_that_reopens() -> None:
    settings = CameraSettings(device="rtsp://camera.local/live", reopen_backoff_initial_s=0.1)
    assert camera_target(settings) == ("stream", "rtsp://camera.local/live")
    fakes = [FakeVideoCapture([solid_bgr(120, 160, 1)]), FakeVideoCapture([solid_bgr(120, 160, 2)])]
    events: list[SourceEvent] = []
    capture = open_camera(settings, events.append, opener=lambda _: fakes.pop(0))
    capture._sleep = RecordingSleep()
    frames = await collect(capture, limit=2)
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2]
    assert [e.kind for e in events] == ["opened", "lost", "reopened"]
    assert events[0].source == "stream rtsp://camera.local/live"


async def test_stream_that_ends_is_reopened_real_ffmpeg() -> None:
    # The committed video opened as a network stream would be (FFmpeg, timeouts): at its end
    # a stream has died, not ended, so it is reopened and read again.
    events: list[SourceEvent] = []
    sleep = RecordingSleep()
    capture = CameraCapture(
        lambda: OpenCvSource(str(VIDEO), "stream", BIG),
        CameraOptions(max_fps=60, backoff_initial_s=0.2),
        events.append,
        sleep=sleep,
    )
    seen_reopen = []
    async with asyncio.timeout(60), contextlib.aclosing(capture.frames()) as frames:
        async for frame in frames:
            assert frame.image.shape == (120, 160, 3)
            if any(e.kind == "reopened" for e in events):
                seen_reopen.append(frame)
                break
    assert [e.kind for e in events] == ["opened", "lost", "reopened"]
    assert events[0].source == f"stream {VIDEO}" and "stream ended" in events[1].reason
    assert sleep.delays == [0.2] and capture.grabbed > 120 and seen_reopen


# -- OpenCV missing ------------------------------------------------------------------------


async def test_missing_opencv_is_a_clear_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(CameraError, match=r"pip install 'edgeagent\[camera\]'"):
        load_cv2()
    with pytest.raises(CameraError, match="OpenCV"):
        open_camera(CameraSettings(device=str(VIDEO)))
    # A capture built around a source still fails at once rather than retrying forever.
    capture = CameraCapture(lambda: OpenCvSource(str(VIDEO), "file", BIG))
    with pytest.raises(CameraError, match=r"edgeagent\[camera\]"):
        await collect(capture)


# -- image folders -------------------------------------------------------------------------


def write_images(folder: Path) -> None:
    """Three real images (PNG, JPEG), a broken JPEG and a text file."""
    folder.mkdir(exist_ok=True)
    red = np.zeros((240, 320, 3), np.uint8)
    red[..., 2] = 255  # BGR on disk
    cv2.imwrite(str(folder / "01-red.png"), red)
    gradient = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (64, 1))
    cv2.imwrite(str(folder / "02-grey.jpg"), gradient)  # a greyscale JPEG
    blue = np.zeros((1000, 800, 3), np.uint8)
    blue[..., 0] = 255
    cv2.imwrite(str(folder / "04-blue.png"), blue)
    (folder / "03-broken.jpg").write_bytes(b"\xff\xd8\xff garbage, not a JPEG " * 10)
    (folder / "notes.txt").write_text("not an image")


async def test_image_folder_in_name_order_skipping_garbage_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_images(tmp_path / "frames")
    events: list[SourceEvent] = []
    capture = CameraCapture(
        lambda: FolderSource(tmp_path / "frames", (640, 480)),
        CameraOptions(max_fps=2.0, realtime=False),
        events.append,
    )
    with caplog.at_level(logging.WARNING):
        frames = await collect(capture)
    assert len(frames) == 3
    red, grey, blue = (f.image for f in frames)
    assert red.shape == (240, 320, 3) and tuple(red[0, 0]) == (255, 0, 0)  # RGB
    assert grey.shape == (64, 128, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert blue.shape == (480, 384, 3) and tuple(blue[5, 5]) == (0, 0, 255)  # capped, aspect kept
    assert [f.at_s for f in frames] == pytest.approx([0.0, 0.5, 1.0])  # 1 / max_fps apart
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("03-broken.jpg" in w and "skipped" in w for w in warnings)
    assert any("notes.txt" in w and "ignored" in w for w in warnings)
    assert [e.kind for e in events] == ["opened", "ended"]


async def test_image_folder_loops_and_picks_up_new_images(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    write_images(folder)
    frames = await collect(
        CameraCapture(
            lambda: FolderSource(folder, BIG, loop=True), CameraOptions(max_fps=5, realtime=False)
        ),
        limit=7,
    )
    firsts = [tuple(f.image[0, 0]) for f in frames]
    assert firsts[:3] == firsts[3:6] and [f.index for f in frames] == list(range(7))


async def test_empty_folder_is_lost_until_an_image_arrives(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    events: list[SourceEvent] = []
    sleep = RecordingSleep(lambda calls: write_images(folder) if calls == 1 else None)
    capture = CameraCapture(
        lambda: FolderSource(folder, BIG),
        CameraOptions(realtime=False, backoff_initial_s=0.1),
        events.append,
        sleep=sleep,
    )
    frames = await collect(capture)
    assert len(frames) == 3
    assert [e.kind for e in events] == ["lost", "reopened", "ended"]
    assert "no images" in events[0].reason and sleep.delays == [0.1]


# -- settings and the factory --------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("/dev/video2", ("device", "/dev/video2")),
        ("0", ("device", 0)),
        ("rtsp://10.0.0.5:554/stream1", ("stream", "rtsp://10.0.0.5:554/stream1")),
        ("https://cam.example/mjpg", ("stream", "https://cam.example/mjpg")),
        ("clip.mp4", ("file", "clip.mp4")),
        ("frames/", ("folder", "frames/")),
    ],
)
def test_device_forms(device: str, expected: tuple[str, str | int]) -> None:
    assert camera_target(CameraSettings(device=device)) == expected


def test_explicit_source_kind_and_existing_folder(tmp_path: Path) -> None:
    assert camera_target(CameraSettings(device=str(tmp_path))) == ("folder", str(tmp_path))
    explicit = CameraSettings(device="cam.local/feed", source="stream")
    assert camera_target(explicit) == ("stream", "cam.local/feed")


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="reopen_backoff_max_s"):
        CameraSettings(reopen_backoff_initial_s=10, reopen_backoff_max_s=1)
    with pytest.raises(ValueError, match="gate_threshold"):
        CameraSettings(gate_threshold=0)
    with pytest.raises(ValueError, match="source"):
        CameraSettings(source="usb")  # type: ignore[arg-type]
    gate = frame_gate(CameraSettings(gate_threshold=0.4, gate_interval_s=0))
    assert gate.threshold == 0.4 and gate.interval_s is None


async def test_open_camera_from_settings_reads_the_video() -> None:
    settings = CameraSettings(
        device=str(VIDEO), max_fps=5, file_realtime=False, width=80, height=80
    )
    events: list[SourceEvent] = []
    frames = await collect(open_camera(settings, events.append))
    assert len(frames) == 60 and frames[0].image.shape == (60, 80, 3)
    assert [e.kind for e in events] == ["opened", "ended"]
    # The governor's economy cap overrides the setting.
    assert len(await collect(open_camera(settings, max_fps=1.0))) == 12


def test_caps_come_from_the_hardware_profile() -> None:
    glasses = load_settings(None, {"profile": "glasses-reference"}, default_config_path=NOWHERE)
    assert (glasses.camera.width, glasses.camera.height, glasses.camera.max_fps) == (640, 480, 0.5)
    pi = load_settings(None, {"profile": "raspberry-pi-5"}, default_config_path=NOWHERE)
    assert pi.camera.device == "/dev/video0" and pi.camera.max_fps == 1.0  # the default


async def test_rate_cap_changes_while_capturing() -> None:
    capture = video_capture(max_fps=10.0)
    indices = []
    async with asyncio.timeout(60), contextlib.aclosing(capture.frames()) as frames:
        async for frame in frames:
            indices.append(frame.index)
            if frame.index == 19:
                capture.set_max_fps(2.0)  # the economy tier: every fifth frame from here
    # The reader may already hold the next frame or two when the cap changes.
    assert indices[:20] == list(range(20)) and len(indices) < 20 + 2 + 100 // 5
    assert {b - a for a, b in itertools.pairwise(indices[23:])} == {5}
    with pytest.raises(ValueError, match="max_fps"):
        capture.set_max_fps(0)
