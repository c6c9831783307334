#!/usr/bin/env python3
"""The E2B-shaped vision encoder, reference and quantized kernels: milliseconds per frame.

    python benchmarks/vision_encoder.py [--sizes 256 512 768] [--repeat 3] [--threads N]
        [--kernels reference quantized] [--bits 8] [--block-size 64] [--store DIR]

Random weights at the released shapes (timm ``mobilenetv5_300m_enc``, 294 M
tower parameters, bfloat16, ``edgeagent.engine.vision.presets``) plus
``embed_vision`` into the E2B text width. For each size: ``--repeat`` frames
after one warm-up, each a full ``encode`` of a 1280×720 RGB frame (resize,
tower, MSFA, projection), and the split of the last frame into resize, stem,
each stage, MSFA and projection. The multiply-accumulates of the tower are
counted from the config, so the table also gives the achieved GFLOP/s.
``--threads`` sets the BLAS threads (OpenBLAS/MKL/OMP variables) before
numpy loads, and ONNX Runtime's pool.

The quantized kernels (``edgeagent.engine.vision.quantized``: one ONNX Runtime
graph, ``MatMulNBits`` ``--bits`` weights with int8 activations) run on the
same weights, quantized into ``--store`` (a temporary directory by default;
the time to write it and build the session is reported). Each size runs
both kernels on the same frame in the same process, so the quantized /
reference ratio shares the machine's load; the cosine between their outputs
(mean and minimum over the 256 tokens) is reported beside it. Peak RSS
(VmHWM) is reset before each kernel's runs (``/proc/self/clear_refs``) and
read after them; the resident set before them (both weight sets loaded) is
in the JSON. Prints a table; writes ``benchmarks/results/vision_encoder.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
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
from edgeagent.engine.vision.quantized import (  # noqa: E402
    DEFAULT_BLOCK_SIZE,
    quantized_vision_encoder,
)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB."""
    return _status_mb("VmHWM")


def reset_peak() -> float:
    """Reset VmHWM to the current resident set (Linux ``clear_refs`` 5); return that, MB."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def time_frames(enc: VisionEncoder, frame: np.ndarray, size: int, repeat: int) -> dict[str, Any]:
    """Median/min wall and CPU ms of ``repeat`` encodes after one warm-up; the last output."""
    rss = reset_peak()
    out = enc.encode(frame, size=size)  # warm-up
    times, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = enc.encode(frame, size=size)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    assert np.isfinite(out).all()
    return {
        "ms_per_frame_median": float(np.median(times)),
        "ms_per_frame_min": float(np.min(times)),
        "cpu_ms_per_frame_median": float(np.median(cpu)),
        "rss_before_mb": rss,
        "vm_hwm_mb": vm_hwm_mb(),
        "out": out,
    }


def cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Per-token cosine (mean, min) of two ``[k, H]`` outputs, and their largest difference."""
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.mean()), float(cos.min()), float(np.abs(a - b).max())


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="BLAS threads (0: library default)")
    parser.add_argument(
        "--kernels", nargs="+", choices=["reference", "quantized"],
        default=["reference", "quantized"],
    )  # fmt: skip
    parser.add_argument("--bits", type=int, default=8, choices=[4, 8])
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--store", type=Path, default=None, help="quantized store (default: tmp)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the reference split")
    parser.add_argument("--out", type=Path, default=RESULTS / "vision_encoder.json")
    return parser.parse_args(argv)


