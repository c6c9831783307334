"""Tiers run on views of the loaded weights: switching allocates no weight memory."""

from __future__ import annotations

import mmap
import tracemalloc

import numpy as np

from edgeagent.engine import Conversation, TextModel, TierPlan


def backing_buffer(array: np.ndarray) -> object:
    """The object at the bottom of a view chain (an mmap for memory-mapped weights)."""
    base: object = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_tier_slabs_are_views_of_the_mapped_checkpoint(
    tiny_text: TextModel, reference: dict
) -> None:
    plan = TierPlan(reference["tier_e2b_ffn_dims"], reference["tier_e2b_skip_layers"])
    ckpt = tiny_text.checkpoint
    for i in plan.layers():
        slabs = tiny_text.weights.layers[i].ffn_slab(plan.ffn_dims[i])
        names = ("gate_proj", "up_proj", "down_proj")
        for slab, name in zip(slabs, names, strict=True):
            full = ckpt.tensor(f"layers.{i}.mlp.{name}.weight")
            assert np.shares_memory(slab, full)
            assert isinstance(backing_buffer(full), mmap.mmap)
        assert slabs[0].shape[0] == plan.ffn_dims[i] == slabs[2].shape[1]


def test_switching_tiers_allocates_only_the_cache(tiny_text: TextModel, reference: dict) -> None:
    plan = TierPlan(reference["tier_e2b_ffn_dims"], reference["tier_e2b_skip_layers"])
    conversation = Conversation(tiny_text, max_context=64)
    conversation.add_ids(reference["input_ids"][:12])
    conversation.feed()
    slab_bytes = sum(
        sum(s.nbytes for s in tiny_text.weights.layers[i].ffn_slab(plan.ffn_dims[i]))
        for i in plan.layers()
    )
    tracemalloc.start()
    try:
        conversation.rebuild(plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cache = conversation.state.cache.nbytes
    # the rebuild peaks at the new cache plus activations, far below a copy of the FFN slabs
    assert peak < cache + slab_bytes // 4, (peak, cache, slab_bytes)
    assert conversation.state.tier == plan
