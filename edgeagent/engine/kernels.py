"""The kernel seam: the projections the model code calls, built by a backend.

The model code never multiplies by a weight matrix itself. A backend builds,
once per loaded checkpoint, one object per projection (``x [T, in] -> [T, out]``)
and the FFN of each layer as *slabs*: gate/up split by output rows, down by
input columns. A MatFormer tier runs the slabs that cover its FFN width, so
every tier shares the same kernels (and whatever the backend prepacked).

Two backends:

- ``reference`` (this module): numpy float32 on views of the memory-mapped
  checkpoint, exact; a slab is a view cut at whatever width a tier asks for.
- ``quantized`` (:mod:`edgeagent.engine.ort_kernels`): ONNX Runtime
  ``MatMulNBits`` over 4- or 8-bit blockwise weights with int8 dynamic
  activations; slabs are cut where the checkpoint's named tiers put their
  widths, one ONNX Runtime session each.

Everything else the model does (norms, AltUp, RoPE, attention over the KV
cache, sampling) is small next to the projections and stays numpy float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgeagent.engine.reference import F32, gelu_tanh, linear
from edgeagent.errors import TierError

if TYPE_CHECKING:
    from edgeagent.engine.quantize import QuantizedStore
    from edgeagent.engine.weights import LayerWeights, TextWeights

KERNELS = ("reference", "quantized")


class Projection(Protocol):
    """``x [T, in] -> [T, out]`` float32: one weight matrix, ``[out, in]`` in the checkpoint."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class Projections(Protocol):
    """Several projections of one input: ``x [T, in] -> ([T, out_0], [T, out_1], …)``."""

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]: ...


