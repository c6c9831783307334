"""Chunked prefill and single-token decode through the KV cache equal one forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.engine import TextModel, TierPlan
from edgeagent.engine.kv_cache import ContextFullError, GlobalKV, SlidingKV

from .conftest import TOLERANCE


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
            assert isinstance(cache, SlidingKV) and cache.k.shape[0] == cfg.sliding_window
        else:
            assert isinstance(cache, GlobalKV) and cache.k.shape[0] == 100


def test_a_full_context_is_a_clear_error(tiny_text: TextModel) -> None:
    state = tiny_text.new_state(max_context=8)
    tiny_text.forward(state, list(range(8)))
    with pytest.raises(ContextFullError, match="max_context 8"):
        tiny_text.forward(state, [3])
