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

A backend may also offer *fused* forms of the groups of work inside a block
that share an input or feed each other through an elementwise function
(:data:`FUSED_PARTS`): one call instead of two or three, the activation
inside. Without them, :func:`fused_or_composed` builds the same arithmetic
from the projections (the reference does exactly what it did unfused).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.errors import EngineError

F32 = np.float32


class Linear(Protocol):
    """``x [T, in] -> [T, out]`` float32 for one ``[out, in]`` weight matrix."""

    def __call__(self, x: np.ndarray, /) -> np.ndarray: ...


class Projections(Protocol):
    """``x [T, in] -> (x @ W_1.T, x @ W_2.T, …)``: several projections of one input."""

    def __call__(self, x: np.ndarray, /) -> tuple[np.ndarray, ...]: ...


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """RMSNorm over the last axis, ``x / sqrt(mean(x²) + eps) · weight``, float32.

    Every row is computed the same way whatever the number of rows, so a
    frame normalised in a one-frame push equals the same frame in a longer
    one to the last bit (streaming == offline). The text engine's
    ``reference.rms_norm`` takes a float64 shortcut for a single row.
    """
    sum_sq = np.add.reduce(x * x, axis=-1, keepdims=True)  # [.., 1]
    out = x * np.power(sum_sq * F32(1.0 / x.shape[-1]) + F32(eps), F32(-0.5))
    if weight is not None:
        out *= weight
    return out


def silu(x: np.ndarray) -> np.ndarray:
    """``x · sigmoid(x)`` in float32 (``exp`` may overflow to ``inf`` harmlessly)."""
    with np.errstate(over="ignore"):
        return x / (F32(1.0) + np.exp(-x))


def glu(h: np.ndarray) -> np.ndarray:
    """``a · sigmoid(b)`` of ``h = [a | b]``: ``[T, 2H] -> [T, H]``."""
    a, b = np.split(h, 2, axis=-1)
    with np.errstate(over="ignore"):
        return a / (F32(1.0) + np.exp(-b))


@dataclass(frozen=True)
class SiluFeedForward:
    """``W2 · silu(W1 · h)``: ``[T, H] -> [T, 4H] -> [T, H]`` from two projections."""

    w1: Linear
    w2: Linear

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return self.w2(silu(self.w1(h)))


@dataclass(frozen=True)
class GluProjection:
    """``glu(W · h)``: ``[T, H] -> [T, 2H] -> [T, H]`` from one projection."""

    w: Linear

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return glu(self.w(h))


@dataclass(frozen=True)
class SharedInput:
    """Several projections of one input, one call each."""

    linears: tuple[Linear, ...]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(w(x) for w in self.linears)


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


FUSED_PARTS: dict[str, tuple[str, ...]] = {
    # part of a block -> the projections it fuses, in call order
    "ffw_layer_start": ("ffw_layer_start.ffw_layer_1", "ffw_layer_start.ffw_layer_2"),
    "ffw_layer_end": ("ffw_layer_end.ffw_layer_1", "ffw_layer_end.ffw_layer_2"),
    "attention.attn.qkv": tuple(f"attention.attn.{x}_proj" for x in "qkv"),
    "lconv1d.glu": ("lconv1d.linear_start",),
}
"""Fused parts of conformer block ``i``, named ``conformer.{i}.<part>``:
``ffw_layer_*`` is ``W2·silu(W1·h)`` (:class:`SiluFeedForward`), ``qkv`` is
``(q, k, v)`` of one input (:class:`SharedInput`), ``glu`` is
``glu(linear_start·h)`` (:class:`GluProjection`)."""


@dataclass(frozen=True)
class AudioKernels:
    """The projections of the audio path, by name, as one backend built them.

    ``fused``: optional fused parts by name (see :data:`FUSED_PARTS`); a part
    absent here is composed from ``linears``.
    """

    name: str  # "reference" | "quantized" | …
    linears: Mapping[str, Linear]
    fused: Mapping[str, Callable[[np.ndarray], Any]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Linear:
        try:
            return self.linears[key]
        except KeyError:
            raise EngineError(f"audio kernels {self.name!r} have no projection {key!r}") from None


def fused_or_composed(kernels: AudioKernels, block: int, part: str) -> Callable[[np.ndarray], Any]:
    """Block ``block``'s fused ``part`` from the backend, or composed from its projections."""
    prefix = f"conformer.{block}."
    fused = kernels.fused.get(prefix + part)
    if fused is not None:
        return fused
    linears = [kernels[prefix + name] for name in FUSED_PARTS[part]]
    if part.startswith("ffw_layer_"):
        return SiluFeedForward(*linears)
    if part == "lconv1d.glu":
        return GluProjection(*linears)
    return SharedInput(tuple(linears))


def reference_audio_kernels(w: AudioWeights) -> AudioKernels:
    """numpy float32 projections over the checkpoint's own (memory-mapped) matrices."""
    return AudioKernels("reference", {n: DenseLinear(m) for n, m in projection_weights(w)})


def audio_kernels_from(
    name: str, w: AudioWeights, build: Callable[[str, np.ndarray], Linear]
) -> AudioKernels:
    """A backend from ``build(projection_name, weight) -> Linear``, called once per projection."""
    return AudioKernels(name, {n: build(n, m) for n, m in projection_weights(w)})
