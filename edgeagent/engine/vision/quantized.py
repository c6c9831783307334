"""The vision tower on the engine's quantized kernels: one ONNX Runtime graph for every size.

Every matrix of the tower runs as ``com.microsoft.MatMulNBits`` (blockwise 4-
or 8-bit weights, ``accuracy_level=4``: int8 activations, integer products —
NEON dot-product / i8mm on ARM boards, VNNI on x86), over a store written
beside the checkpoint as ``edgeagent-vision-q{bits}b{block}/``
(:mod:`edgeagent.engine.matrix_store`, the format of the text and audio copies):

- 1×1 convolutions and the attention / embedder projections: directly, on
  channels-last maps ``[1, H, W, C]`` (the operator multiplies the last axis);
- full 3×3 convolutions (the stem, the edge-residual blocks): im2col in the
  graph (SAME ``Pad``, one strided ``Slice`` per tap, ``Concat`` over channels
  in ``(ki, kj, in)`` order), then one ``MatMulNBits`` with ``K = k²·in``;
- depthwise convolutions: float ``Conv`` with ``group = C`` (MLAS's portable
  depthwise kernel; ~1 % of the multiply-accumulates), between two
  ``Transpose`` to and from channels-first;
- RMSNorm as ``SimplifiedLayerNormalization``, GELU as ``Gelu`` (tanh),
  multi-query attention as ``MultiHeadAttention`` (float, keys and values tiled
  per head), the fusion adapter's upsampling as ``Resize`` (nearest, floor:
  timm's ``F.interpolate``) and its pooling as two ``ReduceMean`` over
  reshaped rows.

No shape in the graph is fixed, so one session serves 256, 512 and 768 px and
its weights are prepacked once. The stem and ``embed_vision``'s projection
stay at 8 bits whatever the store's width. Sizes must keep every strided
convolution's input even (true of any size the config accepts: multiples of
256 released), so the im2col padding is static.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.ort_kernels import GraphBuilder, SessionFactory, release_mapped_pages
from edgeagent.engine.quantize import BITS
from edgeagent.engine.reference import as_f32
from edgeagent.engine.vision.config import NORM_EPS, BlockSpec, VisionConfig
from edgeagent.engine.vision.encoder import VisionEncoder
from edgeagent.engine.vision.preprocess import ImageConfig
from edgeagent.engine.vision.weights import (
    BlockWeights,
    EdgeResidualWeights,
    KeyValueWeights,
    MobileAttentionWeights,
    UniversalInvertedResidualWeights,
    VisionWeights,
)
from edgeagent.errors import EngineError, VisionError

_LOGGER = logging.getLogger(__name__)

F32 = np.float32
VISION_BLOCK_SIZES = (32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 64
"""Weights per scale (and per int8 activation scale). 128 runs ~15 % faster at 512 px but
agrees less with the reference (mean per-token cosine on the reduced fixture at 256 px: 0.993
against 0.997 at 64; E2B-shaped random weights: 0.9989 against 0.9992); 32 is no more
accurate. Measurements in ``benchmarks/README.md`` (vision section)."""
SENSITIVE = ("conv_stem", "embedding_projection")  # kept at 8 bits
_END = 2**62  # a Slice end past any axis


def check_vision_format(bits: int, block_size: int) -> None:
    """EngineError unless the vision kernels run ``bits``-bit codes in blocks of ``block_size``."""
    if bits not in BITS:
        raise EngineError(f"vision bits must be one of {BITS}, got {bits!r}")
    if block_size not in VISION_BLOCK_SIZES:
        raise EngineError(
            f"vision block size must be one of {VISION_BLOCK_SIZES}, got {block_size!r}"
        )


def vision_store_dir(checkpoint_dir: str | Path, bits: int, block_size: int) -> Path:
    """Where the quantized vision matrices of a checkpoint live."""
    return Path(checkpoint_dir) / f"edgeagent-vision-q{bits}b{block_size}"


def _conv_matrix(w: np.ndarray) -> np.ndarray:
    """``[out, in, k, k]`` -> ``[out, k·k·in]``, columns in im2col's ``(ki, kj, in)`` order."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def _uir_matrices(p: str, w: UniversalInvertedResidualWeights) -> Iterator[tuple[str, np.ndarray]]:
    yield p + "pw_exp", w.pw_exp.conv[:, :, 0, 0]
    yield p + "pw_proj", w.pw_proj.conv[:, :, 0, 0]


