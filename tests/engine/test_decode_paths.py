"""The fast paths a decoded token takes equal the general ones, and prefill memory hooks run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeagent.engine import TextModel
from edgeagent.engine.model import LAYER_TRIM_MIN_TOKENS
from edgeagent.engine.model import TextModel as ModelClass
from edgeagent.engine.reference import attention, rms_norm, rope_tables, rotate, visibility


def naive_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per head, in float64: ``softmax(q·kᵀ + mask)·v``; ``k``, ``v`` ``[n_kv, S, hd]``."""
    n_heads = q.shape[1]
    group = n_heads // k.shape[0]
    out = np.empty(q.shape)
    for h in range(n_heads):
        scores = q[:, h].astype(np.float64) @ k[h // group].T.astype(np.float64) + mask
        p = np.exp(scores - scores.max(-1, keepdims=True))
        out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[h // group]
    return out


@pytest.mark.parametrize("t", [1, 5])
def test_attention_over_the_cache_layouts(t: int) -> None:
    rng = np.random.default_rng(0)
    s, n_kv, n_heads, hd = 9, 2, 8, 16
    q = rng.standard_normal((t, n_heads, hd)).astype(np.float32)
    k = rng.standard_normal((n_kv, s, hd)).astype(np.float32)
    v = rng.standard_normal((n_kv, s, hd)).astype(np.float32)
    q_pos, k_pos = np.arange(s - t, s), np.arange(s)
    mask = visibility(q_pos, k_pos, window=6)
    assert mask is not None  # the window hides the oldest keys
    keys = np.ascontiguousarray(k.transpose(0, 2, 1))  # the cache stores keys [n_kv, hd, S]
    got = attention(q, keys, v, mask)
    assert np.max(np.abs(got - naive_attention(q, k, v, mask))) < 1e-5


def test_a_decoded_token_that_sees_every_key_needs_no_mask() -> None:
    assert visibility(np.array([7]), np.arange(8), window=8) is None
    assert visibility(np.array([7]), np.array([-1, 0, 1]), window=None) is not None  # empty slot
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, 8, 5)).astype(np.float32)
    v = rng.standard_normal((2, 5, 8)).astype(np.float32)
    zeros = np.zeros((1, 5), dtype=np.float32)
    assert np.array_equal(attention(q, k, v, None), attention(q, k, v, zeros))


def test_one_row_rms_norm_equals_the_batched_one() -> None:
    x = np.random.default_rng(2).standard_normal((6, 64)).astype(np.float32) * 3
    w = np.linspace(0.5, 1.5, 64, dtype=np.float32)
    batched = rms_norm(x, w, 1e-6)
    rows = np.concatenate([rms_norm(x[i : i + 1], w, 1e-6) for i in range(6)])
    assert batched.dtype == rows.dtype == np.float32
    assert np.max(np.abs(batched - rows)) < 1e-5
    expected = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, -1, keepdims=True) + 1e-6) * w
    assert np.max(np.abs(batched - expected)) < 1e-5


def test_rotation_is_rotate_half() -> None:
    x = np.random.default_rng(3).standard_normal((3, 2, 8)).astype(np.float32)
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, 8, 2, dtype=np.float32) / 8)
    positions = np.array([0, 5, 11])
    angles = np.concatenate([positions[:, None] * inv_freq] * 2, -1)[:, None, :]
    rotate_half = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    expected = x * np.cos(angles) + rotate_half * np.sin(angles)
    assert np.max(np.abs(rotate(x, *rope_tables(positions, inv_freq)) - expected)) < 1e-5


class RecordingMemory:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_after = fail_after

    def begin(self) -> None:
        self.calls.append("begin")

    def release(self) -> None:
        self.calls.append("release")
        if self.fail_after is not None and self.calls.count("release") >= self.fail_after:
            raise RuntimeError("stop")

    def end(self) -> None:
        self.calls.append("end")


def with_memory(model: TextModel, memory: RecordingMemory) -> TextModel:
    clone = ModelClass.__new__(ModelClass)
    clone.__dict__.update(model.__dict__)
    clone.kernels = dataclasses.replace(model.kernels, pass_memory=memory)
    return clone


def test_a_prefill_brackets_its_layers_with_the_memory_hooks(tiny_text: TextModel) -> None:
    memory = RecordingMemory()
    model = with_memory(tiny_text, memory)
    state = model.new_state(max_context=64)
    model.forward(state, list(range(2, 2 + LAYER_TRIM_MIN_TOKENS + 1)))
    layers = len(state.tier.layers())
    assert memory.calls[0] == "begin" and memory.calls[-1] == "end"
    assert memory.calls.count("release") >= layers + 1  # before the layers and after each
    memory.calls.clear()
    model.forward(state, [2, 5, 7, 9])  # a short pass (soft tokens, a closing): its end only
    assert memory.calls == ["begin", "end"]
    memory.calls.clear()
    model.forward(state, [3])  # a decoded token allocates nothing worth releasing
    assert memory.calls == []


def test_the_hooks_end_a_pass_that_fails(tiny_text: TextModel) -> None:
    memory = RecordingMemory(fail_after=3)
    model = with_memory(tiny_text, memory)
    with pytest.raises(RuntimeError, match="stop"):
        model.forward(
            model.new_state(max_context=64), list(range(2, 2 + LAYER_TRIM_MIN_TOKENS + 1))
        )
    assert memory.calls[-1] == "end"
