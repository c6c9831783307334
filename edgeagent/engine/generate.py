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
    return prefill_runs(model, state, [(np.asarray(ids, dtype=np.int64), embeds)], chunk)


Run = tuple[np.ndarray, np.ndarray | None]
"""Token ids ``[T]`` and, for soft tokens, their embeddings ``[T, H]`` (``None``: text)."""


def prefill_runs(
    model: TextModel, state: RunState, runs: Sequence[Run], chunk: int = DEFAULT_CHUNK
) -> np.ndarray:
    """Feed consecutive runs of text and soft tokens as one prefill, in passes of ``chunk``.

    Every pass reads all the weights whatever its length, so runs fed together
    cost one read where feeding them apart costs one each. A pass that holds
    soft tokens embeds its text rows as the forward pass would. Returns the
    last logits ``[V]``.
    """
    ids = np.concatenate([r[0] for r in runs]) if runs else np.empty(0, np.int64)  # [T]
    bounds = np.cumsum([0] + [len(r[0]) for r in runs])  # run i covers bounds[i]:bounds[i+1]
    logits = np.empty(0, dtype=np.float32)
    for start in range(0, len(ids), chunk):
        stop = min(start + chunk, len(ids))
        logits = model.forward(
            state, ids[start:stop], _chunk_embeds(model, runs, bounds, start, stop)
        )
    return logits


def _chunk_embeds(
    model: TextModel, runs: Sequence[Run], bounds: np.ndarray, start: int, stop: int
) -> np.ndarray | None:
    """Rows ``start:stop`` of the runs' embeddings ``[stop-start, H]``, or ``None`` if all text."""
    parts: list[tuple[np.ndarray, np.ndarray | None]] = []
    for (run_ids, run_embeds), lo, hi in zip(runs, bounds[:-1], bounds[1:], strict=True):
        a, b = max(start, int(lo)), min(stop, int(hi))
        if a < b:
            rows = slice(a - int(lo), b - int(lo))
            parts.append((run_ids[rows], None if run_embeds is None else run_embeds[rows]))
    if all(e is None for _, e in parts):
        return None
    return np.concatenate([e if e is not None else model.embed(i) for i, e in parts])


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
