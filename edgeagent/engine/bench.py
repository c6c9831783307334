"""Measurements behind ``edgeagent bench``: speed and memory of one model, and its ceilings.

:func:`run` loads a checkpoint, prefills a random prompt and decodes greedily,
timing each phase, and reads the process's memory from ``/proc/self/status``
(``VmHWM`` is the peak resident set, anonymous plus file-backed). Run it in a
fresh process per configuration, or the peak belongs to whatever ran before.

:func:`ceilings` measures, with the very kernels the model runs, what the
model could at best do: the time of one token's projections and LM head
alone (decode), the same at 128 tokens (prefill), and the weight bytes a
decoded token streams. Ratios of the two, taken in the same run, say how much
the engine around the kernels costs — on any machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.kernels import ModelKernels
from edgeagent.engine.model import TextModel
from edgeagent.engine.tiers import TierPlan

Progress = Callable[[str], None]


def memory() -> dict[str, int]:
    """``VmHWM``, ``VmRSS``, ``RssAnon``, ``RssFile`` of this process, in bytes."""
    wanted = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    out = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in wanted:
                out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class BenchResult:
    """One configuration's numbers (seconds, tokens per second, bytes)."""

    model: str
    kernels: str
    tier: str
    kv: str
    threads: int
    prompt_tokens: int
    decode_tokens: int
    load_s: float
    warmup_s: float
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float
    decode_ms_per_token: float
    peak_rss: int  # VmHWM
    rss_anon: int
    rss_file: int
    kv_cache_bytes: int
    kernel_description: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_ids(model: TextModel, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random ids from the text vocabulary (BOS first)."""
    ids = np.random.default_rng(seed).integers(3, model.config.vocab_size_per_layer_input, n)
    if model.config.bos_token_id is not None and n:
        ids[0] = model.config.bos_token_id
    return ids


def run(
    model: TextModel,
    load_s: float,
    tier: str | None = None,
    prompt_tokens: int = 128,
    decode_tokens: int = 32,
    threads: int = 0,
    progress: Progress | None = None,
) -> BenchResult:
    """Prefill ``prompt_tokens`` in one chunk of ≤ 128, then decode ``decode_tokens`` greedily."""
    say = progress or (lambda _: None)
    plan = model.tier(tier)
    ids = prompt_ids(model, prompt_tokens)
    say("warm-up pass")  # first calls of each kernel allocate; a real session does them once
    began = time.perf_counter()
    scratch = model.new_state(plan, max_context=prompt_tokens + 2)
    model.forward(scratch, ids[: min(128, prompt_tokens)])
    model.forward(scratch, ids[:1])
    warmup_s = time.perf_counter() - began
    del scratch
    state = model.new_state(plan, max_context=prompt_tokens + decode_tokens + 1)
    say(f"prefill {prompt_tokens} tokens")
    started = time.perf_counter()
    logits = np.empty(0)
    for start in range(0, prompt_tokens, 128):
        logits = model.forward(state, ids[start : start + 128])
    token = int(np.argmax(logits))
    ttft = time.perf_counter() - started
    say(f"decode {decode_tokens} tokens")
    began = time.perf_counter()
    for _ in range(decode_tokens):
        token = int(np.argmax(model.forward(state, [token])))
    decode_s = time.perf_counter() - began
    mem = memory()
    return BenchResult(
        model=str(model.checkpoint.path),
        kernels=model.kernels.name,
        tier=tier or "full",
        kv=model.kv_dtype,
        threads=threads,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        load_s=load_s,
        warmup_s=warmup_s,
        ttft_s=ttft,
        prefill_tok_s=prompt_tokens / ttft,
        decode_tok_s=decode_tokens / decode_s if decode_s else 0.0,
        decode_ms_per_token=1000 * decode_s / max(1, decode_tokens),
        peak_rss=mem["VmHWM"],
        rss_anon=mem["RssAnon"],
        rss_file=mem["RssFile"],
        kv_cache_bytes=state.cache.nbytes,
        kernel_description=model.kernels.description,
    )


# -- ceilings -----------------------------------------------------------------------------


def _token_projections(
    model: TextModel, plan: TierPlan, rows: int
) -> Iterator[tuple[Callable[..., Any], tuple[np.ndarray | None, ...]]]:
    """Every kernel call one forward pass of ``rows`` tokens makes, with inputs of its shapes,
    in the model's order; the LM head (one row: the last token's logits) comes last."""
    cfg, k = model.config, model.kernels
    rng = np.random.default_rng(0)

    def x(width: int, n: int = rows) -> np.ndarray:
        return rng.standard_normal((n, width)).astype(np.float32)

    h, hp = cfg.hidden_size, cfg.hidden_size_per_layer_input
    yield k.per_layer_model_projection, (x(h),)
    for p in k.altup_projections:
        yield p, (x(h),)
    for i in plan.layers():
        lk = k.layers[i]
        yield lk.attn_in, (x(h),)
        yield lk.laurel, (x(h),)
        yield lk.o_proj, (x(cfg.num_attention_heads * cfg.head_dim),)
        sparse = cfg.activation_sparsity[i] > 0
        for slab in lk.ffn.slabs(plan.ffn_dims[i]):
            width = slab.stop - slab.start
            if slab.fused is not None:
                yield slab.fused, (x(h),)
            if slab.gate_up is not None and slab.down is not None:
                yield slab.gate_up, (x(h),)
                yield slab.down, (x(width), x(width), x(1) if sparse else None)
        yield lk.per_layer_gate, (x(h), x(hp))
    for p in k.altup_unembed_projections:
        yield p, (x(h),)
    yield k.lm_head, (x(h, 1),)


def projections_time(model: TextModel, plan: TierPlan, rows: int, repeats: int = 5) -> float:
    """Median seconds to run the kernels of one ``rows``-token pass, and nothing else."""
    calls = list(_token_projections(model, plan, rows))
    for fn, args in calls:  # warm up (first calls allocate)
        fn(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for fn, args in calls:
            fn(*args)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def projection_flops(model: TextModel, plan: TierPlan, rows: int) -> float:
    """Multiply-adds ×2 of one ``rows``-token pass's projections (LM head: one row)."""
    flops = 0.0
    for fn, args in _token_projections(model, plan, rows):
        first = args[0]
        assert first is not None
        out = fn(*(a[:1] if a is not None else None for a in args))
        width = sum(o.shape[-1] for o in out) if isinstance(out, tuple) else out.shape[-1]
        flops += 2.0 * first.shape[0] * first.shape[1] * width
    return flops


