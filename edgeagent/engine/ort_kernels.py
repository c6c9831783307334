"""The ``quantized`` kernels: ONNX Runtime ``MatMulNBits`` over a checkpoint's quantized copy.

Every projection and the tied LM head run as ``com.microsoft.MatMulNBits``
(4- or 8-bit blockwise weights, ``accuracy_level=4``: activations are
quantized to int8 per block on the fly and the products run in integer
arithmetic — NEON dot-product / i8mm / KleidiAI on ARM boards, VNNI on x86).

One small ONNX graph, one session, per group of work that shares an input:
q/k/v; LAuReL's pair; an FFN slab (gate, up, GELU, product and down fused on
layers without activation sparsity; gate/up, then cutoff-ReLU-GELU-down, on
the others); the per-layer input gate and projection; the LM head in
vocabulary chunks. Graph initializers point into the store's safetensors
file as external data, so each session reads its own byte range once and
prepacks it into private memory; nothing is duplicated and no tier owns a
session: a tier picks FFN slabs. Sessions share one process-wide thread pool
(threads from the hardware profile). Single-token calls (decode) reuse an
IOBinding whose inputs and outputs are preallocated buffers, with
``run_options=None``.

Memory: pages of the store that ONNX Runtime keeps mapped after prepacking
are dropped from the resident set as sessions are built; glibc is told to
map large blocks and trim between a prefill's layers (:class:`GlibcPassMemory`); numpy's
BLAS runs on one thread so that it does not take the kernels' second core.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.config import TextConfig
from edgeagent.engine.kernels import FFNSlab, LayerKernels, ModelKernels
from edgeagent.engine.quantize import QuantizedMatrix, QuantizedStore, slab_key
from edgeagent.engine.reference import F32
from edgeagent.errors import EngineError, TierError

_LOGGER = logging.getLogger(__name__)

ACCURACY_LEVEL = 4  # int8 activations
LM_HEAD_CHUNK = 16384  # vocabulary rows per LM-head session: ~10 MB of 4-bit weights each
MMAP_THRESHOLD = 2 * 2**20  # glibc: larger blocks are mapped and unmapped, never kept
PASS_MMAP_THRESHOLD = 2**19  # the same during a multi-token pass (see GlibcPassMemory)
RELEASE_EVERY = 48 * 2**20  # drop mapped initializer pages after this many bytes of sessions
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
_MADV_DONTNEED = 4  # madvise advice (Linux)
_OPSETS = (("", 21), ("com.microsoft", 1))
_threads_lock = threading.Lock()
_global_threads: int | None = None


def _ort() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415 - optional at import time: reference runs without it
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise EngineError("quantized kernels need onnxruntime (pip install onnxruntime)") from exc
    return onnxruntime


def _use_threads(threads: int) -> int:
    """Create ONNX Runtime's process-wide thread pool once (later loads share it)."""
    global _global_threads  # noqa: PLW0603 - one ONNX Runtime environment per process
    with _threads_lock:
        if _global_threads is None:
            from onnxruntime.capi import _pybind_state  # noqa: PLC0415

            wanted = threads or os.cpu_count() or 1
            _pybind_state.set_global_thread_pool_sizes(wanted, 1)
            _global_threads = wanted
        elif threads and threads != _global_threads:
            _LOGGER.warning(
                "ONNX Runtime's thread pool already has %d threads; ignoring threads=%d",
                _global_threads,
                threads,
            )
        return _global_threads


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - not a POSIX process
        return None


class GlibcPassMemory:
    """:class:`~edgeagent.engine.kernels.PassMemory` for glibc's malloc.

    glibc's mmap threshold rises to 32 MB as large blocks are freed, after
    which prefill's activations are carved from heaps that never shrink: ~250 MB
    of E2B's resident set after one 128-token prefill. Outside a pass, blocks ≥
    ``MMAP_THRESHOLD`` (2 MB) are mapped and unmapped; a decode step's blocks are
    smaller (its 1 MB logits would otherwise cost 256 page faults every step).
    During a pass the threshold is ``PASS_MMAP_THRESHOLD`` (512 KB), so its
    ``[128, 2048]`` activations (1 MB) are unmapped when freed instead of
    fragmenting the heap, and ``malloc_trim`` returns what smaller blocks freed
    between layers and after the pass.
    """

    def __init__(self, libc: Any) -> None:
        self._libc = libc
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)

    def begin(self) -> None:
        self._libc.mallopt(_M_MMAP_THRESHOLD, PASS_MMAP_THRESHOLD)

    def release(self) -> None:
        self._libc.malloc_trim(0)

    def end(self) -> None:
        self._libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        self._libc.malloc_trim(0)


