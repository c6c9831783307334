"""The KV cache: one buffer per cache-owning layer, allocated once.

Only the first ``L − num_kv_shared_layers`` layers own a cache; KV-shared
layers read the keys and values their producer (the last owner of the same
attention type) made in the same forward step. Sliding layers keep a ring of
``sliding_window`` positions, full-attention layers the whole context.

Entries are stored as float32, float16, or int8 with one float32 scale per
token and head (``absmax / 127``: a quarter of float32's memory plus 4 bytes
per 256-wide head); attention always reads float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgeagent.engine.config import TextConfig
from edgeagent.errors import EngineError

F32 = np.float32

KV_DTYPES = ("fp32", "fp16", "int8")

KVView = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Keys ``[n_kv, hd, S]``, values ``[n_kv, S, hd]`` and their positions ``[S]`` (−1: empty).

As stored, so that attention reads them without a copy: each head's keys as one
``[hd, S]`` matrix (queries ``[T·g, hd]`` times it gives the scores row-major),
each head's values as one ``[S, hd]`` matrix."""


class ContextFullError(EngineError):
    """The conversation outgrew ``max_context`` tokens."""


def check_kv_dtype(dtype: str) -> str:
    """``dtype`` if it is one of :data:`KV_DTYPES`, else EngineError."""
    if dtype not in KV_DTYPES:
        raise EngineError(f"unknown KV-cache dtype {dtype!r}; choose one of {', '.join(KV_DTYPES)}")
    return dtype


class KVStore:
    """``rows`` entries of ``[n_kv, hd]`` in one storage dtype, read back as float32.

    Head-major: values ``[n_kv, rows, hd]``; keys (``keys=True``) transposed,
    ``[n_kv, hd, rows]``.
    """

    def __init__(self, rows: int, n_kv: int, head_dim: int, dtype: str, keys: bool = False) -> None:
        self.dtype = check_kv_dtype(dtype)
        self.rows = rows
        self.keys = keys
        storage = {"fp32": F32, "fp16": np.float16, "int8": np.int8}[dtype]
        shape = (n_kv, head_dim, rows) if keys else (n_kv, rows, head_dim)
        self.data = np.zeros(shape, dtype=storage)
        # int8: one scale per entry and head; float storage needs none
        self.scale = np.zeros((n_kv, rows) if dtype == "int8" else (n_kv, 0), dtype=F32)

    def layout(self, x: np.ndarray) -> np.ndarray:
        """``[T, n_kv, hd]`` entries in this store's layout (a view)."""
        return x.transpose(1, 2, 0) if self.keys else x.transpose(1, 0, 2)

    def _at(self, where: slice | np.ndarray) -> tuple[slice | np.ndarray, ...]:
        return (slice(None), slice(None), where) if self.keys else (slice(None), where)

    def write(self, where: slice | np.ndarray, x: np.ndarray) -> None:
        """Store ``x`` ``[T, n_kv, hd]`` float32 at rows ``where``."""
        entries = self.layout(x)
        at = self._at(where)
        if self.dtype != "int8":
            self.data[at] = entries
            return
        hd_axis = 1 if self.keys else 2
        absmax = np.max(np.abs(entries), axis=hd_axis)  # [n_kv, T]
        scale = np.where(absmax > 0, absmax / F32(127.0), F32(1.0)).astype(F32)
        self.data[at] = np.rint(entries / np.expand_dims(scale, hd_axis))
        self.scale[:, where] = scale

    def read(self, where: slice | np.ndarray) -> np.ndarray:
        """Rows ``where`` as float32 in this store's layout (a view for float32 and a slice)."""
        at = self._at(where)
        if self.dtype == "fp32":
            return self.data[at]
        if self.dtype == "fp16":
            return self.data[at].astype(F32)
        scale = np.expand_dims(self.scale[:, where], 1 if self.keys else 2)
        return self.data[at].astype(F32) * scale

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return self.data.nbytes + self.scale.nbytes


