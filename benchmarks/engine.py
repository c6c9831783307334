#!/usr/bin/env python3
"""edgeagent quantized vs edgeagent reference vs transformers, on the same checkpoints, in one run.

For each preset (default: small, e2b) this makes the random checkpoint under
``--root`` if missing (``edgeagent model init``) and its 4-bit copy, then runs
each configuration in a fresh process (peak RSS is per process):

- ``edgeagent bench --kernels quantized --ceilings``: speed, memory, and the
  ceilings measured in the same process — the kernels' own time for one
  token's projections and LM head, the same at 128 tokens (GEMM throughput),
  and the weight-streaming roofline (weight bytes per token ÷ a BLAS
  streaming-read bandwidth);
- ``edgeagent bench --kernels reference``;
- ``benchmarks/engine_transformers.py`` in the scratch venv ``--oracle``
  (float32 where it fits in memory, else bfloat16).

Prints a table of ratios and writes everything to ``--out`` (JSON).

    .venv/bin/python benchmarks/engine.py --out benchmarks/results/engine.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FP32_LIMIT_PARAMS = 2.0e9  # above this, transformers runs in bfloat16 (fp32 would not fit 24 GiB)


def log(message: str) -> None:
    print(f"engine-bench: {message}", file=sys.stderr, flush=True)


def edgeagent(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeagent", *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
    )  # fmt: skip


def last_json(done: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ensure_checkpoint(root: Path, preset: str, bits: int, block: int) -> Path:
    path = root / preset
    if not (path / "config.json").is_file():
        log(f"writing the {preset} checkpoint to {path}")
        last = edgeagent("model", "init", "--preset", preset, "--out", str(path))
        if last.returncode != 0:
            raise SystemExit(last.stderr)
    if not (path / f"edgeagent-q{bits}b{block}" / "manifest.json").is_file():
        log(f"quantizing {path} ({bits}-bit, block {block})")
        last = edgeagent(
            "model", "quantize", str(path), "--bits", str(bits), "--block-size", str(block)
        )
        if last.returncode != 0:
            raise SystemExit(last.stderr)
    return path


def stream_read_gb_s(threads: int) -> float | None:
    """Streaming-read bandwidth from ``stream_read.c`` (compiled here), or None without a C
    compiler; the quantized run's roofline uses it instead of its own BLAS probe."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "stream_read"
        src = REPO / "benchmarks" / "stream_read.c"
        subprocess.run([compiler, "-O2", "-pthread", "-o", str(exe), str(src)], check=True)
        runs = [
            subprocess.run(
                [str(exe), "1024", str(threads), "5"], capture_output=True, text=True, check=False
            )
            for _ in range(3)
        ]
    return max(float(r.stdout.split()[1]) for r in runs if r.returncode == 0)


def parameters(path: Path) -> int:
    done = edgeagent("model", "info", str(path), "--json")
    return int(last_json(done, "model info")["text_parameters"])


def run_preset(args: argparse.Namespace, preset: str) -> dict[str, Any]:
    path = ensure_checkpoint(args.root, preset, args.bits, args.block_size)
    common = ["--model", str(path), "--prompt-tokens", str(args.prompt_tokens), "--json"]
    common += ["--threads", str(args.threads)]
    out: dict[str, Any] = {"preset": preset, "path": str(path)}
    log(f"{preset}: edgeagent quantized")
    bandwidth = stream_read_gb_s(args.threads)
    out["stream_read_c_gb_s"] = bandwidth
    extra = ["--bandwidth", f"{bandwidth:.3f}"] if bandwidth else []
    out["quantized"] = last_json(
        edgeagent("bench", *common, "--kernels", "quantized", "--bits", str(args.bits),
                  "--block-size", str(args.block_size), "--decode-tokens", str(args.decode_tokens),
                  "--kv", args.kv, "--ceilings", *extra),
        "edgeagent bench (quantized)",
    )  # fmt: skip
    log(f"{preset}: edgeagent reference")
    out["reference"] = last_json(
        edgeagent("bench", *common, "--kernels", "reference",
                  "--decode-tokens", str(args.reference_decode_tokens)),
        "edgeagent bench (reference)",
    )  # fmt: skip
    if args.oracle:
        dtype = "float32" if parameters(path) <= FP32_LIMIT_PARAMS else "bfloat16"
        log(f"{preset}: transformers ({dtype})")
        done = subprocess.run(
            [str(args.oracle), str(REPO / "benchmarks" / "engine_transformers.py"),
             "--model", str(path), "--dtype", dtype, "--threads", str(args.threads),
             "--prompt-tokens", str(args.prompt_tokens),
             "--decode-tokens", str(args.reference_decode_tokens)],
            capture_output=True, text=True, timeout=7200, check=False,
        )  # fmt: skip
        out["transformers"] = last_json(done, "transformers")
    return out