def _block_matrices(p: str, w: BlockWeights) -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(w, EdgeResidualWeights):
        yield p + "conv_exp", _conv_matrix(w.conv_exp)
        yield p + "conv_pwl", w.conv_pwl[:, :, 0, 0]
    elif isinstance(w, UniversalInvertedResidualWeights):
        yield from _uir_matrices(p, w)
    else:
        for name, m in (
            ("query", w.query), ("key", w.key.proj), ("value", w.value.proj), ("output", w.output),
        ):  # fmt: skip
            yield p + name, m[:, :, 0, 0]


def vision_matrices(cfg: VisionConfig, w: VisionWeights) -> Iterator[tuple[str, np.ndarray]]:
    """Every matrix of the tower and embedder as ``(key, [N, K])`` in its stored dtype."""
    yield "conv_stem", _conv_matrix(w.stem.conv)
    i = 0
    for s, stage in enumerate(cfg.stages):
        for n in range(len(stage)):
            yield from _block_matrices(f"blocks.{s}.{n}.", w.blocks[i])
            i += 1
    yield from _uir_matrices("msfa.ffn.", w.msfa.ffn)
    yield "embedding_projection", w.embedder.embedding_projection


class TowerGraph:
    """The whole vision path as one ONNX graph: ``pixels [S, S, 3]`` -> ``soft``, ``tokens``.

    Maps are channels-last ``[1, H, W, C]``; method names follow the blocks
    of :mod:`edgeagent.engine.vision.blocks`.
    """

    def __init__(self, builder: GraphBuilder, cfg: VisionConfig) -> None:
        self.b = builder
        self.h = builder.onnx.helper
        self.cfg = cfg
        self._count = 0

    # -- primitives ------------------------------------------------------------------------

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        self._count += 1
        out = f"{op.lower()}{self._count}"
        self.b.nodes.append(self.h.make_node(op, inputs, [out], **attrs))
        return out

    def const(self, value: np.ndarray | np.generic) -> str:
        self._count += 1
        name = f"const{self._count}"
        self.b.initializers.append(self.b.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def norm(self, x: str, weight: np.ndarray | None, width: int) -> str:
        """RMSNorm over channels (``weight`` None: unit scale)."""
        scale = as_f32(weight) if weight is not None else np.ones(width, F32)
        return self.node(
            "SimplifiedLayerNormalization", [x, self.const(np.ascontiguousarray(scale))],
            axis=-1, epsilon=NORM_EPS,
        )  # fmt: skip

    def gelu(self, x: str) -> str:
        return self.node("Gelu", [x], approximate="tanh")

    def matmul(self, x: str, key: str) -> str:
        """``x @ W(key).T`` over the last axis (MatMulNBits)."""
        out = f"{key}.y"
        self.b.matmul(x, key, out)
        return out

    def conv(self, x: str, key: str, k: int, stride: int) -> str:
        """Full ``k``×``k`` conv, SAME padding: im2col over ``k²`` strided slices, one matmul."""
        total = k - 1 if stride == 1 else max(k - stride, 0)  # even inputs when strided
        before, after = total // 2, total - total // 2
        xp = self.node("Pad", [x, self.ints(0, before, before, 0, 0, after, after, 0)])
        axes, steps = self.ints(1, 2), self.ints(stride, stride)
        taps = []
        for i in range(k):
            for j in range(k):
                ends = self.ints(-(k - 1 - i) or _END, -(k - 1 - j) or _END)
                taps.append(self.node("Slice", [xp, self.ints(i, j), ends, axes, steps]))
        cols = self.node("Concat", taps, axis=-1)  # [1, Ho, Wo, k·k·in]
        return self.matmul(cols, key)  # [1, Ho, Wo, out]

    def depthwise(self, x: str, w: np.ndarray, stride: int) -> str:
        """Depthwise conv, SAME padding (float ``Conv``, channels-first inside)."""
        c, k = w.shape[0], w.shape[-1]
        nchw = self.node("Transpose", [x], perm=[0, 3, 1, 2])
        y = self.node(
            "Conv", [nchw, self.const(np.ascontiguousarray(as_f32(w)))],
            group=c, kernel_shape=[k, k], strides=[stride, stride], auto_pad="SAME_UPPER",
        )  # fmt: skip
        return self.node("Transpose", [y], perm=[0, 2, 3, 1])

    # -- blocks ----------------------------------------------------------------------------

    def stem(self, x: str, w: VisionWeights) -> str:
        h = self.conv(x, "conv_stem", w.stem.conv.shape[-1], 2)
        h = self.node("Add", [h, self.const(as_f32(w.stem.bias))])
        return self.gelu(self.norm(h, w.stem.norm, self.cfg.stem_size))

    def edge_residual(self, x: str, p: str, spec: BlockSpec, w: EdgeResidualWeights) -> str:
        h = self.conv(x, p + "conv_exp", spec.kernel, spec.stride)  # [1, H/s, W/s, mid]
        h = self.gelu(self.norm(h, w.bn1, spec.mid_chs))
        h = self.norm(self.matmul(h, p + "conv_pwl"), w.bn2, spec.out_chs)
        return self.node("Add", [h, x]) if spec.has_skip else h

    def inverted_residual(
        self, x: str, p: str, spec: BlockSpec, w: UniversalInvertedResidualWeights
    ) -> str:
        h = x
        if w.dw_start is not None:
            s = 1 if w.dw_mid is not None else spec.stride
            h = self.norm(self.depthwise(h, w.dw_start.conv, s), w.dw_start.norm, spec.in_chs)
        h = self.gelu(self.norm(self.matmul(h, p + "pw_exp"), w.pw_exp.norm, spec.mid_chs))
        if w.dw_mid is not None:
            h = self.depthwise(h, w.dw_mid.conv, spec.stride)  # [1, H/s, W/s, mid]
            h = self.gelu(self.norm(h, w.dw_mid.norm, spec.mid_chs))
        h = self.norm(self.matmul(h, p + "pw_proj"), w.pw_proj.norm, spec.out_chs)
        if w.layer_scale is not None:
            h = self.node("Mul", [h, self.const(as_f32(w.layer_scale))])
        return self.node("Add", [h, x]) if spec.has_skip else h

    def _key_value(self, x: str, key: str, spec: BlockSpec, w: KeyValueWeights) -> str:
        """Keys or values, one head shared by all: ``[1, P, heads·d]`` (tiled per head)."""
        if w.down_conv is not None and w.norm is not None:
            x = self.norm(self.depthwise(x, w.down_conv, spec.kv_stride), w.norm, spec.in_chs)
        kv = self.node("Reshape", [self.matmul(x, key), self.ints(1, -1, spec.key_dim)])
        return self.node("Tile", [kv, self.ints(1, 1, spec.num_heads)])  # [1, P, heads·d]

    def mobile_attention(self, x: str, p: str, spec: BlockSpec, w: MobileAttentionWeights) -> str:
        """Multi-query attention as ``MultiHeadAttention`` (scale 1/√d) over keys and values
        repeated per head: ORT's CPU kernel tiles it (flash attention) instead of writing the
        ``[HW·heads, P]`` logits three times (~3× faster at 768 px)."""
        heads, d = spec.num_heads, spec.key_dim
        normed = self.norm(x, w.norm, spec.in_chs)  # [1, H, W, C]
        q = self.matmul(normed, p + "query")  # [1, H, W, heads·d]
        rows = self.node("Reshape", [q, self.ints(1, -1, heads * d)])  # [1, HW, heads·d]
        keys = self._key_value(normed, p + "key", spec, w.key)
        values = self._key_value(normed, p + "value", spec, w.value)
        o = self.node(
            "MultiHeadAttention", [rows, keys, values], domain="com.microsoft", num_heads=heads
        )  # [1, HW, heads·d]
        o = self.node("Reshape", [o, self.node("Shape", [q])])  # [1, H, W, heads·d]
        h = self.node("Mul", [self.matmul(o, p + "output"), self.const(as_f32(w.layer_scale))])
        return self.node("Add", [h, x]) if spec.has_skip else h

    def upsample(self, x: str, size: str) -> str:
        """Nearest resize of ``[1, h, w, C]`` to ``size`` (``[H, W]``): source ``⌊dst·in/out⌋``."""
        return self.node(
            "Resize", [x, "", "", size], axes=[1, 2], mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )  # fmt: skip

    def msfa(self, features: list[str], w: VisionWeights) -> str:
        """Upsample to the first map's size, concatenate, 1×1 inverted residual, pool, norm:
        ``-> [R·R, hidden]`` (row-major tokens)."""
        cfg = self.cfg
        size = self.node("Slice", [self.node("Shape", [features[0]]), self.ints(1), self.ints(3)])
        maps = [features[0]] + [self.upsample(f, size) for f in features[1:]]
        fused = self.node("Concat", maps, axis=-1)  # [1, H, W, ΣC]
        spec = BlockSpec("uir", cfg.msfa_in_chs, cfg.hidden_size, 1, noskip=True)
        h = self.inverted_residual(fused, "msfa.ffn.", spec, w.msfa.ffn)  # [1, H, W, hidden]
        r = cfg.msfa_output_resolution
        rows = self.node("Reshape", [h, self.ints(r, -1, 0, 0)])  # [R, H/R, W, hidden]
        rows = self.node("ReduceMean", [rows, self.ints(1)], keepdims=0)  # [R, W, hidden]
        cells = self.node("Reshape", [rows, self.ints(r * r, -1, 0)])  # [R·R, W/R, hidden]
        pooled = self.node("ReduceMean", [cells, self.ints(1)], keepdims=0)  # [R·R, hidden]
        return self.norm(pooled, w.msfa.norm, cfg.hidden_size)

    def embed(self, soft: str, w: VisionWeights) -> str:
        """``embed_vision`` of the √hidden-scaled tokens: ``[k, hidden] -> [k, text_H]``."""
        cfg, e = self.cfg, w.embedder
        scaled = self.node("Mul", [soft, self.const(F32(cfg.hidden_size**0.5))])
        normed = self.norm(scaled, e.soft_embedding_norm, cfg.hidden_size)
        return self.norm(self.matmul(normed, "embedding_projection"), None, cfg.text_hidden_size)

    def build(self, w: VisionWeights) -> bytes:
        """The serialised model: ``pixels [S, S, 3]`` -> ``soft [R², hidden]``,
        ``tokens [R², text_H]``."""
        cfg, h = self.cfg, self.h
        x = self.node("Unsqueeze", ["pixels", self.ints(0)])  # [1, S, S, 3]
        x = self.stem(x, w)  # [1, S/2, S/2, stem]
        wanted = set(cfg.msfa_stages)
        features = [x] if 0 in wanted else []
        i = 0
        for s, stage in enumerate(cfg.stages, start=1):
            for n, spec in enumerate(stage):
                p, bw = f"blocks.{s - 1}.{n}.", w.blocks[i]
                if isinstance(bw, EdgeResidualWeights):
                    x = self.edge_residual(x, p, spec, bw)
                elif isinstance(bw, UniversalInvertedResidualWeights):
                    x = self.inverted_residual(x, p, spec, bw)
                else:
                    x = self.mobile_attention(x, p, spec, bw)
                i += 1
            if s in wanted:
                features.append(x)
        soft = self.msfa(features, w)
        tokens = self.embed(soft, w)
        self.b.nodes += [
            h.make_node("Identity", [soft], ["soft"]),
            h.make_node("Identity", [tokens], ["tokens"]),
        ]
        f32 = self.b.onnx.TensorProto.FLOAT
        graph = h.make_graph(
            self.b.nodes,
            "edgeagent-vision",
            [h.make_tensor_value_info("pixels", f32, ["S", "S", 3])],
            [
                h.make_tensor_value_info("soft", f32, ["N", cfg.hidden_size]),
                h.make_tensor_value_info("tokens", f32, ["N", cfg.text_hidden_size]),
            ],
            self.b.initializers,
        )
        opsets = [h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)]
        return bytes(h.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString())