def weight_bytes_per_token(kernels: ModelKernels, model: TextModel, plan: TierPlan) -> int:
    """Bytes of weights one decoded token reads (quantized blobs and scales, or the checkpoint's
    float matrices for the reference kernels)."""
    from edgeagent.engine.quantize import units  # noqa: PLC0415

    cfg = model.config
    store = kernels.store
    if store is not None:
        total = 0
        for unit in units(cfg, store.slab_cuts):
            layer = _layer_of(unit.key)
            if layer is not None and layer not in plan.layers():
                continue
            if unit.rows or unit.cols:
                assert layer is not None
                stop = (unit.rows or unit.cols or (0, 0))[1]
                if stop > plan.ffn_dims[layer]:
                    continue
            m = store.matrix(unit.key)
            total += m.qweight[1] + m.scales[1]
        return int(total)
    total = model.weights.embed_tokens.nbytes + model.weights.per_layer_model_projection.nbytes
    total += sum(p.nbytes for p in model.weights.altup_projections)
    total += sum(p.nbytes for p in model.weights.altup_unembed_projections)
    for i in plan.layers():
        lw = model.weights.layers[i]
        a = lw.self_attn
        mats = [a.q_proj, a.o_proj, lw.laurel_left, lw.laurel_right]
        mats += [lw.per_layer_input_gate, lw.per_layer_projection, *lw.ffn_slab(plan.ffn_dims[i])]
        mats += [m for m in (a.k_proj, a.v_proj) if m is not None]
        total += sum(m.nbytes for m in mats)
    return int(total)


