"""The audio encoder's projections on the engine's quantized kernels (``MatMulNBits``).

The engine's quantized backend (:mod:`edgeagent.engine.ort_kernels`) runs
matrices from a :class:`~edgeagent.engine.quantize.QuantizedStore`. The text
decoder's store covers the text weights only; this module writes the audio
projections into a store of their own, in the same format (blockwise
symmetric 4- or 8-bit codes, outlier columns pre-scaled), beside the
checkpoint as ``edgeagent-audio-q{bits}b{block}/``, and builds one
ONNX Runtime session per group of work from it. The sub-sampling input
projection and the embedder's projection, which feed the encoder and the
decoder directly, stay at 8 bits.

Sessions per conformer block (:data:`~edgeagent.engine.audio.kernels.FUSED_PARTS`):
each half-step FFN (``W1``, SiLU, ``W2``), q/k/v, the attention's output
projection, ``linear_start`` with its GLU, ``linear_end``: six calls where
ten projections run. A streaming push sends the same few rows through every
session (4 encoder frames per 160 ms), so each session keeps an IOBinding
per row count with its input and output buffers (:class:`BoundCall`)
instead of building one per call. numpy's BLAS is set to one thread: its
spinning threads otherwise take the core the kernels run on (the log-mel's
small matmul alone went from 1 to 12 ms per push).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeagent.engine.audio.kernels import (
    FUSED_PARTS,
    AudioKernels,
    projection_weights,
)
from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.errors import EngineError

if TYPE_CHECKING:
    from edgeagent.engine.ort_kernels import GraphBuilder, SessionFactory

_LOGGER = logging.getLogger(__name__)

SENSITIVE = ("subsample_conv_projection.input_proj_linear", "embedding_projection")
AUDIO_BLOCK_SIZES = (32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 256
"""Weights per scale in the audio copy. At 4 rows per call (a 160 ms push) x86's
``MatMulNBits`` int8 kernel costs 0.62x at 256 what it costs at 64 (its work per
row and block, not memory, bounds it); 4-bit agreement with the float encoder
drops (cosine 0.83 -> 0.77 on random E2B weights; 8-bit: 0.998). Measurements in
``benchmarks/README.md`` (``audio_kernels.py``, ``audio_encoder.py``)."""
MAX_BOUND_ROWS = 64  # calls with more rows (whole clips) bind fresh buffers each time
F32 = np.float32


def check_audio_format(bits: int, block_size: int) -> None:
    """EngineError unless the audio kernels run ``bits``-bit codes in blocks of ``block_size``."""
    from edgeagent.engine.quantize import BITS  # noqa: PLC0415

    if bits not in BITS:
        raise EngineError(f"audio bits must be one of {BITS}, got {bits}")
    if block_size not in AUDIO_BLOCK_SIZES:
        raise EngineError(f"audio block size must be one of {AUDIO_BLOCK_SIZES}, got {block_size}")


def audio_store_dir(checkpoint_dir: str | Path, bits: int, block_size: int) -> Path:
    """Where the quantized audio projections of a checkpoint live."""
    return Path(checkpoint_dir) / f"edgeagent-audio-q{bits}b{block_size}"


class BoundCall:
    """One session's float32 call ``x [T, in] -> (y_1 [T, out_1], …)`` over fixed buffers.

    The input and each output have one buffer of :data:`MAX_BOUND_ROWS` rows; a
    call with ``T`` rows binds views of their first ``T`` rows (contiguous), so
    memory stays the same however many distinct row counts a lagging stream
    produces. Outputs are views the next call overwrites: callers consume them
    first (the encoder always makes new arrays from them). One call at a time.
    """

    def __init__(self, session: Any, width: int, outputs: dict[str, int]) -> None:
        self.session = session
        self.width = width
        self.outputs = outputs
        self._x = np.empty((MAX_BOUND_ROWS, width), F32)  # [64, in]
        self._ys = tuple(np.empty((MAX_BOUND_ROWS, n), F32) for n in outputs.values())
        self._bindings: dict[int, Any] = {}

    def _bind(self, x: np.ndarray, ys: tuple[np.ndarray, ...]) -> Any:
        b = self.session.io_binding()
        b.bind_input("x", "cpu", 0, F32, list(x.shape), x.ctypes.data)
        for name, y in zip(self.outputs, ys, strict=True):
            b.bind_output(name, "cpu", 0, F32, list(y.shape), y.ctypes.data)
        return b

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = x.shape[0]
        if rows > MAX_BOUND_ROWS:
            x = np.ascontiguousarray(x, dtype=F32)
            ys = tuple(np.empty((rows, n), F32) for n in self.outputs.values())
            self.session.run_with_iobinding(self._bind(x, ys), None)
            return ys
        ys = tuple(y[:rows] for y in self._ys)  # views of the leading rows: contiguous
        binding = self._bindings.get(rows)
        if binding is None:
            binding = self._bindings[rows] = self._bind(self._x[:rows], ys)
        self._x[:rows] = x
        self.session.run_with_iobinding(binding, None)
        return ys


@dataclass(frozen=True)
class BoundProjection:
    """A one-output :class:`BoundCall` as a :class:`~edgeagent.engine.audio.kernels.Linear`."""

    call: BoundCall

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.call(x)[0]


class AudioSessions:
    """Builds the audio path's sessions over one store (graphs of ``MatMulNBits`` nodes)."""

    def __init__(self, factory: SessionFactory) -> None:
        self.factory = factory

    def _graph(self) -> GraphBuilder:
        from edgeagent.engine.ort_kernels import GraphBuilder  # noqa: PLC0415

        return GraphBuilder(self.factory.store)

    def _session(self, builder: GraphBuilder, width: int, outputs: dict[str, int]) -> BoundCall:
        call = self.factory.call(builder, {"x": width}, outputs)
        return BoundCall(call.session, width, outputs)

    def projection(self, key: str) -> BoundProjection:
        """``x @ W(key).T``."""
        b = self._graph()
        m = b.matmul("x", key, "y")
        return BoundProjection(self._session(b, m.k, {"y": m.n}))

    def shared_input(self, keys: tuple[str, ...]) -> BoundCall:
        """``(x @ W(key).T for key in keys)`` in one session."""
        b = self._graph()
        outs = {f"y{n}": b.matmul("x", key, f"y{n}") for n, key in enumerate(keys)}
        return self._session(b, outs["y0"].k, {name: m.n for name, m in outs.items()})

    def silu_ffn(self, w1: str, w2: str) -> BoundProjection:
        """``W2 · silu(W1 · x)`` in one session."""
        b = self._graph()
        h = b.onnx.helper
        m = b.matmul("x", w1, "up")
        b.nodes += [
            h.make_node("Sigmoid", ["up"], ["gate"]),
            h.make_node("Mul", ["up", "gate"], ["act"]),
        ]
        out = b.matmul("act", w2, "y")
        return BoundProjection(self._session(b, m.k, {"y": out.n}))

    def glu(self, key: str) -> BoundProjection:
        """``a · sigmoid(b)`` of ``[a | b] = x @ W(key).T`` in one session."""
        b = self._graph()
        h = b.onnx.helper
        m = b.matmul("x", key, "ab")
        b.nodes += [
            h.make_node("Split", ["ab"], ["a", "b"], axis=-1, num_outputs=2),
            h.make_node("Sigmoid", ["b"], ["gate"]),
            h.make_node("Mul", ["a", "gate"], ["y"]),
        ]
        return BoundProjection(self._session(b, m.k, {"y": m.n // 2}))

    def kernels(self, name: str, weights: AudioWeights) -> AudioKernels:
        """Every projection, and every block's fused parts, as sessions."""
        fused_away: set[str] = set()
        fused: dict[str, Any] = {}
        for i in range(len(weights.conformer)):
            p = f"conformer.{i}."
            for part, keys in FUSED_PARTS.items():
                full = tuple(p + key for key in keys)
                if part.startswith("ffw_layer_"):
                    fused[p + part] = self.silu_ffn(*full)
                elif part == "lconv1d.glu":
                    fused[p + part] = self.glu(*full)
                else:
                    fused[p + part] = self.shared_input(full)
                fused_away.update(full)
        linears = {
            n: self.projection(n) for n, _ in projection_weights(weights) if n not in fused_away
        }
        return AudioKernels(name, linears, fused)


def quantized_audio_kernels(
    weights: AudioWeights, directory: Path, bits: int = 4,
    block_size: int = DEFAULT_BLOCK_SIZE, threads: int = 0, source: Any = None,
) -> AudioKernels:  # fmt: skip
    """Sessions over the audio store in ``directory``, written first when absent or stale."""
    from edgeagent.engine.matrix_store import open_matrix_store, tower_manifest  # noqa: PLC0415
    from edgeagent.engine.ort_kernels import (  # noqa: PLC0415
        SessionFactory,
        single_threaded_blas,
    )

    check_audio_format(bits, block_size)
    manifest = tower_manifest(projection_weights(weights), bits, block_size, source, SENSITIVE)
    store = open_matrix_store(directory, manifest, projection_weights(weights))
    if not single_threaded_blas():
        _LOGGER.debug("numpy's BLAS not found: its threads may compete with the kernels'")
    sessions = AudioSessions(SessionFactory(store, threads))
    try:
        return sessions.kernels(f"quantized q{bits}", weights)
    except KeyError as exc:  # pragma: no cover - a store missing a projection
        raise EngineError(f"{directory}: no quantized projection {exc}") from exc
