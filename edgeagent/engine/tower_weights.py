"""What the audio and vision towers share about their weights.

The prefix a tower's tensors live under, shape-checked views of them, the
Gemma 3n multimodal embedder's weights (``embed_audio.*`` / ``embed_vision.*``:
the same four tensors for either tower), and random tensors at a tower's
shapes for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeagent.engine.reference import as_f32
from edgeagent.errors import CheckpointError

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint
    from edgeagent.engine.safetensors_io import TensorSpec

InitStd = Callable[[str, tuple[int, ...]], tuple[float, float]]
"""``(name, shape) -> (mean, std)`` of a random tensor's values."""


def tower_prefix(ckpt: Checkpoint, candidates: tuple[str, ...], tower: str) -> str:
    """The first of ``candidates`` with tensors under it; CheckpointError if none has."""
    for prefix in candidates:
        if ckpt.tensors_under(prefix):
            return prefix
    raise CheckpointError(f"{ckpt.path}: no tensors under {candidates[0]} (no {tower} encoder)")


class TensorReader:
    """Shape-checked views of the tensors under one prefix."""

    def __init__(self, get: Callable[[str], np.ndarray], prefix: str, source: str) -> None:
        self.get, self.prefix, self.source = get, prefix, source

    def mat(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The tensor ``prefix + name`` as stored (a view); CheckpointError naming it if it is
        missing or not ``shape``."""
        full = self.prefix + name
        try:
            w = self.get(full)
        except KeyError as exc:
            raise CheckpointError(f"{self.source}: missing tensor {full}") from exc
        if tuple(w.shape) != shape:
            raise CheckpointError(
                f"{self.source}: tensor {full} has shape {list(w.shape)}, expected {list(shape)}"
            )
        return w

    def vec(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The same, widened to float32 once (norm weights, biases, scales)."""
        return as_f32(self.mat(name, shape))


@dataclass(frozen=True)
class EmbedderWeights:
    """``embed_*.*``: a tower's outputs into the text embedding space."""

    embedding: np.ndarray  # [vocab, H] (hard tokens)
    hard_embedding_norm: np.ndarray  # [H] f32
    soft_embedding_norm: np.ndarray  # [H] f32
    embedding_projection: np.ndarray  # [text_H, H]

    @classmethod
    def read(
        cls, r: TensorReader, vocab_size: int, hidden: int, text_hidden: int
    ) -> EmbedderWeights:
        """The embedder under ``r``'s prefix, for a tower ``hidden`` wide."""
        return cls(
            embedding=r.mat("embedding.weight", (vocab_size, hidden)),
            hard_embedding_norm=r.vec("hard_embedding_norm.weight", (hidden,)),
            soft_embedding_norm=r.vec("soft_embedding_norm.weight", (hidden,)),
            embedding_projection=r.mat("embedding_projection.weight", (text_hidden, hidden)),
        )


def random_tensors(
    specs: Iterable[TensorSpec], init: InitStd, seed: int, dtype: np.dtype[Any]
) -> dict[str, np.ndarray]:
    """Each spec's tensor, random with ``init``'s mean and std, in memory as ``dtype``."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        mean, std = init(spec.name, spec.shape)
        values = rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(std)
        out[spec.name] = (values + np.float32(mean)).astype(dtype)
    return out
