"""The KV cache: one buffer per cache-owning layer, allocated once.

Only the first ``L − num_kv_shared_layers`` layers own a cache; KV-shared
layers read the keys and values their producer (the last owner of the same
attention type) made in the same forward step. Sliding layers keep a ring of
``sliding_window`` positions, full-attention layers the whole context.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgeagent.engine.config import TextConfig
from edgeagent.errors import EngineError

F32 = np.float32

KVView = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Keys ``[S, n_kv, hd]``, values ``[S, n_kv, hd]`` and their positions ``[S]`` (−1: empty)."""


class ContextFullError(EngineError):
    """The conversation outgrew ``max_context`` tokens."""


class GlobalKV:
    """Full-attention cache: positions ``0 … capacity−1`` in order."""

    def __init__(self, capacity: int, n_kv: int, head_dim: int) -> None:
        self.k = np.zeros((capacity, n_kv, head_dim), dtype=F32)  # [C, n_kv, hd]
        self.v = np.zeros((capacity, n_kv, head_dim), dtype=F32)
        self.length = 0

    def extend(self, k_new: np.ndarray, v_new: np.ndarray, positions: np.ndarray) -> KVView:
        """Append ``T`` new rows at ``positions`` and return everything cached so far."""
        start, end = int(positions[0]), int(positions[-1]) + 1
        if end > self.k.shape[0]:
            raise ContextFullError(
                f"context full: position {end - 1} exceeds max_context {self.k.shape[0]}"
            )
        self.k[start:end] = k_new
        self.v[start:end] = v_new
        self.length = end
        return self.k[:end], self.v[:end], np.arange(end)


class SlidingKV:
    """Sliding-window cache: a ring of ``window`` slots, slot = position mod window."""

    def __init__(self, window: int, n_kv: int, head_dim: int) -> None:
        self.k = np.zeros((window, n_kv, head_dim), dtype=F32)  # [W, n_kv, hd]
        self.v = np.zeros((window, n_kv, head_dim), dtype=F32)
        self.pos = np.full(window, -1, dtype=np.int64)  # [W]

    def extend(self, k_new: np.ndarray, v_new: np.ndarray, positions: np.ndarray) -> KVView:
        """Return the ring's old entries plus the ``T`` new ones, then keep the newest in the ring.

        The caller's window mask decides which of them each query sees, so a
        chunk longer than the window still attends correctly.
        """
        keys = np.concatenate([self.k, k_new])  # [W+T, n_kv, hd]
        values = np.concatenate([self.v, v_new])
        pos = np.concatenate([self.pos, positions])
        window = self.k.shape[0]
        keep = slice(max(0, len(positions) - window), len(positions))
        slots = positions[keep] % window
        self.k[slots] = k_new[keep]
        self.v[slots] = v_new[keep]
        self.pos[slots] = positions[keep]
        return keys, values, pos


class KVCache:
    """The caches of one conversation, keyed by owning layer index."""

    def __init__(self, config: TextConfig, max_context: int, layers: Iterable[int]) -> None:
        self.max_context = max_context
        self.layers: dict[int, GlobalKV | SlidingKV] = {}
        n_kv, hd = config.num_key_value_heads, config.head_dim
        for i in layers:
            if config.kv_source(i) != i:
                continue
            if config.is_sliding(i):
                self.layers[i] = SlidingKV(config.sliding_window, n_kv, hd)
            else:
                self.layers[i] = GlobalKV(max_context, n_kv, hd)

    @property
    def nbytes(self) -> int:
        """Memory held by all buffers, in bytes."""
        return sum(c.k.nbytes + c.v.nbytes for c in self.layers.values())
