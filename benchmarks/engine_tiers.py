#!/usr/bin/env python3
"""Switching MatFormer tiers on one loaded model allocates no weight memory (E4B ↔ E2B).

Loads the checkpoint with the quantized kernels, runs a conversation turn under
``full`` and rebuilds it once under ``full`` (the baseline), then rebuilds the
conversation under ``e2b`` and ``full`` alternately (``--switches`` times, each
re-prefilling the history and decoding one token), and reports VmHWM, RssAnon
and RssFile before and after. Every tier runs the same sessions (FFN slabs),
so neither peak nor anonymous memory should move.

    .venv/bin/python benchmarks/engine_tiers.py --model /tmp/edgeagent-bench/e4b
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgeagent.engine import GREEDY, Conversation, load
from edgeagent.engine.bench import memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tiers", nargs=2, default=["full", "e2b"])
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    model = load(
        args.model, max_context=512, kernels="quantized", bits=args.bits, block_size=args.block_size
    )
    after_load = memory()
    first, second = args.tiers
    conversation = Conversation(model, tier=first, max_context=512)
    conversation.begin_turn()
    ids = np.random.default_rng(0).integers(
        3, model.config.vocab_size_per_layer_input, args.prompt_tokens
    )
    conversation.add_ids(ids)
    conversation.reply(GREEDY, max_new_tokens=4)
    # the baseline has done what every switch does: rebuild this history, decode one token
    conversation.rebuild(first)
    conversation.reply(GREEDY, max_new_tokens=1)
    before = memory()
    print(f"tiers: after a {first} turn and rebuild: {before}", file=sys.stderr, flush=True)
    timings = []
    for n in range(args.switches):
        tier = second if n % 2 == 0 else first
        began = time.perf_counter()
        conversation.rebuild(tier)  # the history under the other tier, same sessions
        conversation.reply(GREEDY, max_new_tokens=1)
        timings.append(
            {"tier": tier, "rebuild_and_reply_s": time.perf_counter() - began, **memory()}
        )
        print(f"tiers: switch {n + 1} -> {tier}: {timings[-1]}", file=sys.stderr, flush=True)
    after = memory()
    result = {
        "model": str(args.model),
        "tiers": args.tiers,
        "switches": args.switches,
        "elapsed_s": time.perf_counter() - started,
        "after_load": after_load,
        "before": before,
        "after": after,
        "vmhwm_growth": after["VmHWM"] / before["VmHWM"] - 1,
        "rss_anon_growth": after["RssAnon"] / before["RssAnon"] - 1,
        "steps": timings,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