class QuantizedVisionEncoder(VisionEncoder):
    """:class:`VisionEncoder` whose tower and projection run as one ONNX Runtime session."""

    def __init__(
        self, cfg: VisionConfig, weights: VisionWeights, image: ImageConfig, session: Any,
        description: str,
    ) -> None:  # fmt: skip
        super().__init__(cfg, weights, image)
        self.session = session
        self.kernels = description

    def _check_size(self, size: int) -> None:
        super()._check_size(size)
        stride = self.config.feature_strides[-1]
        if size % stride:  # im2col's static SAME padding needs even inputs to strided convs
            raise VisionError(f"image size {size} px: the quantized kernels need a multiple of "
                              f"{stride} px (the tower's total stride)")  # fmt: skip

    def _run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            soft, tokens = self.session.run(["soft", "tokens"], {"pixels": pixels})
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise VisionError(f"the quantized vision kernels failed: {exc}") from exc
        return soft, tokens

    def encode_pixels(self, pixels: np.ndarray, project: bool = True) -> np.ndarray:
        self._check_pixels(pixels)
        soft, tokens = self._run(np.ascontiguousarray(pixels, dtype=F32))
        return tokens if project else soft

    def tower(self, x: np.ndarray) -> np.ndarray:
        """``[S, S, 3] -> [R·R, hidden]`` (the session's ``soft`` output)."""
        self._check_pixels(x)
        return self._run(np.ascontiguousarray(x, dtype=F32))[0]


