#!/usr/bin/env python3
"""Where a decode step's time goes: the kernels, each compiled glue call, the rest.

Decodes ``--steps`` tokens after a 128-token prefill on a quantized checkpoint and,
interleaved with them, runs the same kernels alone (as ``edgeagent bench --ceilings``
does). Inside the steps it times every ONNX Runtime call, every call into
``edgeagent.engine._glue`` (by function), the KV-cache appends and the logit softcap;
what is left is Python and the numpy around the layers. Wall time per step, medians
over steps; the glue calls are also given in CPU time of the main thread, which
another process on the cores disturbs less.

    .venv/bin/python benchmarks/decode_breakdown.py --model /tmp/edgeagent-bench/e2b \
        --json benchmarks/results/decode_breakdown.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine import decode, kv_cache, load, ort_kernels
from edgeagent.engine import model as model_module
from edgeagent.engine.bench import _token_projections, prompt_ids


def instrument(wall: defaultdict[str, float], cpu: defaultdict[str, float]) -> None:
    """Wrap the timed calls; each adds its seconds to ``wall`` (and ``cpu``) under a name."""

    def timed(name: str, fn: Any) -> Any:
        def call(*args: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            out = fn(*args)
            wall[name] += time.perf_counter() - w
            cpu[name] += time.thread_time() - c
            return out

        return call

    call = ort_kernels.OrtCall.__call__
    setattr(ort_kernels.OrtCall, "__call__", timed("kernels (ONNX Runtime)", call))  # noqa: B010
    glue = decode._glue  # type: ignore[attr-defined]

    class Timed:
        def __getattr__(self, name: str) -> Any:
            return timed(f"_glue.{name}", getattr(glue, name))

    setattr(decode, "_glue", Timed())  # noqa: B010
    for cache in (kv_cache.GlobalKV, kv_cache.SlidingKV):
        setattr(cache, "extend", timed("KV append", cache.extend))  # noqa: B010
    setattr(model_module, "softcap", timed("softcap", model_module.softcap))  # type: ignore[attr-defined]  # noqa: B010


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint with a quantized copy")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    model = load(args.model, kernels="quantized", threads=args.threads, max_context=512)
    plan = model.tier(None)
    one = list(_token_projections(model, plan, 1))
    state = model.new_state(plan, max_context=128 + args.steps + 4)
    token = int(np.argmax(model.forward(state, prompt_ids(model, 128, seed=1))))
    for fn, call_args in one:  # first calls allocate
        fn(*call_args)
    wall: defaultdict[str, float] = defaultdict(float)
    cpu: defaultdict[str, float] = defaultdict(float)
    instrument(wall, cpu)
    per_step: defaultdict[str, list[float]] = defaultdict(list)
    kernels = "kernels (ONNX Runtime)"
    for n in range(args.steps + 2):
        wall.clear()
        cpu.clear()
        started = time.perf_counter()
        model.forward(state, [token])
        step = time.perf_counter() - started
        inside = dict(wall), dict(cpu)
        started = time.perf_counter()
        for fn, call_args in one:
            fn(*call_args)
        alone = time.perf_counter() - started
        if n < 2:  # warm-up steps
            continue
        per_step["step"].append(step)
        per_step["kernels alone"].append(alone)
        for name, seconds in inside[0].items():
            per_step[name].append(seconds)
            if name != kernels:
                per_step[f"{name} (CPU)"].append(inside[1][name])
        per_step["rest (Python, numpy)"].append(step - sum(inside[0].values()))

    rows = {name: 1000 * float(np.median(v)) for name, v in per_step.items()}
    print(f"{'per decode step':28s} {'wall ms':>8s} {'CPU ms':>8s}")
    for name, ms in rows.items():
        if not name.endswith("(CPU)"):
            in_cpu = rows.get(f"{name} (CPU)")
            print(f"{name:28s} {ms:8.2f} {'' if in_cpu is None else f'{in_cpu:8.2f}'}")
    overhead = rows["step"] / rows["kernels alone"]
    print(f"decode step / kernels alone: {overhead:.3f} (context {state.position})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"model": args.model, "ms_per_step": rows, "overhead": overhead}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