def ratios(run: dict[str, Any]) -> dict[str, float]:
    q = run["quantized"]
    r: dict[str, float] = {
        "decode_overhead (decode / projections alone, ≤1.15)": q["decode_overhead"],
        "roofline_fraction (streaming floor / decode)": q["roofline_fraction"],
        "prefill_fraction_of_gemm (≥0.70)": q["prefill_fraction_of_gemm"],
        "decode vs reference (×)": q["decode_tok_s"] / run["reference"]["decode_tok_s"],
        "prefill vs reference (×)": q["prefill_tok_s"] / run["reference"]["prefill_tok_s"],
        "peak RSS vs reference": q["peak_rss"] / run["reference"]["peak_rss"],
    }
    if "transformers" in run:
        t = run["transformers"]
        r["decode vs transformers (×, ≥3)"] = q["decode_tok_s"] / t["decode_tok_s"]
        r["prefill vs transformers (×)"] = q["prefill_tok_s"] / t["prefill_tok_s"]
        r["peak RSS vs transformers"] = q["peak_rss"] / t["peak_rss"]
    return r


def print_table(runs: list[dict[str, Any]]) -> None:
    rows = [
        ("load s", "load_s", 1.0),
        ("TTFT s (128-token prompt)", "ttft_s", 1.0),
        ("prefill tok/s", "prefill_tok_s", 1.0),
        ("decode tok/s", "decode_tok_s", 1.0),
        ("peak RSS GB (VmHWM)", "peak_rss", 1e-9),
    ]
    for run in runs:
        print(f"\n## {run['preset']}  ({run['path']})")
        systems = [k for k in ("quantized", "reference", "transformers") if k in run]
        print(f"{'':34}" + "".join(f"{s:>16}" for s in systems))
        for label, key, scale in rows:
            cells = "".join(f"{run[s][key] * scale:>16.3f}" for s in systems)
            print(f"{label:34}{cells}")
        q = run["quantized"]
        print(
            f"ceilings: projections alone {q['projections_ms_per_token']:.1f} ms/token, "
            f"roofline {q['roofline_ms_per_token']:.1f} ms/token "
            f"({q['weight_bytes_per_token'] / 1e9:.3f} GB at {q['stream_read_gb_s']:.1f} GB/s), "
            f"GEMM M=128 {q['projections_128_gflops']:.0f} GFLOP/s"
        )
        for label, value in ratios(run).items():
            print(f"  {label:52} {value:8.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["small", "e2b"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/edgeagent-bench"))
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--reference-decode-tokens", type=int, default=8)
    parser.add_argument("--kv", default="fp32", help="KV cache of the quantized run")
    parser.add_argument("--oracle", type=Path, default=Path("/tmp/oracle/bin/python"),
                        help="python of a venv with torch + transformers ('' to skip)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine.json")
    args = parser.parse_args()
    if args.oracle and not Path(args.oracle).exists():
        log(f"{args.oracle} not found: skipping transformers")
        args.oracle = None
    started = time.time()
    runs = [run_preset(args, preset) for preset in args.presets]
    print_table(runs)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "ratios": {run["preset"]: ratios(run) for run in runs},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