class GatedDown(Protocol):
    """``down_proj(gelu(gate') · up)`` of one slab: ``[T, w], [T, w], cutoff -> [T, H]``.

    ``gate' = relu(gate − cutoff)`` on layers with activation sparsity (``cutoff``
    ``[T, 1]``, computed over the tier's whole FFN width), else ``gate``.
    """

    def __call__(
        self, gate: np.ndarray, up: np.ndarray, cutoff: np.ndarray | None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class FFNSlab:
    """FFN units ``start … stop−1``.

    Either two steps — ``gate_up(x) -> (gate, up)`` ``[T, stop−start]`` each,
    then ``down(gate, up, cutoff) -> [T, H]`` over the matching columns of
    ``down_proj`` (layers with activation sparsity need every slab's gate for
    the cutoff in between) — or, where a backend fuses them on a layer without
    sparsity, ``fused(x) -> [T, H]`` alone.
    """

    start: int
    stop: int
    gate_up: Projections | None = None
    down: GatedDown | None = None
    fused: Projection | None = None


class PerLayerGate(Protocol):
    """``per_layer_projection(gelu(per_layer_input_gate(x)) · per_layer_input)``:
    ``[T, H], [T, Hp] -> [T, H]``."""

    def __call__(self, x: np.ndarray, per_layer_input: np.ndarray) -> np.ndarray: ...


class PassMemory(Protocol):
    """Memory hooks around a multi-token pass (a prefill), whose activations are ~1 MB blocks
    that a long-lived heap would otherwise keep resident after they are freed."""

    def begin(self) -> None:
        """A multi-token pass starts."""

    def release(self) -> None:
        """Give what the pass has freed so far back to the OS (between its blocks)."""

    def end(self) -> None:
        """The pass is over (also after an error)."""


class FFN(Protocol):
    """A layer's FFN as slabs; a tier asks for the slabs covering its width."""

    def slabs(self, width: int) -> Sequence[FFNSlab]: ...


@dataclass(frozen=True)
class LayerKernels:
    """The projections of decoder layer ``i`` (checkpoint names in the comments)."""

    attn_in: Projections  # q_proj (and k_proj, v_proj on cache-owning layers)
    o_proj: Projection  # self_attn.o_proj
    laurel: Projection  # laurel.linear_right(laurel.linear_left(x))
    ffn: FFN  # mlp.gate_proj, mlp.up_proj, mlp.down_proj
    per_layer_gate: PerLayerGate  # per_layer_input_gate, per_layer_projection


@dataclass(frozen=True)
class ModelKernels:
    """Every projection of the text decoder, as one backend built them."""

    name: str  # "reference" | "quantized"
    layers: tuple[LayerKernels, ...]
    per_layer_model_projection: Projection
    altup_projections: tuple[Projection, ...]
    altup_unembed_projections: tuple[Projection, ...]
    lm_head: Projection  # tied to embed_tokens
    description: str = ""
    store: QuantizedStore | None = None  # the quantized copy the kernels read, if any
    # around and between the layers of a multi-token pass: keeps its activations from staying
    # resident
    pass_memory: PassMemory | None = None

    def check_widths(self, ffn_dims: Sequence[int], layers: Sequence[int]) -> None:
        """Raise TierError unless every layer's FFN can run at its width."""
        for i in layers:
            self.layers[i].ffn.slabs(ffn_dims[i])


# -- reference backend ---------------------------------------------------------------------


@dataclass(frozen=True)
class DenseProjection:
    """``reference.linear`` with a weight in its stored dtype (a checkpoint view)."""

    weight: np.ndarray  # [out, in]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return linear(x, self.weight)


@dataclass(frozen=True)
class DenseProjections:
    """Several ``reference.linear`` of one input."""

    weights: tuple[np.ndarray, ...]  # each [out_k, in]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(linear(x, w) for w in self.weights)


@dataclass(frozen=True)
class DenseChain:
    """``second(first(x))``: LAuReL's low-rank pair."""

    first: np.ndarray  # [r, in]
    second: np.ndarray  # [out, r]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return linear(linear(x, self.first), self.second)


@dataclass(frozen=True)
class DensePerLayerGate:
    """:class:`PerLayerGate` in numpy float32."""

    gate: np.ndarray  # [Hp, H] per_layer_input_gate
    projection: np.ndarray  # [H, Hp] per_layer_projection

    def __call__(self, x: np.ndarray, per_layer_input: np.ndarray) -> np.ndarray:
        gated = gelu_tanh(linear(x, self.gate)) * per_layer_input  # [T, Hp]
        return linear(gated, self.projection)  # [T, Hp] -> [T, H]


@dataclass(frozen=True)
class DenseGatedDown:
    """:class:`GatedDown` in numpy float32, as transformers computes it."""

    weight: np.ndarray  # [H, w] a view of down_proj

    def __call__(self, gate: np.ndarray, up: np.ndarray, cutoff: np.ndarray | None) -> np.ndarray:
        if cutoff is not None:
            gate = np.maximum(gate - cutoff, F32(0.0))  # activation sparsity
        return linear(gelu_tanh(gate) * up, self.weight)  # [T, w] -> [T, H]


@dataclass(frozen=True)
class DenseFFN:
    """One slab of views per request, cut at exactly the width asked for."""

    lw: LayerWeights

    def slabs(self, width: int) -> Sequence[FFNSlab]:
        full = self.lw.gate_proj.shape[0]
        if not 0 < width <= full:
            raise TierError(f"FFN width {width} is outside 1…{full}")
        gate, up, down = self.lw.ffn_slab(width)
        return (FFNSlab(0, width, DenseProjections((gate, up)), DenseGatedDown(down)),)


def reference_kernels(weights: TextWeights) -> ModelKernels:
    """numpy float32 projections over the checkpoint's own (memory-mapped) matrices."""
    layers = []
    for lw in weights.layers:
        a = lw.self_attn
        attn = (
            (a.q_proj,) if a.k_proj is None or a.v_proj is None else (a.q_proj, a.k_proj, a.v_proj)
        )
        layers.append(
            LayerKernels(
                attn_in=DenseProjections(attn),
                o_proj=DenseProjection(a.o_proj),
                laurel=DenseChain(lw.laurel_left, lw.laurel_right),
                ffn=DenseFFN(lw),
                per_layer_gate=DensePerLayerGate(lw.per_layer_input_gate, lw.per_layer_projection),
            )
        )
    return ModelKernels(
        name="reference",
        layers=tuple(layers),
        per_layer_model_projection=DenseProjection(weights.per_layer_model_projection),
        altup_projections=tuple(DenseProjection(p) for p in weights.altup_projections),
        altup_unembed_projections=tuple(
            DenseProjection(p) for p in weights.altup_unembed_projections
        ),
        lm_head=DenseProjection(weights.embed_tokens),
        description="numpy float32",
    )