def _layer_of(key: str) -> int | None:
    if not key.startswith("layers."):
        return None
    return int(key.split(".")[1])


def stream_bandwidth(nbytes: int = 1 << 30, repeats: int = 3) -> float:
    """Bytes per second of a plain streaming read of ``nbytes`` (BLAS ``sdot`` of two halves:
    two loads per multiply-add, memory-bound, multi-threaded in OpenBLAS)."""
    buf = np.ones(nbytes // 4, dtype=np.float32)
    a, b = buf[: len(buf) // 2], buf[len(buf) // 2 :]
    np.dot(a, b)
    best = min(_timed(lambda: np.dot(a, b)) for _ in range(repeats))
    return nbytes / best


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ceilings(
    model: TextModel,
    tier: str | None = None,
    progress: Progress | None = None,
    rounds: int = 15,
    bandwidth: float | None = None,
) -> dict[str, float]:
    """The engine against its own kernels, measured now (see module doc).

    Interleaved, so that both sides of each ratio see the same machine: a
    decode step, then the same kernels for one token alone, ``rounds`` times;
    a 128-token prefill, then the kernels for 128 tokens alone, 3 times.
    Medians. ``bandwidth`` (bytes/s) overrides the BLAS streaming-read probe
    (e.g. with a C measurement, ``benchmarks/stream_read.c``).
    """
    say = progress or (lambda _: None)
    plan = model.tier(tier)
    ids = prompt_ids(model, 128, seed=1)
    one = list(_token_projections(model, plan, 1))
    many = list(_token_projections(model, plan, 128))
    for fn, args in one + many:  # first calls allocate
        fn(*args)
    say(f"decode steps and their kernels alone, interleaved ({rounds} rounds)")
    state = model.new_state(plan, max_context=128 + rounds + 1)
    token = int(np.argmax(model.forward(state, ids)))
    steps, kernels = [], []
    for _ in range(rounds):
        steps.append(_timed(lambda: model.forward(state, [token])))
        kernels.append(_timed(lambda: [fn(*args) for fn, args in one]))
    say("128-token prefills and their kernels alone, interleaved (3 rounds)")
    prefills, gemms = [], []
    for _ in range(3):
        fresh = model.new_state(plan, max_context=129)
        prefills.append(_timed(lambda: model.forward(fresh, ids)))  # noqa: B023 - called now
        gemms.append(_timed(lambda: [fn(*args) for fn, args in many]))
    step_s, kernel_s = float(np.median(steps)), float(np.median(kernels))
    prefill_s, gemm_s = float(np.median(prefills)), float(np.median(gemms))
    say("measuring streaming-read bandwidth")
    rate = bandwidth or stream_bandwidth()
    weights = weight_bytes_per_token(model.kernels, model, plan)
    return {
        "decode_step_ms": 1000 * step_s,
        "projections_ms_per_token": 1000 * kernel_s,
        "decode_overhead": step_s / kernel_s,
        "prefill_128_s": prefill_s,
        "projections_128_s": gemm_s,
        "projections_128_gflops": projection_flops(model, plan, 128) / gemm_s / 1e9,
        "prefill_fraction_of_gemm": gemm_s / prefill_s,
        "weight_bytes_per_token": weights,
        "stream_read_gb_s": rate / 1e9,
        "roofline_ms_per_token": 1000 * weights / rate,
        "roofline_fraction": weights / rate / step_s,
    }


def load_timed(path: str | Path, **kwargs: Any) -> tuple[TextModel, float]:
    """``(model, seconds)`` of :func:`edgeagent.engine.load`."""
    from edgeagent.engine import load  # noqa: PLC0415 - the package imports this module

    started = time.perf_counter()
    model = load(path, **kwargs)
    return model, time.perf_counter() - started
