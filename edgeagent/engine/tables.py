"""Embedding tables that stay on disk: rows read on demand into a bounded LRU.

``embed_tokens_per_layer`` is ``[262144, L·256]`` — 4 GB in bfloat16 for E2B,
more than the rest of the quantized model — and a step needs only the rows of
its own tokens. Reading rows through the memory map would leave every page
ever touched resident (file-backed RSS growing with the number of distinct
tokens seen), so rows are read with ``pread`` into a preallocated cache of
``capacity`` rows, least recently used first out. Nothing of the file stays
mapped in the process; resident memory is the cache, whatever the vocabulary.
The token embedding table (``embed_tokens``) is read the same way.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.reference import F32
from edgeagent.errors import CheckpointError


class RowTable:
    """Rows of a ``[V, W]`` tensor at ``offset`` in ``path``, cached ``capacity`` at a time."""

    def __init__(
        self,
        path: Path,
        offset: int,
        shape: tuple[int, int],
        dtype: np.dtype[Any],
        capacity: int,
    ) -> None:
        if capacity < 1:
            raise CheckpointError(f"row cache capacity must be ≥ 1, got {capacity}")
        self.path = path
        self.offset = offset
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize
        self.capacity = min(capacity, shape[0])
        self._rows = np.empty((self.capacity, shape[1]), dtype=self.dtype)  # [C, W] stored dtype
        self._slot: OrderedDict[int, int] = OrderedDict()  # row id -> slot, oldest first
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.reads = 0  # rows read from disk, for tests and stats

    @property
    def nbytes(self) -> int:
        """Memory the cache can hold, in bytes."""
        return self._rows.nbytes

    def close(self) -> None:
        """Close the file (the table is unusable afterwards)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` ``[T]`` as float32 ``[T, W]``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((len(ids), self.shape[1]), dtype=F32)
        with self._lock:
            for n, row in enumerate(ids.tolist()):
                out[n] = self._rows[self._fetch(row)]
        return out

    def _fetch(self, row: int) -> int:
        """The slot holding ``row``, read from disk into the least recently used slot if needed."""
        slot = self._slot.get(row)
        if slot is not None:
            self._slot.move_to_end(row)
            return slot
        if not 0 <= row < self.shape[0]:
            raise CheckpointError(f"{self.path}: row {row} outside 0…{self.shape[0] - 1}")
        if len(self._slot) < self.capacity:
            slot = len(self._slot)
        else:
            _, slot = self._slot.popitem(last=False)
        view = memoryview(self._rows[slot].view(np.uint8))
        got = os.preadv(self._fd, [view], self.offset + row * self.row_bytes)
        if got != self.row_bytes:
            raise CheckpointError(f"{self.path}: short read of row {row} ({got} bytes)")
        self._slot[row] = slot
        self.reads += 1
        return slot
