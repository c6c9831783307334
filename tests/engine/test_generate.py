"""Generation: greedy equals transformers token for token; sampling is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.engine import GREEDY, SamplingParams, TextModel, generate
from edgeagent.engine.sampling import Sampler, ranked
from edgeagent.errors import EngineError


def test_greedy_generation_equals_transformers_generate(
    tiny_text: TextModel, reference: dict
) -> None:
    expected = reference["greedy_ids"].tolist()
    seen: list[int] = []
    result = generate(
        tiny_text, reference["prompt_ids"].tolist(), GREEDY, len(expected), on_token=seen.append
    )
    assert result.ids == expected
    assert seen == expected  # the callback streams every token in order
    assert result.prompt_tokens == len(reference["prompt_ids"])
    assert result.stop_reason == (
        "eos" if expected[-1] in tiny_text.config.eos_token_ids else "length"
    )


def test_seeded_sampling_is_reproducible(tiny_text: TextModel, reference: dict) -> None:
    prompt = reference["prompt_ids"].tolist()
    params = SamplingParams(temperature=1.5, top_k=50, top_p=0.9, seed=7)
    first = generate(tiny_text, prompt, params, 12).ids
    assert generate(tiny_text, prompt, params, 12).ids == first
    others = {
        tuple(generate(tiny_text, prompt, SamplingParams(temperature=1.5, seed=s), 12).ids)
        for s in range(4)
    }
    assert len(others) > 1  # different seeds explore different continuations


def test_top_k_one_is_greedy() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=1, seed=0))
    assert {sampler(logits) for _ in range(20)} == {1}


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=0.7, seed=1))
    assert {sampler(logits) for _ in range(200)} == {0, 1}


def test_invalid_sampling_parameters_are_refused() -> None:
    with pytest.raises(EngineError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(EngineError, match="temperature"):
        SamplingParams(temperature=-1)


def test_top_k_ranking_matches_a_full_stable_sort() -> None:
    """The partitioned top-k equals the first k of a full sort, ties broken by id."""
    rng = np.random.default_rng(3)
    for trial in range(20):
        # coarse values: many ties, also across the k-th place
        logits = rng.integers(-40, 40, size=5000).astype(np.float32) / np.float32(4.0)
        full = np.argsort(-logits.astype(np.float64), kind="stable")
        for k in (1, 7, 64, 4999, 5000, 6000):
            assert np.array_equal(ranked(logits, k), full[:k]), (trial, k)
    assert np.array_equal(ranked(logits, 0), full)
