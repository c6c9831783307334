"""The audio encoder's kernel seam: one ``linear`` callable per projection.

The encoder never multiplies by a weight matrix itself: it calls
``kernels.<name>(x)`` with ``x`` ``[T, in]`` float32 and gets ``[T, out]``
float32. A backend builds these callables once per loaded checkpoint:

- ``reference`` (here): numpy over the memory-mapped checkpoint views (bf16
  weights are widened at the point of use, never kept), float32 in and out,
  float64 sums (see :class:`DenseLinear`).
- ``quantized``: the engine's ONNX Runtime ``MatMulNBits`` projections plug in
  through :func:`audio_kernels_from` — any callable ``[T, in] -> [T, out]``
  per projection name will do, e.g. one built from a quantized store.

Names are the checkpoint keys relative to ``model.audio_tower.`` /
``model.embed_audio.`` without ``.weight``, e.g.
``conformer.3.ffw_layer_start.ffw_layer_1`` or ``embedding_projection``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.errors import EngineError


class Linear(Protocol):
    """``x [T, in] -> [T, out]`` float32 for one ``[out, in]`` weight matrix."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DenseLinear:
    """``x @ weight.T`` over a weight in its stored dtype (a checkpoint view).

    Accumulates in float64 and rounds to float32: every output row is then,
    to the last bit in all but vanishingly rare ties, independent of how many
    rows share the call. A float32 GEMM blocks its sums differently for
    different row counts (~1e-7 relative), which an attention with logits
    near the soft cap can amplify tenfold per block; with this kernel a
    stream fed 10 ms blocks and one fed the whole clip agree to float32
    rounding, so tests can tell state handling from arithmetic noise.
    """

    weight: np.ndarray  # [out, in]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return linear64(x, self.weight)


def linear64(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``x [.., in] @ weight[out, in].T`` accumulated in float64, returned as float32."""
    return np.matmul(x.astype(np.float64), weight.astype(np.float64).T).astype(np.float32)


def projection_weights(w: AudioWeights) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, [out, in] matrix)`` of every projection the encoder runs, in order.

    ``pos_proj`` is absent: it only ever sees a constant table, projected once at load.
    """
    yield "subsample_conv_projection.input_proj_linear", w.subsample.input_proj_linear
    for i, b in enumerate(w.conformer):
        p = f"conformer.{i}."
        for part, ffw in (
            ("ffw_layer_start", b.ffw_layer_start),
            ("ffw_layer_end", b.ffw_layer_end),
        ):
            yield p + part + ".ffw_layer_1", ffw.ffw_layer_1
            yield p + part + ".ffw_layer_2", ffw.ffw_layer_2
        yield p + "attention.attn.q_proj", b.attention.q_proj
        yield p + "attention.attn.k_proj", b.attention.k_proj
        yield p + "attention.attn.v_proj", b.attention.v_proj
        yield p + "attention.post", b.attention.post
        yield p + "lconv1d.linear_start", b.lconv1d.linear_start
        yield p + "lconv1d.linear_end", b.lconv1d.linear_end
    yield "embedding_projection", w.embedder.embedding_projection


@dataclass(frozen=True)
class AudioKernels:
    """The projections of the audio path, by name, as one backend built them."""

    name: str  # "reference" | "quantized" | …
    linears: Mapping[str, Linear]

    def __getitem__(self, key: str) -> Linear:
        try:
            return self.linears[key]
        except KeyError:
            raise EngineError(f"audio kernels {self.name!r} have no projection {key!r}") from None


def reference_audio_kernels(w: AudioWeights) -> AudioKernels:
    """numpy float32 projections over the checkpoint's own (memory-mapped) matrices."""
    return AudioKernels("reference", {n: DenseLinear(m) for n, m in projection_weights(w)})


def audio_kernels_from(
    name: str, w: AudioWeights, build: Callable[[str, np.ndarray], Linear]
) -> AudioKernels:
    """A backend from ``build(projection_name, weight) -> Linear``, called once per projection."""
    return AudioKernels(name, {n: build(n, m) for n, m in projection_weights(w)})