class GlobalKV:
    """Full-attention cache: positions ``0 … capacity−1`` in order."""

    def __init__(self, capacity: int, n_kv: int, head_dim: int, dtype: str = "fp32") -> None:
        self.k = KVStore(capacity, n_kv, head_dim, dtype, keys=True)  # [n_kv, hd, C]
        self.v = KVStore(capacity, n_kv, head_dim, dtype)  # [n_kv, C, hd]
        self.capacity = capacity
        self.length = 0

    def extend(self, k_new: np.ndarray, v_new: np.ndarray, positions: np.ndarray) -> KVView:
        """Append ``T`` new rows at ``positions`` and return everything cached so far."""
        start, end = int(positions[0]), int(positions[-1]) + 1
        if end > self.capacity:
            raise ContextFullError(
                f"context full: position {end - 1} exceeds max_context {self.capacity}"
            )
        self.k.write(slice(start, end), k_new)
        self.v.write(slice(start, end), v_new)
        self.length = end
        return self.k.read(slice(0, end)), self.v.read(slice(0, end)), np.arange(end)


class SlidingKV:
    """Sliding-window cache: a ring of ``slots`` entries, slot = position mod slots.

    ``slots`` is the window, or the context when that is shorter (positions
    then never wrap around).
    """

    def __init__(
        self, window: int, n_kv: int, head_dim: int, dtype: str = "fp32", slots: int | None = None
    ) -> None:
        self.window = window
        self.slots = min(window, slots or window)
        self.k = KVStore(self.slots, n_kv, head_dim, dtype, keys=True)  # [n_kv, hd, slots]
        self.v = KVStore(self.slots, n_kv, head_dim, dtype)  # [n_kv, slots, hd]
        self.pos = np.full(self.slots, -1, dtype=np.int64)  # [slots]

    def extend(self, k_new: np.ndarray, v_new: np.ndarray, positions: np.ndarray) -> KVView:
        """Return the ring's entries plus the ``T`` new ones, and keep the newest in the ring.

        One new token (decode) is written in place and the ring itself is
        returned: the slot it overwrites is a position the window no longer
        shows. Several tokens (prefill) see the old ring beside themselves,
        since a later token's slot may hold a position an earlier one still
        sees; the caller's window mask decides which of them each query sees,
        so a chunk longer than the window still attends correctly.
        """
        slots = self.slots
        everything = slice(0, slots)
        if len(positions) == 1:
            position = int(positions[0])
            slot = position % slots
            self.k.write(slice(slot, slot + 1), k_new)
            self.v.write(slice(slot, slot + 1), v_new)
            self.pos[slot] = position
            # before the ring wraps, only its first position+1 slots hold anything
            used = everything if position >= slots else slice(0, position + 1)
            return self.k.read(used), self.v.read(used), self.pos[used].copy()
        # ring entries the earliest new token can still see (none on a fresh prefill)
        old = np.flatnonzero(self.pos >= max(0, int(positions[0]) - self.window + 1))
        # keys [n_kv, hd, ≤W+T], values [n_kv, ≤W+T, hd]
        keys = np.concatenate([self.k.read(old), self.k.layout(k_new)], axis=2)
        values = np.concatenate([self.v.read(old), self.v.layout(v_new)], axis=1)
        pos = np.concatenate([self.pos[old], positions])
        keep = slice(max(0, len(positions) - slots), len(positions))
        ring = positions[keep] % slots
        self.k.write(ring, k_new[keep])
        self.v.write(ring, v_new[keep])
        self.pos[ring] = positions[keep]
        return keys, values, pos


class KVCache:
    """The caches of one conversation, keyed by owning layer index."""

    def __init__(
        self,
        config: TextConfig,
        max_context: int,
        layers: Iterable[int],
        dtype: str = "fp32",
    ) -> None:
        self.max_context = max_context
        self.dtype = check_kv_dtype(dtype)
        self.layers: dict[int, GlobalKV | SlidingKV] = {}
        n_kv, hd = config.num_key_value_heads, config.head_dim
        for i in layers:
            if config.kv_source(i) != i:
                continue
            if config.is_sliding(i):
                self.layers[i] = SlidingKV(config.sliding_window, n_kv, hd, dtype, max_context)
            else:
                self.layers[i] = GlobalKV(max_context, n_kv, hd, dtype)

    @property
    def nbytes(self) -> int:
        """Memory held by all buffers, in bytes."""
        return sum(c.k.nbytes + c.v.nbytes for c in self.layers.values())
