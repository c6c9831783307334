"""Prefill and decode loops, shared by one-shot generation and conversations."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeagent.engine.model import RunState, TextModel
from edgeagent.engine.sampling import GREEDY, Sampler, SamplingParams

TokenCallback = Callable[[int], None]
"""Called with each new token id as soon as it is chosen."""

DEFAULT_CHUNK = 128
"""Tokens per prefill pass: large enough that each weight read serves many tokens."""


@dataclass
class Generation:
    """What a generation produced and how long it took (seconds)."""

    ids: list[int]
    stop_reason: str  # "eos" | "length"
    prompt_tokens: int
    ttft_s: float  # prompt in → first token chosen
    decode_s: float  # first token → last token
    text: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode speed after the first token, in tokens per second."""
        steps = len(self.ids) - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


def prefill(
    model: TextModel,
    state: RunState,
    ids: Sequence[int] | np.ndarray,
    embeds: np.ndarray | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Feed ``ids`` (and soft-token ``embeds`` ``[T, H]``) in chunks; return last logits ``[V]``."""
    ids = np.asarray(ids, dtype=np.int64)
    logits = np.empty(0, dtype=np.float32)
    for start in range(0, len(ids), chunk):
        part = slice(start, start + chunk)
        logits = model.forward(state, ids[part], None if embeds is None else embeds[part])
    return logits


def decode(
    model: TextModel,
    state: RunState,
    logits: np.ndarray,
    sampler: Sampler,
    max_new_tokens: int,
    on_token: TokenCallback | None = None,
    stop_ids: Sequence[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[int], str]:
    """Sample from ``logits``, feed each token back, until a stop id or ``max_new_tokens``.

    A stop token ends the loop and is returned but not fed to the cache; the
    caller decides how the turn is closed. ``should_stop`` is asked before
    each further step: when it says so, the loop ends with reason
    ``"cancelled"`` (the last sampled token, like at ``"length"``, unfed).
    """
    stops = set(model.config.eos_token_ids if stop_ids is None else stop_ids)
    out: list[int] = []
    while len(out) < max_new_tokens:
        token = sampler(logits)
        out.append(token)
        if on_token is not None:
            on_token(token)
        if token in stops:
            return out, "eos"
        if len(out) < max_new_tokens:
            if should_stop is not None and should_stop():
                return out, "cancelled"
            logits = model.forward(state, [token])
    return out, "length"


def generate(
    model: TextModel,
    prompt_ids: Sequence[int],
    params: SamplingParams = GREEDY,
    max_new_tokens: int = 256,
    tier: str | None = None,
    on_token: TokenCallback | None = None,
) -> Generation:
    """Continue ``prompt_ids`` from an empty context."""
    capacity = len(prompt_ids) + max_new_tokens
    state = model.new_state(tier, max_context=max(capacity, 1))
    started = time.perf_counter()
    first: list[float] = []

    def timed(token: int) -> None:
        if not first:
            first.append(time.perf_counter())
        if on_token is not None:
            on_token(token)

    logits = prefill(model, state, prompt_ids)
    ids, reason = decode(model, state, logits, Sampler(params), max_new_tokens, timed)
    ended = time.perf_counter()
    ttft = (first[0] if first else ended) - started
    return Generation(ids, reason, len(prompt_ids), ttft, ended - (first[0] if first else ended))
