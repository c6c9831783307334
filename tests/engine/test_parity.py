"""The reference decoder equals transformers' gemma3n on the tiny fixture model."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.engine import TextModel, TierPlan
from edgeagent.errors import TierError

from .conftest import TOLERANCE


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)))


def test_fixture_exercises_every_feature(tiny_text: TextModel, reference: dict) -> None:
    cfg = tiny_text.config
    ids = reference["input_ids"]
    assert len(ids) > cfg.sliding_window  # sliding layers must drop old positions
    assert {"sliding_attention", "full_attention"} <= set(cfg.layer_types)
    assert cfg.num_kv_shared_layers > 0
    assert any(s > 0 for s in cfg.activation_sparsity)
    assert (ids >= cfg.vocab_size_per_layer_input).any()  # multimodal ids use per-layer row 0


def test_text_layout_matches_transformers(tiny_text: TextModel, reference: dict) -> None:
    logits = tiny_text.logits(reference["input_ids"])
    assert logits.dtype == np.float32
    assert max_diff(logits, reference["logits"]) <= TOLERANCE


def test_multimodal_layout_loads_to_the_same_logits(
    tiny_text: TextModel, tiny_multimodal: TextModel, reference: dict
) -> None:
    assert tiny_multimodal.checkpoint.layout == "multimodal"
    ids = reference["input_ids"]
    bf16 = tiny_multimodal.logits(ids)
    assert max_diff(bf16, reference["logits"]) <= TOLERANCE
    assert max_diff(bf16, tiny_text.logits(ids)) <= 1e-6


@pytest.mark.parametrize("name", ["e2b", "mixed"])
def test_tier_equals_the_separately_sliced_model(
    tiny_text: TextModel, reference: dict, name: str
) -> None:
    plan = TierPlan(reference[f"tier_{name}_ffn_dims"], reference[f"tier_{name}_skip_layers"])
    logits = tiny_text.logits(reference["input_ids"], tier=plan)
    assert max_diff(logits, reference[f"tier_{name}_logits"]) <= TOLERANCE
    assert max_diff(logits, reference["logits"]) > 1e-2  # a tier really is another model


def test_plans_the_checkpoint_cannot_run_are_refused(tiny_text: TextModel) -> None:
    cfg = tiny_text.config
    widths = list(cfg.intermediate_sizes)
    producers = sorted(
        {cfg.kv_source(i) for i in range(cfg.first_kv_shared_layer, cfg.num_hidden_layers)}
    )
    with pytest.raises(TierError, match="produce the KV cache"):
        tiny_text.logits([1, 2], tier=TierPlan(widths, [producers[0]]))
    too_wide = widths.copy()
    too_wide[3] += 1
    with pytest.raises(TierError, match="layer 3 FFN width"):
        tiny_text.logits([1, 2], tier=TierPlan(too_wide))
    with pytest.raises(TierError, match="ffn_dims"):
        tiny_text.logits([1, 2], tier=TierPlan(widths[:-1]))
    with pytest.raises(TierError, match="do not exist"):
        tiny_text.logits([1, 2], tier=TierPlan(widths, [cfg.num_hidden_layers]))
    with pytest.raises(TierError, match="unknown tier 'nope'"):
        tiny_text.logits([1, 2], tier="nope")
