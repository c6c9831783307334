"""Image preprocessing as Gemma 3n's processor does it, in numpy (no PIL, no OpenCV).

transformers 5.24 maps ``gemma3n`` to ``SiglipImageProcessor``; the released
``preprocessor_config.json`` sets ``size`` 768×768, ``resample`` 2 (bilinear),
``rescale_factor`` 1/255 and ``do_normalize: false`` (mean/std 0.5 are
listed but not applied: the tower sees pixels in [0, 1]). Those fields are
read from the checkpoint's file when it has one; the released values are the
defaults.

:func:`resize` is Pillow's resampling (``Image.resize`` with ``BILINEAR`` or
``BICUBIC``: antialiased, support scaled by the downscale factor, 22-bit
fixed-point coefficients, horizontal pass then vertical, each rounded and
clipped to uint8), reproduced so the engine needs no imaging library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.errors import VisionError
from edgeagent.jsonfile import read_json_object

PREPROCESSOR_FILE = "preprocessor_config.json"
_PRECISION_BITS = 22  # Pillow: 32 − 8 − 2
BILINEAR, BICUBIC = 2, 3  # PIL.Image.Resampling values, as stored in ``resample``


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTERS: dict[int, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    BILINEAR: (_triangle, 1.0),
    BICUBIC: (_cubic, 2.0),
}


@dataclass(frozen=True)
class ImageConfig:
    """The processor's image settings (``size`` in pixels, square)."""

    size: int = 768
    resample: int = BILINEAR
    do_rescale: bool = True
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = False
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> ImageConfig:
        """Read the image fields of a ``preprocessor_config.json``; absent ones keep defaults."""
        d = d.get("image_processor", d) if isinstance(d.get("image_processor"), Mapping) else d
        kw: dict[str, Any] = {}
        try:
            size = d.get("size")
            if isinstance(size, Mapping) and "height" in size:
                if size["height"] != size.get("width"):
                    raise ValueError(f"size {dict(size)} is not square")
                kw["size"] = int(size["height"])
            if d.get("resample") is not None:
                kw["resample"] = int(d["resample"])
            for name in ("do_rescale", "do_normalize"):
                if d.get(name) is not None:
                    kw[name] = bool(d[name])
            if d.get("rescale_factor") is not None:
                kw["rescale_factor"] = float(d["rescale_factor"])
            for name in ("image_mean", "image_std"):
                v = d.get(name)
                if v is not None:
                    vals = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
                    if len(vals) != 3:
                        raise ValueError(f"{name} must have 3 values")
                    kw[name] = (vals[0], vals[1], vals[2])
        except (TypeError, ValueError) as exc:
            raise VisionError(f"{source}: bad image preprocessing field: {exc}") from exc
        cfg = cls(**kw)
        if cfg.resample not in _FILTERS:
            raise VisionError(f"{source}: resample {cfg.resample} unsupported (2 or 3)")
        return cfg


def load_image_config(directory: str | Path) -> ImageConfig:
    """The checkpoint's image preprocessing, or the released defaults without a file."""
    path = Path(directory) / PREPROCESSOR_FILE
    if not path.is_file():
        return ImageConfig()
    raw = read_json_object(path, VisionError, "preprocessor config")
    return ImageConfig.from_dict(raw, str(path))


def check_image(image: object) -> np.ndarray:
    """``image`` as a validated ``[H, W, 3]`` uint8 RGB array, else :class:`VisionError`."""
    if not isinstance(image, np.ndarray):
        raise VisionError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise VisionError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise VisionError(f"image must be [H, W, 3] RGB, got shape {list(image.shape)}")
    return image


def _coefficients(n_in: int, n_out: int, resample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs``: first source index ``[out]`` and fixed-point
    weights ``[out, taps]`` (int64, zero past each row's window)."""
    fn, support = _FILTERS[resample]
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support *= filterscale
    taps = math.ceil(support) * 2 + 1
    centers = (np.arange(n_out) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # int(): toward zero
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    t = np.arange(taps)
    x = xmin[:, None] + t  # [out, taps]
    w = fn((x - centers[:, None] + 0.5) / filterscale)
    w = np.where(x < xmax[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    fixed = np.where(w < 0, w * (1 << _PRECISION_BITS) - 0.5, w * (1 << _PRECISION_BITS) + 0.5)
    return xmin, np.trunc(fixed).astype(np.int64)


def _resample_axis(x: np.ndarray, n_out: int, axis: int, resample: int) -> np.ndarray:
    """One pass along ``axis`` of a uint8 ``[H, W, 3]`` array; rounded and clipped to uint8."""
    n_in = x.shape[axis]
    xmin, kk = _coefficients(n_in, n_out, resample)
    src = np.moveaxis(x, axis, 0).astype(np.int64)  # [n_in, other, 3]
    acc = np.full((n_out, *src.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    for t in range(kk.shape[1]):
        idx = np.minimum(xmin + t, n_in - 1)
        acc += src[idx] * kk[:, t, None, None]  # [n_out, other, 3]
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def resize(image: np.ndarray, height: int, width: int, resample: int = BILINEAR) -> np.ndarray:
    """Pillow-equal resize of a uint8 ``[H, W, 3]`` image to ``[height, width, 3]`` uint8."""
    if resample not in _FILTERS:
        raise VisionError(f"resample {resample} unsupported (2 bilinear, 3 bicubic)")
    out = check_image(image)
    if out.shape[1] != width:
        out = _resample_axis(out, width, 1, resample)
    if out.shape[0] != height:
        out = _resample_axis(out, height, 0, resample)
    return out


def preprocess(image: np.ndarray, cfg: ImageConfig, size: int | None = None) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> the tower's input ``[S, S, 3]`` float32 (``S`` = ``size``
    or the configured size): resize, rescale, optionally normalize."""
    s = size or cfg.size
    pixels = resize(image, s, s, cfg.resample).astype(np.float32)  # [S, S, 3]
    if cfg.do_rescale:
        pixels *= np.float32(cfg.rescale_factor)
    if cfg.do_normalize:
        pixels -= np.asarray(cfg.image_mean, dtype=np.float32)
        pixels /= np.asarray(cfg.image_std, dtype=np.float32)
    return pixels
