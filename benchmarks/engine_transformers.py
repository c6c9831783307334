#!/usr/bin/env python3
"""Hugging Face transformers on PyTorch CPU over an edgeagent checkpoint: the comparison point.

Runs in a scratch venv with torch and transformers (never the package's own),
as a subprocess of ``benchmarks/engine.py``; prints one JSON object with the
same fields ``edgeagent bench --json`` reports. The prompt is the one
``edgeagent bench`` feeds (same seed, same ids).

    /tmp/oracle/bin/python benchmarks/engine_transformers.py --model DIR --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def memory() -> dict[str, int]:
    out = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch  # noqa: PLC0415 - only in the scratch venv
    from transformers import Gemma3nForCausalLM  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    print(f"transformers: loading {args.model} ({args.dtype})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    model = Gemma3nForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.eval()
    load_s = time.perf_counter() - started
    cfg = model.config
    # the prompt of edgeagent.engine.bench.prompt_ids
    ids = np.random.default_rng(0).integers(3, cfg.vocab_size_per_layer_input, args.prompt_tokens)
    ids[0] = cfg.bos_token_id
    prompt = torch.tensor(ids[None, :], dtype=torch.long)
    with torch.inference_mode():
        print("transformers: warm-up", file=sys.stderr, flush=True)
        model(prompt[:, :8], use_cache=True)
        print("transformers: prefill", file=sys.stderr, flush=True)
        began = time.perf_counter()
        out = model(prompt, use_cache=True)
        token = out.logits[0, -1].argmax()
        ttft = time.perf_counter() - began
        past = out.past_key_values
        print("transformers: decode", file=sys.stderr, flush=True)
        began = time.perf_counter()
        for _ in range(args.decode_tokens):
            out = model(token.view(1, 1), past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[0, -1].argmax()
        decode_s = time.perf_counter() - began
    mem = memory()
    result = {
        "model": args.model,
        "kernels": f"transformers {args.dtype}",
        "torch": torch.__version__,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "load_s": load_s,
        "ttft_s": ttft,
        "prefill_tok_s": args.prompt_tokens / ttft,
        "decode_tok_s": args.decode_tokens / decode_s,
        "decode_ms_per_token": 1000 * decode_s / args.decode_tokens,
        "peak_rss": mem["VmHWM"],
        "rss_anon": mem["RssAnon"],
        "rss_file": mem["RssFile"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
