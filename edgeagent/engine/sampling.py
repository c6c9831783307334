"""Choosing the next token: greedy, or temperature / top-k / top-p sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeagent.errors import EngineError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy.

    Gemma's defaults: temperature 1.0, top_k 64, top_p 0.95.
    """

    temperature: float = 1.0
    top_k: int = 64
    top_p: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise EngineError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise EngineError(f"top_k must be ≥ 0 (0: off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise EngineError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """True when the most likely token is always taken."""
        return self.temperature == 0.0


GREEDY = SamplingParams(temperature=0.0)


class Sampler:
    """Draws tokens from logits with its own seeded generator."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """Pick one token id from logits ``[V]``."""
        p = self.params
        if p.greedy:
            return int(np.argmax(logits))
        order = ranked(logits, p.top_k)  # most likely first
        scaled = logits[order].astype(np.float64) / p.temperature
        probs = np.exp(scaled - scaled[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            # keep the smallest prefix whose mass reaches top_p (at least one token)
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
        return int(order[self._rng.choice(len(order), p=probs)])


def ranked(logits: np.ndarray, top_k: int = 0) -> np.ndarray:
    """Token ids by falling logit, ties by id; only the first ``top_k`` when ``top_k`` > 0.

    With ``top_k`` the vocabulary is partitioned, not sorted: the ids at or above
    the k-th largest logit (ties included) are found in one pass and only they are
    sorted (262,144 logits: ~3 ms instead of ~30 ms for a full stable sort).
    """
    if 0 < top_k < logits.shape[0]:
        kth = np.partition(logits, -top_k)[-top_k]  # the k-th largest logit
        candidates = np.flatnonzero(logits >= kth)  # ≥ top_k ids, ascending
        return candidates[np.argsort(-logits[candidates], kind="stable")][:top_k]
    return np.argsort(-logits, kind="stable")
