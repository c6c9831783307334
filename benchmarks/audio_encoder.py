#!/usr/bin/env python3
"""The E2B-shaped audio encoder streaming 160 ms blocks: real-time factor and token latency.

    python benchmarks/audio_encoder.py [--kernels quantized --bits 4 --block-size 256]
        [--seconds 10] [--threads 1] [--repeat 3] [--baseline-block-size 64]

Random weights at the released shapes (681 M encoder parameters, bfloat16,
``edgeagent.engine.audio.presets``), quantized with the engine's
``MatMulNBits`` store format into ``benchmarks/results/audio-e2b-store-q*b*/``
(made once, reused). Speech: the committed clips, looped to ``--seconds``.
The stream runs ``--repeat`` times; with ``--baseline-block-size`` a second
quantized copy at that block size runs in turn with it, in the same process,
so that the ratio of the two is measured under the same machine load.

Audio "arrives" in real time in ``--block-ms`` blocks; each block is pushed
as soon as it has arrived and the previous push has finished. Reported:

- real-time factor: compute time / audio time (wall clock), and the CPU
  time of the process per audio second (on one thread, what the real-time
  factor would be on an otherwise idle core);
- per token: latency from the moment the last sample it depends on was
  captured to its return from ``push`` (the look-ahead is inside the
  block that brings that sample), and from the start of its 160 ms window;
- agreement with the reference kernels on the first seconds (cosine).

Prints a table; writes ``benchmarks/results/audio_encoder_*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeagent.engine.audio import AudioEncoder, reference_audio_kernels
from edgeagent.engine.audio.config import AudioConfig
from edgeagent.engine.audio.presets import audio_config_dict, random_audio_tensors
from edgeagent.engine.audio.quantized import DEFAULT_BLOCK_SIZE, quantized_audio_kernels
from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.engine.presets import get_preset
from tests.audio.conftest import read_clip

RESULTS = Path(__file__).resolve().parent / "results"


def e2b_weights() -> tuple[AudioConfig, AudioWeights]:
    text = get_preset("e2b").config
    cfg = AudioConfig.from_dict(audio_config_dict(text), text.hidden_size, "e2b preset")
    t0 = time.perf_counter()
    tensors = random_audio_tensors(text, seed=0)
    weights = AudioWeights.from_tensors(tensors.__getitem__, cfg)
    print(f"random E2B audio weights: {sum(t.size for t in tensors.values()) / 1e6:.0f} M "
          f"parameters in {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return cfg, weights


def e2b_encoder(
    kernels: str, bits: int, threads: int, block_size: int = DEFAULT_BLOCK_SIZE,
    loaded: tuple[AudioConfig, AudioWeights] | None = None,
) -> tuple[AudioEncoder, AudioWeights]:  # fmt: skip
    cfg, weights = loaded or e2b_weights()
    from edgeagent.dsp.features import MelConfig  # noqa: PLC0415

    if kernels == "reference":
        return AudioEncoder(cfg, weights, reference_audio_kernels(weights), MelConfig()), weights
    t0 = time.perf_counter()
    store = RESULTS / f"audio-e2b-store-q{bits}b{block_size}"
    k = quantized_audio_kernels(
        weights, store, bits=bits, block_size=block_size, threads=threads, source="e2b seed 0"
    )
    print(f"quantized kernels ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return AudioEncoder(cfg, weights, k, MelConfig()), weights


def speech(seconds: float) -> np.ndarray:
    clips = np.concatenate([read_clip(c) for c in ("two_clean", "two_pink_10db", "one_white_5db")])
    return np.resize(clips, round(seconds * 16000)).astype(np.float32)


def stream(enc: AudioEncoder, pcm: np.ndarray, block: int) -> dict[str, Any]:
    """Real-time pacing, simulated: block b has fully arrived at (b+1)·block samples."""
    s = enc.stream()
    spt, look = enc.samples_per_token, enc.lookahead_samples
    clock, compute, returned = 0.0, [], []  # seconds on the audio clock
    cpu0 = time.process_time()
    for start in range(0, len(pcm), block):
        arrived = min(len(pcm), start + block) / 16000
        clock = max(clock, arrived)
        t0 = time.perf_counter()
        tokens = s.push(pcm[start : start + block])
        dt = time.perf_counter() - t0
        compute.append(dt)
        clock += dt
        first = s.tokens - len(tokens)
        returned += [(first + i, clock) for i in range(len(tokens))]
    t0 = time.perf_counter()
    s.flush()
    compute.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    dependency = [(k * spt + look) / 16000 for k, _ in returned]  # last sample it needs
    after_dependency = [t - d for (_, t), d in zip(returned, dependency, strict=True)]
    after_window_start = [t - k * spt / 16000 for k, t in returned]
    audio_s = len(pcm) / 16000
    return {
        "audio_s": audio_s,
        "block_ms": 1000 * block / 16000,
        "pushes": len(compute) - 1,
        "compute_s": round(sum(compute), 3),
        "real_time_factor": round(sum(compute) / audio_s, 4),
        "cpu_real_time_factor": round(cpu / audio_s, 4),
        "cpu_s": round(cpu, 3),  # all threads
        "cpu_cores_used": round(cpu / sum(compute), 2),
        "push_ms_median": round(1000 * float(np.median(compute[:-1])), 2),
        "push_ms_p95": round(1000 * float(np.percentile(compute[:-1], 95)), 2),
        "tokens": s.tokens,
        "latency_after_dependency_ms_median": round(1000 * float(np.median(after_dependency)), 1),
        "latency_after_dependency_ms_max": round(1000 * max(after_dependency), 1),
        "latency_after_window_start_ms_median": round(
            1000 * float(np.median(after_window_start)), 1
        ),
        "latency_after_window_start_ms_max": round(1000 * max(after_window_start), 1),
        "bound_ms": round(1000 * (block + look) / 16000, 1),
    }


def compare(enc: AudioEncoder, weights: AudioWeights, seconds: float, pcm: np.ndarray) -> Any:
    """Cosine of the quantized encoder's tokens with the reference kernels' on ``seconds``."""
    ref = AudioEncoder(enc.config, weights, reference_audio_kernels(weights), enc.logmel.config)
    clip = pcm[: round(seconds * 16000)]
    t0 = time.perf_counter()
    a = ref.encode(clip)
    ref_s = time.perf_counter() - t0
    b = enc.encode(clip)
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return {
        "seconds": seconds,
        "cosine_min": round(float(cos.min()), 4),
        "cosine_mean": round(float(cos.mean()), 4),
        "reference_real_time_factor": round(ref_s / seconds, 2),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run (by real-time factor), with the range over all runs."""
    ordered = sorted(runs, key=lambda r: r["real_time_factor"])
    out = dict(ordered[len(ordered) // 2])
    for key in ("real_time_factor", "cpu_real_time_factor", "push_ms_median"):
        values = [r[key] for r in runs]
        out[key + "_range"] = [min(values), max(values)]
    out["runs"] = runs
    return out


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| kernels | real-time factor, median (range) | CPU s per audio s (range) "
        "| push median / p95 ms | token latency from window start, median / max ms |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        rtf, cpu = r["real_time_factor_range"], r["cpu_real_time_factor_range"]
        lines.append(
            f"| {name} | {r['real_time_factor']:.3f} ({rtf[0]:.3f}-{rtf[1]:.3f}) "
            f"| {r['cpu_real_time_factor']:.3f} ({cpu[0]:.3f}-{cpu[1]:.3f}) "
            f"| {r['push_ms_median']:.0f} / {r['push_ms_p95']:.0f} "
            f"| {r['latency_after_window_start_ms_median']:.0f} "
            f"/ {r['latency_after_window_start_ms_max']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kernels", choices=("quantized", "reference"), default="quantized")
    p.add_argument("--bits", type=int, default=4, choices=(4, 8))
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                   help="weights per quantization scale")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="0: every core")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--block-ms", type=int, default=160)
    p.add_argument("--repeat", type=int, default=3, help="streams per configuration")
    p.add_argument(
        "--baseline-block-size",
        type=int,
        default=0,
        help="also stream a copy quantized in blocks of this size, in turn (0: no)",
    )
    p.add_argument("--compare-seconds", type=float, default=2.0,
                   help="also run the reference kernels on this much audio (0: skip)")  # fmt: skip
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    load0 = os.getloadavg()[0]
    loaded = e2b_weights()
    enc, weights = e2b_encoder(args.kernels, args.bits, args.threads, args.block_size, loaded)
    label = f" b{args.block_size}" if args.kernels == "quantized" else ""
    encoders = {enc.kernels.name + label: enc}
    if args.baseline_block_size and args.kernels == "quantized":
        base, _ = e2b_encoder(
            args.kernels, args.bits, args.threads, args.baseline_block_size, loaded
        )
        encoders[f"{base.kernels.name} b{args.baseline_block_size} (baseline)"] = base
    pcm = speech(args.seconds)
    for e in encoders.values():
        e.encode(pcm[:16000])  # warm up (sessions, caches)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in encoders}
    for _ in range(args.repeat):
        for name, e in encoders.items():  # in turn: both see the same load
            runs[name].append(stream(e, pcm, args.block_ms * 16))
    rows = {name: summary(r) for name, r in runs.items()}
    result: dict[str, Any] = {
        "threads": args.threads or os.cpu_count(),
        "block_ms": args.block_ms,
        "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "results": rows,
    }
    if len(rows) == 2:
        first, second = rows.values()
        result["ratio_to_baseline"] = {
            key: round(first[key] / second[key], 3)
            for key in ("real_time_factor", "cpu_real_time_factor", "push_ms_median")
        }
    if args.compare_seconds and args.kernels == "quantized":
        for name, e in encoders.items():
            rows[name]["vs_reference"] = compare(e, weights, args.compare_seconds, pcm)
    print(table(rows))
    if "ratio_to_baseline" in result:
        print("ratio to baseline (median runs):", result["ratio_to_baseline"])
    for name, r in rows.items():
        if "vs_reference" in r:
            print(f"{name}: vs reference {r['vs_reference']}")
    print(f"load average (1 min) at start / end: {result['load_average_1min']}")
    bits = f"{args.bits}b{args.block_size}" if args.kernels == "quantized" else ""
    name = f"audio_encoder_{args.kernels}{bits}_t{result['threads']}_b{args.block_ms}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