def _bound_malloc() -> GlibcPassMemory | None:
    """Keep prefill's activations from staying resident (glibc only; None elsewhere)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return GlibcPassMemory(libc)


_BLAS_THREAD_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def single_threaded_blas() -> bool:
    """Run numpy's OpenBLAS on one thread; True if it was found and set.

    With the quantized kernels numpy only does the small work between them
    (attention over the cache, norms). OpenBLAS's own threads busy-wait after
    each call and take the core ONNX Runtime's second thread needs: a prefill
    then runs its kernels at half speed (2.0 s of kernels took 3.4 s in a
    forward pass, E2B, 128 tokens, 2 cores).
    """
    with open("/proc/self/maps", encoding="utf-8") as maps:
        paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_THREAD_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(1)
                return True
    return False


def release_mapped_pages(path: Path) -> int:
    """Drop this process's resident, unmodified pages of mappings of ``path``; return bytes.

    ONNX Runtime memory-maps external initializers (private, writable) and
    keeps the mappings of those it does not prepack — MatMulNBits' scales,
    which the packed buffer holds a copy of. The packed copy is what runs, so
    these clean file pages need not stay resident; read again, they fault back
    in from the file. A mapping with any page written (``Anonymous`` > 0 in
    smaps) is left alone: dropping it would undo the writes.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "madvise"):
        return 0
    target = str(path.resolve())
    released = 0
    for start, end, anonymous in _mappings_of(target):
        if anonymous:
            continue
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0:
            released += end - start
    return released


def _mappings_of(target: str) -> list[tuple[int, int, int]]:
    """``(start, end, anonymous bytes)`` of each mapping of file ``target``, from smaps."""
    found: list[tuple[int, int, int]] = []
    current: list[int] | None = None
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
                current = None
                if len(head) == 6 and head[5].strip() == target:
                    start, end = (int(a, 16) for a in head[0].split("-"))
                    current = [start, end, 0]
                    found.append((start, end, 0))
            elif current is not None and head[0] == "Anonymous:":
                found[-1] = (current[0], current[1], int(head[1]) * 1024)
    return found


# -- graphs ---------------------------------------------------------------------------------