def quantized_vision_encoder(
    cfg: VisionConfig, weights: VisionWeights, image: ImageConfig, directory: Path,
    bits: int = 8, block_size: int = DEFAULT_BLOCK_SIZE, threads: int = 0, source: Any = None,
) -> QuantizedVisionEncoder:  # fmt: skip
    """The encoder over the store in ``directory`` (written first when absent or stale)."""
    from edgeagent.engine.matrix_store import open_matrix_store, tower_manifest  # noqa: PLC0415

    check_vision_format(bits, block_size)
    started = time.perf_counter()
    manifest = tower_manifest(vision_matrices(cfg, weights), bits, block_size, source, SENSITIVE)
    store = open_matrix_store(directory, manifest, vision_matrices(cfg, weights))
    factory = SessionFactory(store, threads)
    builder = GraphBuilder(store)
    model = TowerGraph(builder, cfg).build(weights)
    try:
        session = _session(model, factory.options)
    finally:
        release_mapped_pages(store.weights_file)
    description = (
        f"ONNX Runtime MatMulNBits {bits}-bit, block {block_size}, int8 activations, "
        f"{factory.threads} threads"
    )
    _LOGGER.info(
        "vision session over %.0f MB of %d-bit weights built in %.1f s",
        builder.weight_bytes / 1e6, bits, time.perf_counter() - started,
    )  # fmt: skip
    return QuantizedVisionEncoder(cfg, weights, image, session, description)


def _session(model: bytes, options: Any) -> Any:
    import onnxruntime  # noqa: PLC0415 - present with the quantized kernels (SessionFactory)

    try:
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise EngineError(f"ONNX Runtime could not build the vision session: {exc}") from exc
