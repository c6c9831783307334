#!/usr/bin/env python3
"""CPU used by the camera path (source + frame gate) while the scene stays the same.

    python benchmarks/camera_static.py [--seconds 60] [--config video folder] [--max-fps 1]

A static scene as a camera sees it — one still picture with fresh Gaussian
sensor noise (σ 4), a slow brightness flicker and ±1 px shake in every frame
— is written to a temporary folder at 640×480, then read through the real
sources, paced in real time and looped, at the default ``camera.max_fps``,
every offered frame going through the frame gate:

- ``video``: a 15 fps Motion-JPEG AVI (the video-file source: OpenCV's
  FFmpeg backend grabs every frame, decodes the ones due);
- ``folder``: a folder of JPEG images (the folder source: one image per
  ``1 / max_fps``).

Reports this process's CPU time (user + system, all threads, from
``getrusage``) over the wall time of the run, as % of one core; frames
grabbed, decoded and sent on by the gate; and the gate's own cost per frame
measured alone. Writes ``benchmarks/results/camera_static.json``. The bound
(issue 9, must-show 4) is 5 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from edgeagent.capture.camera import CameraCapture, CameraOptions, FrameSource
from edgeagent.capture.camera_files import FolderSource
from edgeagent.capture.camera_opencv import OpenCvSource, load_cv2
from edgeagent.dsp.frame_gate import FrameGate
from edgeagent.settings import CameraSettings

RESULTS = Path(__file__).resolve().parent / "results" / "camera_static.json"
W, H, VIDEO_FPS, SECONDS_OF_VIDEO, FOLDER_IMAGES = 640, 480, 15, 4, 8


def still_scene(seed: int = 7) -> np.ndarray:
    """A textured picture (smooth shading, rectangles, discs), float RGB ``[H + 4, W + 4, 3]``."""
    rng = np.random.default_rng(seed)
    h, w = H + 4, W + 4
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3))
    img[:] = rng.uniform(60, 190, size=3)
    img += (yy / h - 0.5)[..., None] * rng.uniform(-60, 60, size=3)
    for _ in range(10):
        colour = rng.uniform(0, 255, size=3)
        y0, x0 = int(rng.integers(0, h - 80)), int(rng.integers(0, w - 80))
        if rng.random() < 0.5:
            img[y0 : y0 + int(rng.integers(40, 200)), x0 : x0 + int(rng.integers(40, 240))] = colour
        else:
            img[(yy - y0) ** 2 + (xx - x0) ** 2 <= rng.uniform(20, 100) ** 2] = colour
    return img


def steady_frames(count: int, fps: float) -> list[np.ndarray]:
    """``count`` BGR uint8 frames of the still scene: noise, flicker, shake."""
    rng = np.random.default_rng(1)
    scene = still_scene()
    frames = []
    for i in range(count):
        dy, dx = (int(v) for v in rng.integers(1, 4, size=2))
        gain = 1.0 + 0.05 * np.sin(2 * np.pi * (i / fps) / 2.0)
        img = scene[dy : dy + H, dx : dx + W] * gain + rng.normal(0, 4.0, size=(H, W, 3))
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8)[..., ::-1].copy())
    return frames


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The static video and image folder; returns their paths."""
    cv2 = load_cv2()
    video = folder / "static.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (W, H))
    for frame in steady_frames(VIDEO_FPS * SECONDS_OF_VIDEO, VIDEO_FPS):
        writer.write(frame)
    writer.release()
    images = folder / "images"
    images.mkdir()
    for i, frame in enumerate(steady_frames(FOLDER_IMAGES, 1.0)):
        cv2.imwrite(str(images / f"{i:03d}.jpg"), frame)
    return video, images


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(source: FrameSource, seconds: float, max_fps: float) -> dict[str, Any]:
    """The camera path for ``seconds`` of wall time; CPU over wall, frame counts."""
    capture = CameraCapture(lambda: source, CameraOptions(max_fps=max_fps, realtime=True))
    settings = CameraSettings()
    gate = FrameGate(settings.gate_threshold, settings.gate_interval_s or None)
    reasons: dict[str, int] = {}
    wall0, cpu0 = time.monotonic(), cpu_s()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds), contextlib.aclosing(capture.frames()) as frames:
            async for frame in frames:
                decision = gate.offer(frame.image, frame.at_s)
                if decision.send:
                    reasons[str(decision.reason)] = reasons.get(str(decision.reason), 0) + 1
    wall, cpu = time.monotonic() - wall0, cpu_s() - cpu0
    return {
        "seconds": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        "frames_grabbed": capture.grabbed,
        "frames_decoded": capture.delivered + capture.dropped,
        "frames_offered_to_gate": gate.offered,
        "frames_sent_on": gate.sent,
        "sent_by_reason": reasons,
    }


def gate_cost_us(repeat: int = 200) -> float:
    """Microseconds per ``FrameGate.offer`` of a 640×480 frame, measured alone."""
    frames = [f[..., ::-1].copy() for f in steady_frames(8, 1.0)]
    gate = FrameGate()
    gate.offer(frames[0], 0.0)
    t0 = time.perf_counter()
    for i in range(repeat):
        gate.offer(frames[i % len(frames)], float(i))
    return (time.perf_counter() - t0) / repeat * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time per configuration")
    parser.add_argument(
        "--config", nargs="+", choices=("video", "folder"), default=["video", "folder"]
    )
    parser.add_argument("--max-fps", type=float, default=CameraSettings().max_fps,
                        help="camera.max_fps (default: the setting's default)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        video, images = write_inputs(Path(tmp))
        sources: dict[str, FrameSource] = {
            "video": OpenCvSource(str(video), "file", (W, H), loop=True),
            "folder": FolderSource(images, (W, H), loop=True),
        }
        for name in args.config:
            r = {"config": name, "max_fps": args.max_fps, **asyncio.run(
                run(sources[name], args.seconds, args.max_fps))}  # fmt: skip
            results.append(r)
            print(json.dumps(r), flush=True)
    gate_us = gate_cost_us()
    print()
    print(
        f"{'config':8} {'s':>6} {'CPU % of a core':>16} {'grabbed':>8} {'decoded':>8} {'sent':>5}"
    )
    for r in results:
        cpu, grabbed = r["cpu_percent_of_one_core"], r["frames_grabbed"]
        print(f"{r['config']:8} {r['seconds']:6.1f} {cpu:16.2f} {grabbed:8d} "
              f"{r['frames_decoded']:8d} {r['frames_sent_on']:5d}")  # fmt: skip
    print(f"gate: {gate_us:.0f} µs per 640×480 frame (alone); bound: 5 % of one core")
    cv2 = load_cv2()
    report = {
        "benchmark": "camera_static",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "opencv": cv2.__version__,
        "frame": [W, H],
        "video_fps": VIDEO_FPS,
        "gate_us_per_frame": round(gate_us, 1),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
