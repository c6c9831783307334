#!/usr/bin/env python3
"""The engine's own work around its kernels, measured so that a busy machine does not hide it.

Two measurements on one quantized checkpoint, in this process:

- memory by phase, bench order (load, warm-up prefill and decode, a 128-token
  prefill, 32 decoded tokens): the peak (VmHWM, reset between phases through
  ``/proc/self/clear_refs``) and the resident set after each phase;
- the work between the kernels of a decode step ("glue": norms, AltUp, RoPE,
  attention over the cache — compiled, ``engine/_glue.c`` — and the numpy of
  per-layer inputs, streams and softcap) with every ONNX Runtime call replaced
  by a copy of its inputs into its bound buffers, the same position decoded
  ``--steps`` times, timed in CPU time of this thread (``time.thread_time``):
  other processes on the cores slow it down far less than wall time.

``edgeagent bench --ceilings`` gives the engine overhead itself (wall time,
kernels interleaved); this script says where its non-kernel part stands when
that ratio is too noisy to read. Hot caches flatter numpy's BLAS attention and
not the compiled one (it prefetches for caches the weights have just flushed):
``decode_breakdown.py`` measures the glue inside real steps.

    .venv/bin/python benchmarks/engine_glue.py --model /tmp/edgeagent-bench/e2b \
        --json benchmarks/results/engine_glue.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.bench import load_timed, memory, prompt_ids


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # VmHWM := VmRSS


def phases(model: Any, context: int) -> list[dict[str, Any]]:
    """Peak and resident memory of each phase of ``edgeagent bench``'s run, MB."""
    out = []

    def record(name: str) -> None:
        m = memory()
        out.append({"phase": name, **{k: round(v / 1e6, 1) for k, v in m.items()}})
        reset_peak()

    record("load")
    ids = prompt_ids(model, 128)
    scratch = model.new_state(None, max_context=130)
    model.forward(scratch, ids)
    record("warm-up prefill")
    model.forward(scratch, ids[:1])
    record("warm-up decode")
    del scratch
    state = model.new_state(None, max_context=context)
    token = int(np.argmax(model.forward(state, ids)))
    record("prefill 128")
    for _ in range(32):
        token = int(np.argmax(model.forward(state, [token])))
    record("decode 32")
    return out


def glue_ms(model: Any, steps: int) -> dict[str, float]:
    """CPU time of one decode step with the kernels replaced by buffer copies, ms."""
    from edgeagent.engine import ort_kernels  # noqa: PLC0415

    state = model.new_state(None, max_context=200)
    ids = prompt_ids(model, 128)
    token = int(np.argmax(model.forward(state, ids)))
    for _ in range(3):
        model.forward(state, [token])
    position = state.position

    def copy_only(self: Any, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
        for buffer, x in zip(self._x1, xs, strict=True):
            buffer[...] = x
        return tuple(self._y1)

    real = ort_kernels.OrtCall.__call__
    ort_kernels.OrtCall.__call__ = copy_only  # type: ignore[method-assign]
    try:
        times = []
        for _ in range(steps):
            state.position = position  # the same position: same cache length every step
            started = time.thread_time()
            model.forward(state, [token])
            times.append(time.thread_time() - started)
    finally:
        ort_kernels.OrtCall.__call__ = real  # type: ignore[method-assign]
    ms = 1000 * np.array(times)
    return {
        "glue_ms_median": float(np.median(ms)),
        "glue_ms_p10": float(np.percentile(ms, 10)),
        "glue_ms_min": float(ms.min()),
        "context": position + 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint with a 4-bit, block-64 copy")
    parser.add_argument("--steps", type=int, default=200, help="decode steps timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    reset_peak()
    model, load_s = load_timed(
        args.model, max_context=161, kernels="quantized", threads=args.threads
    )
    results: dict[str, Any] = {"model": args.model, "load_s": load_s}
    results["phases"] = phases(model, 161)
    results.update(glue_ms(model, args.steps))
    print(f"{'phase':<18} {'peak MB':>9} {'RSS MB':>9} {'anon MB':>9} {'file MB':>9}")
    for p in results["phases"]:
        sizes = " ".join(f"{p[k]:>9}" for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"))
        print(f"{p['phase']:<18} {sizes}")
    print(
        f"decode glue (kernels replaced by copies), context {results['context']}: "
        f"median {results['glue_ms_median']:.2f} ms, p10 {results['glue_ms_p10']:.2f}, "
        f"min {results['glue_ms_min']:.2f} (CPU time of the main thread)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
