"""``edgeagent bench``: load time, time to first token, prefill and decode speed, peak memory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from edgeagent.engine.bench import ceilings, load_timed, run
from edgeagent.engine.kernels import KERNELS
from edgeagent.engine.kv_cache import KV_DTYPES
from edgeagent.engine.quantize import BITS, BLOCK_SIZES


def register(subparsers: Any) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser(
        "bench",
        help="measure a checkpoint's speed and memory",
        description="Prefill a random prompt and decode greedily; report load time, time to "
        "first token, prefill and decode tokens/s and peak RSS (VmHWM). Progress goes to "
        "stderr, results to stdout. Run one configuration per process: the peak is the "
        "process's.",
    )
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--tier", help="MatFormer tier (default: full)")
    parser.add_argument("--kernels", choices=KERNELS, default="quantized")
    parser.add_argument("--bits", type=int, choices=BITS, default=4, help="quantized weight bits")
    parser.add_argument("--block-size", type=int, choices=BLOCK_SIZES, default=64)
    parser.add_argument("--kv", choices=KV_DTYPES, default="fp32", help="KV-cache storage")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=0, help="kernel threads (0: every online core)"
    )
    parser.add_argument(
        "--ceilings",
        action="store_true",
        help="also time decode steps and 128-token prefills interleaved with the same kernels "
        "alone (projections and LM head of 1 and 128 tokens), measure the streaming-read "
        "bandwidth, and report the engine's overhead and roofline fraction",
    )
    parser.add_argument(
        "--bandwidth",
        type=float,
        metavar="GB_S",
        help="streaming-read bandwidth for the roofline, GB/s (default: measured with BLAS)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Measure one configuration in this process."""
    if args.prompt_tokens < 1 or args.decode_tokens < 1:
        raise SystemExit("edgeagent bench: --prompt-tokens and --decode-tokens must be ≥ 1")

    def say(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    threads = args.threads or os.cpu_count() or 1
    say(f"loading {args.model} ({args.kernels} kernels)")
    model, load_s = load_timed(
        args.model,
        max_context=args.prompt_tokens + args.decode_tokens + 1,
        kernels=args.kernels,
        kv_dtype=args.kv,
        bits=args.bits,
        block_size=args.block_size,
        threads=threads,
    )
    result = run(model, load_s, args.tier, args.prompt_tokens, args.decode_tokens, threads, say)
    out: dict[str, Any] = result.as_dict()
    if args.ceilings:
        bandwidth = args.bandwidth * 1e9 if args.bandwidth else None
        out.update(ceilings(model, args.tier, say, bandwidth=bandwidth))
    if args.json:
        print(json.dumps(out))
        return 0
    width = max(len(k) for k in out)
    for key, value in out.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
    return 0
