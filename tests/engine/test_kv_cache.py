"""Chunked prefill and single-token decode through the KV cache equal one forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.engine import TextModel, TierPlan, load
from edgeagent.engine.kv_cache import ContextFullError, GlobalKV, KVCache, SlidingKV
from edgeagent.engine.presets import get_preset

from .conftest import TOLERANCE
from .test_quantized import cosine


def incremental_logits(
    model: TextModel, ids: np.ndarray, chunks: list[int], tier=None
) -> np.ndarray:
    """Prefill ``chunks`` (sizes), then decode the rest one token at a time."""
    state = model.new_state(tier, max_context=64)
    out, start = [], 0
    for size in chunks:
        out.append(model.forward(state, ids[start : start + size], all_logits=True))
        start += size
    for token in ids[start:]:
        out.append(model.forward(state, [token], all_logits=True))
    assert state.position == len(ids)
    return np.concatenate(out)


@pytest.mark.parametrize("chunks", [[5, 11], [3], [20], [1]])
def test_chunked_prefill_and_decode_equal_one_pass(
    tiny_text: TextModel, reference: dict, chunks: list[int]
) -> None:
    ids = reference["input_ids"]  # 3× the sliding window
    full = tiny_text.logits(ids)
    assert np.max(np.abs(incremental_logits(tiny_text, ids, chunks) - full)) <= TOLERANCE


def test_incremental_decode_under_a_tier(tiny_text: TextModel, reference: dict) -> None:
    plan = TierPlan(reference["tier_e2b_ffn_dims"], reference["tier_e2b_skip_layers"])
    ids = reference["input_ids"]
    step = incremental_logits(tiny_text, ids, [7], tier=plan)
    assert np.max(np.abs(step - reference["tier_e2b_logits"])) <= TOLERANCE


def test_only_kv_owning_layers_hold_a_cache(tiny_text: TextModel) -> None:
    cfg = tiny_text.config
    state = tiny_text.new_state(max_context=100)
    owners = sorted(state.cache.layers)
    assert owners == list(range(cfg.num_hidden_layers - cfg.num_kv_shared_layers))
    assert len(owners) == 10  # of 20 layers
    for i, cache in state.cache.layers.items():
        if cfg.is_sliding(i):
            assert isinstance(cache, SlidingKV) and cache.k.rows == cfg.sliding_window
        else:
            assert isinstance(cache, GlobalKV) and cache.k.rows == 100


def test_a_full_context_is_a_clear_error(tiny_text: TextModel) -> None:
    state = tiny_text.new_state(max_context=8)
    tiny_text.forward(state, list(range(8)))
    with pytest.raises(ContextFullError, match="max_context 8"):
        tiny_text.forward(state, [3])


def test_int8_cache_is_under_a_third_of_float32() -> None:
    cfg = get_preset("e2b").config
    sizes = {
        dtype: KVCache(cfg, 4096, range(cfg.num_hidden_layers), dtype).nbytes
        for dtype in ("fp32", "fp16", "int8")
    }
    assert sizes["fp16"] == sizes["fp32"] // 2
    assert sizes["int8"] <= 0.30 * sizes["fp32"], sizes  # 1 byte per value + a scale per head


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_reduced_caches_keep_the_logits(heavy, dtype: str) -> None:  # type: ignore[no-untyped-def]
    """Chunked prefill then decode, so most attention reads entries stored in ``dtype``."""
    exact = load(heavy, max_context=512)
    reduced = load(heavy, max_context=512, kv_dtype=dtype)
    ids = np.random.default_rng(4).integers(3, 1920, 320)
    reference = exact.logits(ids)
    state = reduced.new_state()
    out = [reduced.forward(state, ids[:64], all_logits=True)]
    out += [reduced.forward(state, ids[i : i + 64], all_logits=True) for i in (64, 128)]
    out += [reduced.forward(state, [t], all_logits=True) for t in ids[192:]]
    logits = np.concatenate(out)
    assert logits.shape == reference.shape
    cos = cosine(logits, reference)
    assert cos.mean() >= 0.999, (cos.mean(), cos.min())
    assert state.cache.dtype == dtype
