#!/usr/bin/env python3
"""The E2B-shaped vision encoder (reference numpy kernels): milliseconds per frame.

    python benchmarks/vision_encoder.py [--sizes 256 512 768] [--repeat 3] [--threads N]

Random weights at the released shapes (timm ``mobilenetv5_300m_enc``, 294 M
tower parameters, bfloat16, ``edgeagent.engine.vision.presets``) plus
``embed_vision`` into the E2B text width. For each size: ``--repeat`` frames
after one warm-up, each a full ``encode`` of a 1280×720 RGB frame (resize,
tower, MSFA, projection), and the split of the last frame into resize, stem,
each stage, MSFA and projection. The multiply-accumulates of the tower are
counted from the config, so the table also gives the achieved GFLOP/s.
``--threads`` sets the BLAS threads (OpenBLAS/MKL/OMP variables) before
numpy loads. Prints a table; writes ``benchmarks/results/vision_encoder.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _set_threads(argv: list[str]) -> None:
    if "--threads" in argv:
        n = argv[argv.index("--threads") + 1]
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = n


_set_threads(sys.argv)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edgeagent.engine.presets import get_preset  # noqa: E402
from edgeagent.engine.vision import VisionConfig, VisionEncoder, VisionWeights  # noqa: E402
from edgeagent.engine.vision.blocks import block, msfa, stem  # noqa: E402
from edgeagent.engine.vision.config import BlockSpec  # noqa: E402
from edgeagent.engine.vision.preprocess import ImageConfig, preprocess  # noqa: E402
from edgeagent.engine.vision.presets import (  # noqa: E402
    random_vision_tensors,
    vision_config_dict,
)


def vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def block_macs(b: BlockSpec, h: int, w: int) -> tuple[int, int, int]:
    """Multiply-accumulates of one block on an ``h``×``w`` input; also the output size."""
    ho, wo = -(-h // b.stride), -(-w // b.stride)
    if b.kind == "er":
        macs = ho * wo * b.mid_chs * b.in_chs * b.kernel**2 + ho * wo * b.out_chs * b.mid_chs
        return macs, ho, wo
    if b.kind == "uir":
        macs = 0
        hs, ws = (h, w) if b.kernel else (ho, wo)  # stride on mid if present, else on start
        if b.start_kernel:
            macs += hs * ws * b.in_chs * b.start_kernel**2
        macs += hs * ws * b.mid_chs * b.in_chs
        if b.kernel:
            macs += ho * wo * b.mid_chs * b.kernel**2
        macs += ho * wo * b.out_chs * b.mid_chs
        return macs, ho, wo
    n, kd, c = h * w, b.key_dim, b.in_chs
    p = -(-h // b.kv_stride) * -(-w // b.kv_stride)
    down = 2 * p * c * b.kernel**2 if b.kv_stride > 1 else 0
    macs = n * c * b.num_heads * kd + down + 2 * p * c * kd
    macs += 2 * n * b.num_heads * p * kd + n * b.num_heads * kd * b.out_chs
    return macs, h, w


def tower_macs(cfg: VisionConfig, size: int) -> int:
    """Multiply-accumulates of the tower and MSFA for one ``size``² frame."""
    h = w = size // 2
    total = h * w * cfg.stem_size * 27
    for b in cfg.blocks:
        m, h, w = block_macs(b, h, w)
        total += m
    hi = size // cfg.feature_strides[cfg.msfa_stages[0]]
    mid = int(cfg.msfa_in_chs * cfg.msfa_expansion_ratio)
    return total + hi * hi * mid * (cfg.msfa_in_chs + cfg.hidden_size)


def breakdown(enc: VisionEncoder, frame: np.ndarray, size: int) -> dict[str, float]:
    """Milliseconds of each part of one frame (the encoder's own steps, timed one by one)."""
    cfg, w = enc.config, enc.weights
    parts: dict[str, float] = {}
    t = time.perf_counter()
    x = preprocess(frame, enc.image_config, size)
    parts["resize"], t = (time.perf_counter() - t) * 1e3, time.perf_counter()
    h = stem(x, w.stem)
    parts["stem"], t = (time.perf_counter() - t) * 1e3, time.perf_counter()
    feats, i = [], 0
    for s, stage in enumerate(cfg.stages, start=1):
        for spec in stage:
            h = block(h, spec, w.blocks[i])
            i += 1
        if s in cfg.msfa_stages:
            feats.append(h)
        parts[f"stage{s}"], t = (time.perf_counter() - t) * 1e3, time.perf_counter()
    soft = msfa(feats, cfg, w.msfa).reshape(-1, cfg.hidden_size)
    parts["msfa"], t = (time.perf_counter() - t) * 1e3, time.perf_counter()
    enc.embed(soft)
    parts["embed"] = (time.perf_counter() - t) * 1e3
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="BLAS threads (0: library default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "vision_encoder.json")
    args = parser.parse_args(argv)

    text = get_preset("e2b").config
    cfg = VisionConfig.from_dict(vision_config_dict(text), text.hidden_size, "e2b preset")
    t0 = time.perf_counter()
    tensors = random_vision_tensors(text, seed=0)
    weights = VisionWeights.from_tensors(tensors.__getitem__, cfg)
    n_params = sum(t.size for t in tensors.values())
    print(f"random E2B vision weights: {n_params / 1e6:.1f} M parameters (bf16) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    enc = VisionEncoder(cfg, weights, ImageConfig())
    frame = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)

    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        enc.encode(frame, size=size)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            out = enc.encode(frame, size=size)
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        assert out.shape == (256, text.hidden_size) and np.isfinite(out).all()
        gmacs = tower_macs(cfg, size) / 1e9
        row = {
            "size": size,
            "ms_per_frame_median": float(np.median(times)),
            "ms_per_frame_min": float(np.min(times)),
            "cpu_ms_per_frame_median": float(np.median(cpu)),
            "tower_gmacs": gmacs,
            "gflops_achieved": 2 * gmacs / (float(np.median(times)) / 1e3),
            "breakdown_ms": breakdown(enc, frame, size),
            "vm_hwm_mb": vm_hwm_mb(),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    print("\n| px | ms/frame (median, min) | CPU ms | GMAC | GFLOP/s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['ms_per_frame_median']:.0f}, {r['ms_per_frame_min']:.0f} "
              f"| {r['cpu_ms_per_frame_median']:.0f} | {r['tower_gmacs']:.1f} "
              f"| {r['gflops_achieved']:.0f} | {r['vm_hwm_mb']:.0f} |")  # fmt: skip
    print("\nbreakdown (ms): " + "; ".join(
        f"{r['size']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["breakdown_ms"].items())
        for r in rows))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "vision_encoder",
        "kernels": "reference (numpy float32, bf16 weights widened at use)",
        "threads": args.threads or os.cpu_count(),
        "cpus": os.cpu_count(),
        "tower_parameters_m": n_params / 1e6,
        "frame": "1280x720 uint8 RGB noise, resized per size",
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
