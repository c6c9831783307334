"""`edgeagent bench` on the `small` preset, emulated arm64 against native x86-64: ratios only.

Runs the same `edgeagent bench` (same checkpoint files, same 4-bit copy, same options) natively
with this interpreter and inside the emulated Debian 12 arm64 root of scripts/arm64-check
(built or reused from its cache; edgeagent reinstalled there from this working tree), then
prints emulated / native for each timing and nothing else. The emulator (qemu-user: every
Arm instruction translated to x86-64 at run time) is 10-100x slower in ways that depend on
the instruction mix, not on any Arm core, so these ratios say nothing about a real board;
they only show that the arm64 build runs the same work and roughly what emulation costs.
Root only (chroot, mounts).

    sudo .venv/bin/python benchmarks/arm64_bench.py [--kernels quantized|reference]
        [--prompt-tokens 64] [--decode-tokens 16] [--json benchmarks/results/arm64_bench.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import arm64_root  # noqa: E402

CAVEAT = (
    "Emulation timings say nothing about a real board: qemu-user translates every Arm "
    "instruction to x86-64 at run time, so a ratio measures the emulator on this machine's "
    "instruction mix, not an Arm core. Measure on the board itself for its speed."
)
METRICS = (  # (bench key, label, True when larger is faster)
    ("load_s", "load", False),
    ("ttft_s", "time to first token", False),
    ("prefill_tok_s", "prefill tokens/s", True),
    ("decode_tok_s", "decode tokens/s", True),
)
WORK = "/tmp/arm64-bench"


def log(message: str) -> None:
    print(f"arm64_bench: {message}", file=sys.stderr, flush=True)


def bench_args(model: str, args: argparse.Namespace) -> list[str]:
    return [
        "bench",
        "--model",
        model,
        "--kernels",
        args.kernels,
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
        "--json",
    ]


def last_json(text: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(text.strip().splitlines()[-1])
    return result


def measure(
    root: arm64_root.Root, args: argparse.Namespace
) -> tuple[dict[str, object], dict[str, object], float, float] | None:
    """Both bench runs: (native result, emulated result, native s, emulated s)."""
    logs = REPO / "build" / "arm64-check"
    logs.mkdir(parents=True, exist_ok=True)
    install_log = logs / "bench-install.log"
    install_log.write_text("")
    with root.locked():
        root.build()
        with root.mounted():
            root.sync_source()
            log("installing edgeagent in the root (log: build/arm64-check/bench-install.log)")
            if not root.install(install_log):
                log("install failed; see the log")
                return None
            # One checkpoint and one 4-bit copy, read by both runs (inside the root's /tmp).
            work = root.path / WORK.lstrip("/")
            if work.exists():
                shutil.rmtree(work)
            model = work / "small"
            edgeagent = [sys.executable, "-m", "edgeagent"]
            subprocess.run(
                [*edgeagent, "model", "init", "--preset", "small", "--out", str(model)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            if args.kernels == "quantized":
                subprocess.run(
                    [*edgeagent, "model", "quantize", str(model)], check=True, stdout=sys.stderr
                )
            log("native x86-64 run")
            start = time.monotonic()
            native = subprocess.run(
                [*edgeagent, *bench_args(str(model), args)],
                check=True,
                capture_output=True,
                text=True,
            )
            native_s = time.monotonic() - start
            log(f"emulated arm64 run ({args.cpu}; native took {native_s:.0f} s)")
            start = time.monotonic()
            emulated = root.run(
                ["edgeagent", *bench_args(f"{WORK}/small", args)], cwd="/tmp", capture=True
            )
            emulated_s = time.monotonic() - start
            shutil.rmtree(work)
            if emulated.returncode != 0:
                log(f"emulated bench failed:\n{emulated.stderr[-3000:]}")
                return None
    return last_json(native.stdout), last_json(emulated.stdout), native_s, emulated_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", choices=("quantized", "reference"), default="quantized")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--cpu", choices=sorted(arm64_root.CPUS), default=arm64_root.DEFAULT_CPU)
    parser.add_argument("--cache", type=Path, default=arm64_root.default_cache())
    parser.add_argument("--json", type=Path, help="also write the ratios here")
    args = parser.parse_args()

    arm64_root.ensure_host_tools()
    root = arm64_root.Root(cache=args.cache.resolve(), cpu=args.cpu)
    measured = measure(root, args)
    if measured is None:
        return 1
    x86, arm, native_s, emulated_s = measured
    ratios = {}
    for key, _label, faster_is_larger in METRICS:
        a, b = float(str(arm[key])), float(str(x86[key]))
        # always "how many times slower the emulated run is"
        ratios[key] = b / a if faster_is_larger else a / b
    ratios["wall"] = emulated_s / native_s
    report = {
        "what": "emulated arm64 slowdown vs native x86-64, same run, same checkpoint",
        "preset": "small",
        "kernels": args.kernels,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "emulated_cpu": args.cpu,
        "threads": {"native": x86.get("threads"), "emulated": arm.get("threads")},
        "slowdown": {k: round(v, 1) for k, v in ratios.items()},
        "caveat": CAVEAT,
    }
    print(f"edgeagent bench, small preset, {args.kernels} kernels, emulated {args.cpu} vs native")
    print("x86-64 in the same run: how many times slower the emulated run is")
    for key, label, _ in METRICS:
        print(f"  {label:<22} {ratios[key]:6.1f}x")
    print(f"  {'whole bench command':<22} {ratios['wall']:6.1f}x")
    print(CAVEAT)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