def build_encoders(
    args: argparse.Namespace, cfg: VisionConfig, weights: VisionWeights
) -> tuple[dict[str, VisionEncoder], float]:
    """The encoders asked for; also the seconds the quantized store and session took."""
    encoders: dict[str, VisionEncoder] = {}
    if "reference" in args.kernels:
        encoders["reference"] = VisionEncoder(cfg, weights, ImageConfig())
    build_s = float("nan")
    if "quantized" in args.kernels:
        rss = reset_peak()
        with tempfile.TemporaryDirectory(prefix="vision-q") as tmp:
            store = args.store or Path(tmp) / "store"
            t0 = time.perf_counter()
            encoders["quantized"] = quantized_vision_encoder(
                cfg, weights, ImageConfig(), store, args.bits, args.block_size, args.threads
            )
            build_s = time.perf_counter() - t0
        peak = vm_hwm_mb()
        print(f"quantized: {encoders['quantized'].kernels}; store + session in {build_s:.1f} s; "
              f"RSS {rss:.0f} MB before, {reset_peak():.0f} MB after (peak {peak:.0f})",
              flush=True)  # fmt: skip
    return encoders, build_s


def measure(
    args: argparse.Namespace, cfg: VisionConfig, encoders: dict[str, VisionEncoder], width: int
) -> list[dict[str, Any]]:
    """One row per size: each kernel's times and peak RSS, their ratio and agreement."""
    frame = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        gmacs = tower_macs(cfg, size) / 1e9
        row: dict[str, Any] = {"size": size, "tower_gmacs": gmacs}
        outs = {}
        for name, enc in encoders.items():
            r = time_frames(enc, frame, size, args.repeat)
            outs[name] = r.pop("out")
            assert outs[name].shape == (256, width)
            r["gflops_achieved"] = 2 * gmacs / (r["ms_per_frame_median"] / 1e3)
            row[name] = r
        if len(outs) == 2:
            mean, low, diff = cosines(outs["reference"], outs["quantized"])
            row["ratio_quantized_over_reference"] = (
                row["quantized"]["ms_per_frame_median"] / row["reference"]["ms_per_frame_median"]
            )
            row["cosine_mean"], row["cosine_min"], row["max_abs_diff"] = mean, low, diff
        if "reference" in encoders and not args.no_breakdown:
            row["reference"]["breakdown_ms"] = breakdown(encoders["reference"], frame, size)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _cell(r: dict[str, Any], name: str) -> str:
    k = r.get(name)
    if k is None:
        return "– | –"
    return f"{k['ms_per_frame_median']:.0f} ({k['ms_per_frame_min']:.0f}) | {k['vm_hwm_mb']:.0f}"


def print_table(rows: list[dict[str, Any]], breakdowns: bool) -> None:
    print("\n| px | GMAC | reference ms (min) | ref. peak RSS MB | quantized ms (min) "
          "| quant. peak RSS MB | quant./ref. | cosine mean (min) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r.get("ratio_quantized_over_reference")
        cos = f"{r['cosine_mean']:.4f} ({r['cosine_min']:.4f})" if ratio else "–"
        rel = f"{ratio:.3f}" if ratio else "–"
        print(f"| {r['size']} | {r['tower_gmacs']:.1f} | {_cell(r, 'reference')} "
              f"| {_cell(r, 'quantized')} | {rel} | {cos} |")  # fmt: skip
    if breakdowns:
        print("\nreference breakdown (ms): " + "; ".join(
            f"{r['size']}: " + ", ".join(
                f"{k} {v:.0f}" for k, v in r["reference"]["breakdown_ms"].items())
            for r in rows))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = get_preset("e2b").config
    cfg = VisionConfig.from_dict(vision_config_dict(text), text.hidden_size, "e2b preset")
    t0 = time.perf_counter()
    tensors = random_vision_tensors(text, seed=0)
    weights = VisionWeights.from_tensors(tensors.__getitem__, cfg)
    n_params = sum(t.size for t in tensors.values())
    print(f"random E2B vision weights: {n_params / 1e6:.1f} M parameters (bf16) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    encoders, build_s = build_encoders(args, cfg, weights)
    rows = measure(args, cfg, encoders, text.hidden_size)
    print_table(rows, "reference" in encoders and not args.no_breakdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "vision_encoder",
        "kernels": {name: enc.kernels for name, enc in encoders.items()},
        "quantized_build_s": build_s,
        "threads": args.threads or os.cpu_count(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "tower_parameters_m": n_params / 1e6,
        "frame": "1280x720 uint8 RGB noise, resized per size",
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
