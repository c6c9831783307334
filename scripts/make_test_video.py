#!/usr/bin/env python3
"""Make the frame-gate test video: four steady shots separated by three hard cuts.

Deterministic (numpy's ``default_rng`` with fixed seeds), written with OpenCV's
``VideoWriter`` as Motion JPEG in an AVI (intra-only: every frame reads back
on its own, and OpenCV headless writes and reads it everywhere). Needs
``opencv-python-headless`` (the ``camera`` extra).

    python scripts/make_test_video.py            # tests/fixtures/video/scene_cuts.{avi,json}
    python scripts/make_test_video.py --out DIR

Each shot is a textured scene (smooth coloured background, rectangles and
discs) filmed like a cheap camera would: Gaussian sensor noise (sigma 4 grey
levels, fresh every frame), slow brightness flicker (gain ±8 % and offset
±6 levels, periods 1.7 s and 2.9 s), hand-held shake (the crop window moves
by up to ±2 pixels) and a small ball crossing the picture. A hard cut starts
a new scene. The ``.json`` beside the video holds the truth: size, frame
rate, frame count and the index of the first frame of every shot after the
first (the cuts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "video"
NAME = "scene_cuts"
WIDTH, HEIGHT, FPS = 160, 120, 10
SHOT_FRAMES = (30, 30, 30, 30)  # 12 s at 10 fps
MARGIN = 4  # the scene is drawn this much larger on every side, for the shake
NOISE_SIGMA = 4.0
JPEG_QUALITY = 60


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled. [h, w]."""
    grid = rng.random((cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy  # type: ignore[no-any-return]


def make_scene(seed: int) -> np.ndarray:
    """One still scene, float RGB in [0, 255], ``[HEIGHT + 2·MARGIN, WIDTH + 2·MARGIN, 3]``."""
    rng = np.random.default_rng(seed)
    h, w = HEIGHT + 2 * MARGIN, WIDTH + 2 * MARGIN
    base = rng.uniform(40, 200, size=3)
    tint = rng.uniform(-80, 80, size=3)
    field = _smooth_field(rng, h, w, cells=int(rng.integers(2, 5)))
    img = base[None, None, :] + tint[None, None, :] * (field[:, :, None] - 0.5) * 2
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(4, 8))):
        colour = rng.uniform(0, 255, size=3)
        if rng.random() < 0.5:
            y0, x0 = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
            y1, x1 = y0 + int(rng.integers(12, h // 2)), x0 + int(rng.integers(12, w // 2))
            img[y0:y1, x0:x1] = colour
        else:
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, h / 3)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
    return np.clip(img, 0, 255)


def film(scene: np.ndarray, frames: int, t0: float, rng: np.random.Generator) -> list[np.ndarray]:
    """A steady shot of ``scene``: shake, moving ball, flicker, noise. uint8 RGB frames."""
    out = []
    shake = np.zeros(2)
    ball_y = rng.uniform(0.3, 0.7) * HEIGHT
    ball_colour = rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for i in range(frames):
        t = t0 + i / FPS
        shake = np.clip(0.6 * shake + rng.normal(0, 0.8, size=2), -MARGIN / 2, MARGIN / 2)
        dy, dx = np.round(shake).astype(int) + MARGIN
        img = scene[dy : dy + HEIGHT, dx : dx + WIDTH].copy()
        ball_x = (i / frames) * WIDTH * 0.8 + 0.1 * WIDTH  # crosses most of the picture
        img[(yy - ball_y) ** 2 + (xx - ball_x) ** 2 <= 16] = ball_colour
        gain = 1.0 + 0.08 * np.sin(2 * np.pi * t / 1.7)
        offset = 6.0 * np.sin(2 * np.pi * t / 2.9)
        img = img * gain + offset + rng.normal(0, NOISE_SIGMA, size=img.shape)
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def make_frames() -> tuple[list[np.ndarray], list[int]]:
    """All frames (uint8 RGB ``[HEIGHT, WIDTH, 3]``) and the cut indices."""
    rng = np.random.default_rng(2026)
    frames: list[np.ndarray] = []
    cuts: list[int] = []
    for shot, count in enumerate(SHOT_FRAMES):
        if shot:
            cuts.append(len(frames))
        frames += film(make_scene(100 + shot), count, len(frames) / FPS, rng)
    return frames, cuts


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """Motion JPEG in AVI at ``FPS``; fails loudly if OpenCV cannot write it."""
    import cv2  # noqa: PLC0415 - the camera extra

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write MJPG to {path}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, JPEG_QUALITY)
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    frames, cuts = make_frames()
    video = args.out / f"{NAME}.avi"
    write_video(video, frames)
    truth: dict[str, Any] = {
        "video": video.name,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "frames": len(frames),
        "cuts": cuts,
        "shots": [
            [start, end] for start, end in zip([0, *cuts], [*cuts, len(frames)], strict=True)
        ],
        "noise_sigma": NOISE_SIGMA,
        "made_by": "scripts/make_test_video.py",
    }
    (args.out / f"{NAME}.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    print(f"{video}: {len(frames)} frames, cuts at {cuts}, {video.stat().st_size} bytes")


if __name__ == "__main__":
    main()