class GraphBuilder:
    """Builds one session's graph: MatMulNBits nodes over matrices of one store."""

    def __init__(self, store: QuantizedStore) -> None:
        import onnx  # noqa: PLC0415 - authoring is only needed by the quantized kernels

        self.onnx = onnx
        self.store = store
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.weight_bytes = 0

    def _external(self, name: str, dtype: int, dims: Sequence[int], where: tuple[int, int]) -> Any:
        t = self.onnx.TensorProto()
        t.name, t.data_type = name, dtype
        t.dims.extend(dims)
        t.data_location = self.onnx.TensorProto.EXTERNAL
        for key, value in (
            ("location", self.store.weights_file.name),
            ("offset", str(where[0])),
            ("length", str(where[1])),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def matmul(
        self, x: str, key: str, out: str, rows: tuple[int, int] | None = None
    ) -> QuantizedMatrix:
        """``out = x @ W(key)[rows].T`` as MatMulNBits; returns what it multiplies by."""
        m = self.store.matrix(key)
        if rows is not None:
            m = m.rows(*rows)
        tp = self.onnx.TensorProto
        b, s = f"{key}.B", f"{key}.S"
        self.initializers += [
            self._external(b, tp.UINT8, m.qweight_shape, m.qweight),
            self._external(s, tp.FLOAT, (m.scales[1] // 4,), m.scales),
        ]
        if self.store.column_scales(key) is not None:  # outlier columns: x·s @ (W/s).T
            c = f"{key}.C"
            self.initializers.append(
                self._external(c, tp.FLOAT, (m.k,), self.store.file.byte_range(key + ".colscale"))
            )
            self.nodes.append(self.onnx.helper.make_node("Mul", [x, c], [f"{key}.x"]))
            x = f"{key}.x"
        self.nodes.append(
            self.onnx.helper.make_node(
                "MatMulNBits",
                [x, b, s],
                [out],
                domain="com.microsoft",
                K=m.k,
                N=m.n,
                bits=m.bits,
                block_size=self.store.block_size,
                accuracy_level=ACCURACY_LEVEL,
            )
        )
        self.weight_bytes += m.qweight[1] + m.scales[1]
        return m

    def model(self, inputs: dict[str, int], outputs: dict[str, int]) -> bytes:
        """The serialised model with float32 inputs/outputs ``name -> width`` (rows: ``T``)."""
        h = self.onnx.helper
        f32 = self.onnx.TensorProto.FLOAT
        graph = h.make_graph(
            self.nodes,
            "edgeagent",
            [h.make_tensor_value_info(n, f32, ["T", w]) for n, w in inputs.items()],
            [h.make_tensor_value_info(n, f32, ["T", w]) for n, w in outputs.items()],
            self.initializers,
        )
        opsets = [h.make_opsetid(domain, version) for domain, version in _OPSETS]
        return bytes(h.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString())


class OrtCall:
    """One session: float32 inputs ``[T, in_k]`` to float32 outputs ``[T, out_k]``.

    Results of single-token calls are buffers the next call overwrites:
    callers consume them (the model code always makes new arrays from them).
    """

    def __init__(self, session: Any, inputs: dict[str, int], outputs: dict[str, int]) -> None:
        self.session = session
        self.inputs = inputs
        self.outputs = outputs
        self._x1 = tuple(np.zeros((1, n), dtype=F32) for n in inputs.values())
        self._y1 = tuple(np.zeros((1, n), dtype=F32) for n in outputs.values())
        self._bind1 = self._binding(self._x1, self._y1)

    def _binding(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> Any:
        b = self.session.io_binding()
        for name, x in zip(self.inputs, xs, strict=True):
            b.bind_input(name, "cpu", 0, F32, list(x.shape), x.ctypes.data)
        for name, y in zip(self.outputs, ys, strict=True):
            b.bind_output(name, "cpu", 0, F32, list(y.shape), y.ctypes.data)
        return b

    def __call__(self, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = xs[0].shape[0]
        if rows == 1:
            for buffer, x in zip(self._x1, xs, strict=True):
                buffer[...] = x
            self.session.run_with_iobinding(self._bind1, None)
            return self._y1
        xs = tuple(np.ascontiguousarray(x, dtype=F32) for x in xs)
        ys = tuple(np.empty((rows, n), dtype=F32) for n in self.outputs.values())
        self.session.run_with_iobinding(self._binding(xs, ys), None)
        return ys


@dataclass(frozen=True)
class OrtProjections:
    """A one-input :class:`OrtCall` as :class:`~edgeagent.engine.kernels.Projections`."""

    call: OrtCall

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.call(x)


@dataclass(frozen=True)
class OrtProjection:
    """A one-output :class:`OrtCall` as a :class:`~edgeagent.engine.kernels.Projection`."""

    call: OrtCall

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.call(x)[0]


class ChunkedProjection:
    """One projection as several sessions over row ranges (the LM head: ``[V, H]`` in vocabulary
    chunks), so building each session reads and prepacks a bounded slice at a time."""

    def __init__(self, chunks: Sequence[OrtProjection], widths: Sequence[int]) -> None:
        self.chunks = tuple(chunks)
        self.bounds = np.cumsum([0, *widths])
        self._y1 = np.zeros((1, int(self.bounds[-1])), dtype=F32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._y1 if x.shape[0] == 1 else np.empty((x.shape[0], self._y1.shape[1]), F32)
        for n, chunk in enumerate(self.chunks):
            out[:, self.bounds[n] : self.bounds[n + 1]] = chunk(x)
        return out


@dataclass(frozen=True)
class OrtPerLayerGate:
    """:class:`~edgeagent.engine.kernels.PerLayerGate` as one session."""

    call: OrtCall

    def __call__(self, x: np.ndarray, per_layer_input: np.ndarray) -> np.ndarray:
        return self.call(x, per_layer_input)[0]


@dataclass(frozen=True)
class OrtGatedDown:
    """:class:`~edgeagent.engine.kernels.GatedDown` as one session (activation in the graph)."""

    call: OrtCall
    sparse: bool

    def __call__(self, gate: np.ndarray, up: np.ndarray, cutoff: np.ndarray | None) -> np.ndarray:
        if self.sparse:
            if cutoff is None:
                raise EngineError("a sparse layer's FFN needs its cutoff")
            return self.call(gate, up, cutoff)[0]
        return self.call(gate, up)[0]


@dataclass(frozen=True)
class SlabFFN:
    """A layer's FFN as fixed slabs; a width must end where a slab ends."""

    layer: int
    all_slabs: tuple[FFNSlab, ...]

    def slabs(self, width: int) -> Sequence[FFNSlab]:
        for n, slab in enumerate(self.all_slabs):
            if slab.stop == width:
                return self.all_slabs[: n + 1]
        cuts = ", ".join(str(s.stop) for s in self.all_slabs)
        raise TierError(
            f"layer {self.layer}: the quantized FFN is cut at widths {cuts}; {width} is not one "
            "(declare the tier in config.json and quantize again)"
        )


class SessionFactory:
    """Creates the sessions of one store with shared options; counts what it built."""

    def __init__(self, store: QuantizedStore, threads: int) -> None:
        ort = _ort()
        self.threads = _use_threads(threads)
        self.store = store
        options = ort.SessionOptions()
        options.use_per_session_threads = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.log_severity_level = 3
        # hundreds of small sessions: an arena each would keep its largest activations forever
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(store.path)
        )
        self.options = options
        self.sessions = 0
        self.weight_bytes = 0
        self._unreleased = 0

    def call(
        self, builder: GraphBuilder, inputs: dict[str, int], outputs: dict[str, int]
    ) -> OrtCall:
        ort = _ort()
        try:
            session = ort.InferenceSession(
                builder.model(inputs, outputs), self.options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(f"ONNX Runtime could not build a session: {exc}") from exc
        self.sessions += 1
        self.weight_bytes += builder.weight_bytes
        self._unreleased += builder.weight_bytes
        if self._unreleased >= RELEASE_EVERY:  # keep the load's peak near the packed size
            release_mapped_pages(self.store.weights_file)
            self._unreleased = 0
        return OrtCall(session, inputs, outputs)

    def projections(self, keys: Sequence[str]) -> OrtProjections:
        """One session computing ``x @ W(key).T`` for each key (same input)."""
        b = GraphBuilder(self.store)
        outs = {f"y{n}": b.matmul("x", key, f"y{n}") for n, key in enumerate(keys)}
        k = {m.k for m in outs.values()}
        if len(k) != 1:
            raise EngineError(f"projections {keys} do not share an input width")
        return OrtProjections(self.call(b, {"x": k.pop()}, {n: m.n for n, m in outs.items()}))

    def gated_down(self, key: str, sparse: bool) -> OrtGatedDown:
        """``down(gelu(gate') · up)``, ``gate' = relu(gate − cutoff)`` when ``sparse``."""
        b = GraphBuilder(self.store)
        h = b.onnx.helper
        width = self.store.matrix(key).k
        inputs = {"gate": width, "up": width}
        gate = "gate"
        if sparse:
            inputs["cutoff"] = 1
            b.nodes += [
                h.make_node("Sub", ["gate", "cutoff"], ["shifted"]),
                h.make_node("Relu", ["shifted"], ["sparse"]),
            ]
            gate = "sparse"
        b.nodes += [
            h.make_node("Gelu", [gate], ["activated"], approximate="tanh"),
            h.make_node("Mul", ["activated", "up"], ["hidden"]),
        ]
        m = b.matmul("hidden", key, "y")
        return OrtGatedDown(self.call(b, inputs, {"y": m.n}), sparse)

    def fused_ffn(self, gate: str, up: str, down: str) -> OrtProjection:
        """``down(gelu(gate(x)) · up(x))`` in one session (layers without activation sparsity)."""
        b = GraphBuilder(self.store)
        h = b.onnx.helper
        m = b.matmul("x", gate, "gate")
        b.matmul("x", up, "up")
        b.nodes += [
            h.make_node("Gelu", ["gate"], ["activated"], approximate="tanh"),
            h.make_node("Mul", ["activated", "up"], ["hidden"]),
        ]
        out = b.matmul("hidden", down, "y")
        return OrtProjection(self.call(b, {"x": m.k}, {"y": out.n}))

    def per_layer_gate(self, gate: str, projection: str) -> OrtPerLayerGate:
        """``projection(gelu(gate(x)) · per_layer_input)`` in one session."""
        b = GraphBuilder(self.store)
        h = b.onnx.helper
        m = b.matmul("x", gate, "gate")
        b.nodes += [
            h.make_node("Gelu", ["gate"], ["activated"], approximate="tanh"),
            h.make_node("Mul", ["activated", "per_layer_input"], ["gated"]),
        ]
        out = b.matmul("gated", projection, "y")
        inputs = {"x": m.k, "per_layer_input": m.n}
        return OrtPerLayerGate(self.call(b, inputs, {"y": out.n}))

    def projection(self, key: str) -> OrtProjection:
        return OrtProjection(self.projections([key]).call)

    def chunked(self, key: str, rows_per_chunk: int) -> ChunkedProjection:
        """``x @ W(key).T`` as one session per ``rows_per_chunk`` output rows."""
        n = self.store.matrix(key).n
        chunks, widths = [], []
        for start in range(0, n, rows_per_chunk):
            stop = min(n, start + rows_per_chunk)
            b = GraphBuilder(self.store)
            m = b.matmul("x", key, "y", rows=(start, stop))
            chunks.append(OrtProjection(self.call(b, {"x": m.k}, {"y": m.n})))
            widths.append(stop - start)
        return ChunkedProjection(chunks, widths)

    def chain(self, first: str, second: str) -> OrtProjection:
        """``second(first(x))`` in one session."""
        b = GraphBuilder(self.store)
        m1 = b.matmul("x", first, "mid")
        m2 = b.matmul("mid", second, "y")
        return OrtProjection(self.call(b, {"x": m1.k}, {"y": m2.n}))


def quantized_kernels(cfg: TextConfig, store: QuantizedStore, threads: int = 0) -> ModelKernels:
    """Build every session over ``store`` (prepacking its weights once)."""
    started = time.perf_counter()
    pass_memory = _bound_malloc()
    if not single_threaded_blas():
        _LOGGER.debug("numpy's BLAS not found: its threads may compete with the kernels'")
    f = SessionFactory(store, threads)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        attn = [p + "self_attn.q_proj"]
        if not cfg.is_kv_shared(i):
            attn += [p + "self_attn.k_proj", p + "self_attn.v_proj"]
        slabs, start = [], 0
        for stop in store.slab_cuts[i]:
            gate, up, down = (
                slab_key(i, n, start, stop) for n in ("gate_proj", "up_proj", "down_proj")
            )
            if cfg.activation_sparsity[i] > 0:  # the cutoff needs every slab's gate: two steps
                slabs.append(
                    FFNSlab(start, stop, f.projections([gate, up]), f.gated_down(down, sparse=True))
                )
            else:
                slabs.append(FFNSlab(start, stop, fused=f.fused_ffn(gate, up, down)))
            start = stop
        layers.append(
            LayerKernels(
                attn_in=f.projections(attn),
                o_proj=f.projection(p + "self_attn.o_proj"),
                laurel=f.chain(p + "laurel.linear_left", p + "laurel.linear_right"),
                ffn=SlabFFN(i, tuple(slabs)),
                per_layer_gate=f.per_layer_gate(
                    p + "per_layer_input_gate", p + "per_layer_projection"
                ),
            )
        )
    n_extra = cfg.altup_num_inputs - 1
    kernels = ModelKernels(
        name="quantized",
        layers=tuple(layers),
        per_layer_model_projection=f.projection("per_layer_model_projection"),
        altup_projections=tuple(f.projection(f"altup_projections.{k}") for k in range(n_extra)),
        altup_unembed_projections=tuple(
            f.projection(f"altup_unembed_projections.{k}") for k in range(n_extra)
        ),
        lm_head=f.chunked("lm_head", LM_HEAD_CHUNK),
        description=f"ONNX Runtime MatMulNBits {store.bits}-bit, block {store.block_size}, "
        f"int8 activations, {f.threads} threads",
        store=store,
        pass_memory=pass_memory,
    )
    release_mapped_pages(store.weights_file)
    _LOGGER.info(
        "built %d ONNX Runtime sessions over %.0f MB of %d-bit weights in %.1f s",
        f.sessions,
        f.weight_bytes / 1e6,
        store.bits,
        time.perf_counter() - started,
    )
    return kernels
