#!/usr/bin/env python3
"""ONNX Runtime's int8 CPU kernels at the few rows a streaming audio push has.

    python benchmarks/audio_kernels.py [--threads 1] [--rows 1,4,16] [--rounds 5]

The audio encoder's projections are E2B-sized (1536 -> 6144 and back); a
160 ms push sends 4 encoder frames through each. For every candidate kernel
this builds 24 sessions of 1536 x 6144 / 6144 x 1536 random weights (226 M
weights, more than the last-level cache: weights come from memory as in the
encoder) and runs each row count through all of them, the candidates in turn
so that they share the machine's load. Candidates:

- ``com.microsoft.MatMulNBits``, 4 and 8 bits, ``accuracy_level=4`` (int8
  activations), blocks of 32-256 weights per scale;
- ``com.microsoft.DynamicQuantizeMatMul``: int8 weights with one scale per
  column, MLAS's int8 GEMM (QGEMM).

Reported per candidate and row count: thread CPU time per weight matrix
(9.4 M weights), multiply-adds per second, and the ratio to 4-bit blocks of
64 (the encoder's old setting) measured in the same rounds. Writes
``benchmarks/results/audio_kernels_t{threads}.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ((1536, 6144), (6144, 1536)) * 12  # (K, N): an FFN's two matrices, 12 blocks
WEIGHTS = 1536 * 6144
BASELINE = "MatMulNBits 4-bit b64"


def build(candidate: str) -> Callable[[int, int], bytes]:
    """A function ``(K, N) -> serialised model`` ``y[T, N] = x[T, K] @ W``, random ``W``."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(0)

    def model(node: Any, inits: list[Any], k: int, n: int) -> bytes:
        graph = helper.make_graph(
            [node], "kernel",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", n])],
            inits,
        )  # fmt: skip
        opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
        return bytes(
            helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()
        )

    if candidate.startswith("MatMulNBits"):
        bits = int(candidate.split()[1].split("-", maxsplit=1)[0])
        block = int(candidate.split()[2][1:])

        def nbits(k: int, n: int) -> bytes:
            codes = rng.integers(0, 256, (n, k // block, block * bits // 8), dtype=np.uint8)
            scales = rng.random(n * (k // block), dtype=np.float32) * np.float32(0.01)
            node = helper.make_node(
                "MatMulNBits", ["x", "B", "S"], ["y"], domain="com.microsoft",
                K=k, N=n, bits=bits, block_size=block, accuracy_level=4,
            )  # fmt: skip
            inits = [numpy_helper.from_array(codes, "B"), numpy_helper.from_array(scales, "S")]
            return model(node, inits, k, n)

        return nbits

    def dqmm(k: int, n: int) -> bytes:
        w = rng.integers(-127, 128, (k, n), dtype=np.int8)
        scales = rng.random(n, dtype=np.float32) * np.float32(0.01)
        node = helper.make_node(
            "DynamicQuantizeMatMul", ["x", "B", "s", "z"], ["y"], domain="com.microsoft"
        )
        inits = [
            numpy_helper.from_array(w, "B"),
            numpy_helper.from_array(scales, "s"),
            numpy_helper.from_array(np.zeros(n, np.int8), "z"),
        ]
        return model(node, inits, k, n)

    return dqmm


class Candidate:
    """24 sessions of one kernel, bound once per row count."""

    def __init__(self, name: str, threads: int, rows: list[int]) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.use_per_session_threads = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.log_severity_level = 3
        make = build(name)
        self.name = name
        self.calls: dict[int, list[tuple[Any, Any]]] = {m: [] for m in rows}
        self.buffers: list[np.ndarray] = []  # bound memory stays alive
        rng = np.random.default_rng(1)
        for k, n in SHAPES:
            session = ort.InferenceSession(make(k, n), options, providers=["CPUExecutionProvider"])
            for m in rows:
                x = rng.standard_normal((m, k)).astype(np.float32)
                y = np.empty((m, n), np.float32)
                self.buffers += [x, y]
                b = session.io_binding()
                b.bind_input("x", "cpu", 0, np.float32, [m, k], x.ctypes.data)
                b.bind_output("y", "cpu", 0, np.float32, [m, n], y.ctypes.data)
                self.calls[m].append((session, b))

    def time(self, m: int, clock: Callable[[], float]) -> float:
        """Seconds per weight matrix at ``m`` rows."""
        t0 = clock()
        for session, binding in self.calls[m]:
            session.run_with_iobinding(binding, None)
        return (clock() - t0) / len(self.calls[m])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", default="1,4,16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--candidates",
        default="MatMulNBits 4-bit b64,MatMulNBits 4-bit b32,MatMulNBits 4-bit b128,"
        "MatMulNBits 4-bit b256,MatMulNBits 8-bit b64,MatMulNBits 8-bit b256,"
        "DynamicQuantizeMatMul int8",
    )
    args = p.parse_args()
    from onnxruntime.capi import _pybind_state  # noqa: PLC0415

    _pybind_state.set_global_thread_pool_sizes(args.threads, 1)
    rows = [int(r) for r in args.rows.split(",")]
    names = args.candidates.split(",")
    candidates = [Candidate(name, args.threads, rows) for name in names]
    # one thread: the calling thread's CPU time, which other processes' load barely moves
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    samples: dict[str, dict[int, list[float]]] = {c.name: {m: [] for m in rows} for c in candidates}
    for _ in range(args.rounds):
        for m in rows:
            for c in candidates:
                c.time(m, clock)  # warm
                samples[c.name][m].append(c.time(m, clock))
    table = ["| kernel | rows | ms per 9.4 M-weight matrix | G multiply-adds/s | vs 4-bit b64 |",
             "|---|---|---|---|---|"]  # fmt: skip
    result: dict[str, Any] = {"threads": args.threads, "clock": clock.__name__, "kernels": {}}
    for name in names:
        result["kernels"][name] = {}
        for m in rows:
            t = float(np.median(samples[name][m]))
            base = float(np.median(samples[BASELINE][m])) if BASELINE in samples else t
            result["kernels"][name][m] = {
                "ms_per_matrix": round(1e3 * t, 3),
                "gmac_per_s": round(m * WEIGHTS / t / 1e9, 1),
                "ratio_to_baseline": round(t / base, 3),
            }
            table.append(
                f"| {name} | {m} | {1e3 * t:.3f} | {m * WEIGHTS / t / 1e9:.0f} | {t / base:.2f} |"
            )
    print("\n".join(table))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"audio_kernels_t{args.threads}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
