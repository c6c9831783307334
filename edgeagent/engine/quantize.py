"""Blockwise 4/8-bit quantized copies of a checkpoint, stored beside it and memory-mappable.

Layout is ONNX Runtime's ``MatMulNBits``: a weight ``[N, K]`` (``[out, in]``,
as checkpoints store it) is cut along K into blocks of ``block_size``; each
block has one float32 scale and no stored zero point (the operator's default,
``2^(bits-1)``, makes the code symmetric). Codes are packed ``[N, n_blocks,
block_size·bits/8]`` uint8, two 4-bit codes per byte, low nibble first.

Two choices keep 4 bits accurate on real (heavy-tailed) weights:

- each block's scale is searched (clipping the extreme when that lowers the
  block's squared error) rather than set by its largest weight;
- input columns whose largest weight stands far above the median column's
  are divided by ``√ratio`` before quantizing (``KEY.colscale``), and the
  kernel multiplies its input by the same factors (one ``Mul``): an outlier
  column no longer sets the scale of every block it shares.

The AltUp stream projections stay at 8 bits whatever the copy's width: they
feed every layer and the final state directly (~1 % of the weights).

A copy lives in ``CHECKPOINT/edgeagent-q{bits}b{block}/``: ``weights.safetensors``
(``KEY.qweight`` uint8, ``KEY.scales`` and ``KEY.colscale`` float32) and
``manifest.json`` (format, bits, block size, the FFN slab cuts, every matrix's
shape and bits, and the size and mtime of each source file, so an edited
checkpoint is quantized again). FFN weights are stored per MatFormer slab
(gate/up by output rows, down by input columns), each slab contiguous in the
file, so a kernel per slab reads its own byte range.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.checkpoint import Checkpoint
from edgeagent.engine.config import TextConfig
from edgeagent.engine.reference import F32, as_f32
from edgeagent.engine.safetensors_io import SafetensorsFile, SafetensorsWriter, TensorSpec
from edgeagent.engine.tiers import named_tiers
from edgeagent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

FORMAT = 1
BITS = (4, 8)
BLOCK_SIZES = (32, 64)
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
_CHUNK_ELEMENTS = 1 << 23  # rows are quantized ≤ 8 M weights (32 MB float32) at a time
ProgressFn = Callable[[int, int], None]  # (weights done, weights total)


def store_dir(checkpoint_dir: str | Path, bits: int, block_size: int) -> Path:
    """Where the quantized copy of a checkpoint lives."""
    return Path(checkpoint_dir) / f"edgeagent-q{bits}b{block_size}"


def check_format(bits: int, block_size: int) -> None:
    """EngineError unless ``bits`` and ``block_size`` are ones the kernels run."""
    if bits not in BITS:
        raise EngineError(f"bits must be one of {BITS}, got {bits}")
    if block_size not in BLOCK_SIZES:
        raise EngineError(f"block size must be one of {BLOCK_SIZES}, got {block_size}")


# -- the numerics ---------------------------------------------------------------------------


CLIP_GRID = np.linspace(0.6, 1.0, 9, dtype=F32)
"""Scales tried per block, as fractions of ``absmax / qmax``; the one with least error wins."""


def quantize_blockwise(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric blockwise codes of ``w`` ``[N, K]``: packed ``[N, nb, blob]``, scales ``[N, nb]``.

    ``code = clip(round(w / scale), −2^(bits−1), 2^(bits−1) − 1) + 2^(bits−1)``.
    Each block's scale is the one of ``CLIP_GRID · absmax / qmax`` with the
    least squared error: heavy-tailed blocks trade a clipped extreme for
    finer steps everywhere else. K is zero-padded to whole blocks.
    """
    n, k = w.shape
    nb = -(-k // block_size)
    if k % block_size:
        w = np.pad(w, ((0, 0), (0, nb * block_size - k)))
    blocks = w.reshape(n, nb, block_size)  # [N, nb, bs]
    qmax = F32((1 << (bits - 1)) - 1)
    absmax = np.max(np.abs(blocks), axis=-1)  # [N, nb]
    base = np.where(absmax > 0, absmax / qmax, F32(1.0)).astype(F32)
    scales = base.copy()
    best = np.full(base.shape, np.inf, dtype=F32)
    for fraction in CLIP_GRID:
        trial = base * fraction  # [N, nb]
        codes = np.clip(np.rint(blocks / trial[..., None]), -qmax - 1, qmax)
        error = np.sum(np.square(codes * trial[..., None] - blocks), axis=-1)  # [N, nb]
        better = error < best
        best[better] = error[better]
        scales[better] = trial[better]
    codes = np.clip(np.rint(blocks / scales[..., None]), -qmax - 1, qmax) + (1 << (bits - 1))
    packed: np.ndarray = codes.astype(np.uint8)
    if bits == 4:
        packed = (packed[..., 0::2] | (packed[..., 1::2] << 4)).astype(np.uint8)  # [N, nb, bs/2]
    return np.ascontiguousarray(packed), scales


def column_scales(w: np.ndarray) -> np.ndarray:
    """Per-input-column divisors ``[K]`` that tame outlier columns before quantizing.

    A column whose largest weight exceeds the median column's by a factor
    ``r > 1`` is divided by ``√r`` (and its activation multiplied by ``√r`` in
    the kernel's graph, so the product is unchanged): the outlier no longer
    sets the scale of every block it shares, while the activation it scales
    grows only by ``√r``. Other columns keep 1.
    """
    peak = np.max(np.abs(w), axis=0).astype(F32)  # [K]
    ratio = peak / max(float(np.median(peak)), 1e-30)
    return np.sqrt(np.maximum(ratio, F32(1.0))).astype(F32)


def dequantize_blockwise(
    packed: np.ndarray, scales: np.ndarray, bits: int, block_size: int, k: int
) -> np.ndarray:
    """The float32 weight ``[N, K]`` that ``packed`` and ``scales`` encode."""
    n, nb = packed.shape[0], packed.shape[1]
    if bits == 4:
        codes = np.empty((n, nb, block_size), dtype=np.uint8)
        codes[..., 0::2] = packed & 0x0F
        codes[..., 1::2] = packed >> 4
    else:
        codes = packed
    values = (codes.astype(F32) - F32(1 << (bits - 1))) * scales.reshape(n, nb)[..., None]
    return values.reshape(n, nb * block_size)[:, :k]


# -- what gets quantized ----------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One quantized matrix: checkpoint ``tensor`` (``[out, in]``), optionally a slab of it."""

    key: str
    tensor: str
    rows: tuple[int, int] | None = None  # output rows (gate/up slabs)
    cols: tuple[int, int] | None = None  # input columns (down slabs)
    sensitive: bool = False  # kept at 8 bits whatever the store's width

    def shape(self, full: tuple[int, ...]) -> tuple[int, int]:
        """``(N, K)`` of this unit given the full tensor's shape."""
        n, k = full
        if self.rows:
            n = self.rows[1] - self.rows[0]
        if self.cols:
            k = self.cols[1] - self.cols[0]
        return n, k


def slab_cuts(cfg: TextConfig, declared: Any) -> tuple[tuple[int, ...], ...]:
    """Per layer, the FFN widths at which slabs end: every named tier's width, ascending."""
    tiers = named_tiers(cfg, declared)
    cuts = []
    for i, full in enumerate(cfg.intermediate_sizes):
        widths = {full} | {t.ffn_dims[i] for t in tiers.values() if i not in t.skip_layers}
        cuts.append(tuple(sorted(widths)))
    return tuple(cuts)


def slab_key(layer: int, name: str, start: int, stop: int) -> str:
    """Store key of one FFN slab, e.g. ``layers.3.mlp.down_proj[0:8192]``."""
    return f"layers.{layer}.mlp.{name}[{start}:{stop}]"


def units(cfg: TextConfig, cuts: tuple[tuple[int, ...], ...]) -> list[Unit]:
    """Every matrix the quantized kernels run, in file order."""
    out: list[Unit] = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        names = ["self_attn.q_proj"]
        if not cfg.is_kv_shared(i):
            names += ["self_attn.k_proj", "self_attn.v_proj"]
        names += ["self_attn.o_proj", "laurel.linear_left", "laurel.linear_right"]
        out += [Unit(p + n, p + n + ".weight") for n in names]
        start = 0
        for stop in cuts[i]:
            for name in ("gate_proj", "up_proj"):
                out.append(
                    Unit(
                        slab_key(i, name, start, stop), f"{p}mlp.{name}.weight", rows=(start, stop)
                    )
                )
            out.append(
                Unit(
                    slab_key(i, "down_proj", start, stop),
                    f"{p}mlp.down_proj.weight",
                    cols=(start, stop),
                )
            )
            start = stop
        out += [
            Unit(p + n, p + n + ".weight") for n in ("per_layer_input_gate", "per_layer_projection")
        ]
    # The matrices that make and unmake the AltUp streams feed every layer (or the final
    # hidden state) directly: 4-bit error there is not diluted by the residual stream (on the
    # heavy-tailed fixture they alone cost 0.002 of logit cosine). ~1 % of the weights: 8 bits.
    out.append(Unit("per_layer_model_projection", "per_layer_model_projection.weight"))
    for k in range(cfg.altup_num_inputs - 1):
        out.append(Unit(f"altup_projections.{k}", f"altup_projections.{k}.weight", sensitive=True))
        out.append(
            Unit(
                f"altup_unembed_projections.{k}",
                f"altup_unembed_projections.{k}.weight",
                sensitive=True,
            )
        )
    out.append(Unit("lm_head", "embed_tokens.weight"))
    return out


# -- the store --------------------------------------------------------------------------


def _fingerprint(ckpt: Checkpoint) -> dict[str, list[int]]:
    """Size and mtime of each safetensors file: a changed checkpoint means a stale copy."""
    out = {}
    for name in sorted(ckpt.files):
        st = (ckpt.path / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _manifest(ckpt: Checkpoint, bits: int, block_size: int) -> dict[str, Any]:
    cuts = slab_cuts(ckpt.config, ckpt.declared_tiers)
    shapes = {
        u.key: [*u.shape(ckpt.info(u.tensor).shape), 8 if u.sensitive else bits]
        for u in units(ckpt.config, cuts)
    }
    return {
        "format": FORMAT,
        "bits": bits,
        "block_size": block_size,
        "slab_cuts": [list(c) for c in cuts],
        "source": _fingerprint(ckpt),
        "matrices": shapes,  # key -> [N, K, bits]
    }


@dataclass(frozen=True)
class QuantizedMatrix:
    """Where one quantized matrix lies in the store's file, and its shape."""

    key: str
    n: int  # output features
    k: int  # input features
    bits: int
    qweight: tuple[int, int]  # absolute (offset, length) in the file
    qweight_shape: tuple[int, ...]
    scales: tuple[int, int]

    def rows(self, start: int, stop: int) -> QuantizedMatrix:
        """Output rows ``start … stop−1``: contiguous in both the codes and the scales."""
        n_blocks, blob = self.qweight_shape[1], self.qweight_shape[2]
        q_row, s_row = n_blocks * blob, n_blocks * 4
        return QuantizedMatrix(
            f"{self.key}[{start}:{stop}]",
            stop - start,
            self.k,
            self.bits,
            (self.qweight[0] + start * q_row, (stop - start) * q_row),
            (stop - start, n_blocks, blob),
            (self.scales[0] + start * s_row, (stop - start) * s_row),
        )


class QuantizedStore:
    """An opened quantized copy: matrix locations by key, memory-mapped on demand."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.bits: int = manifest["bits"]
        self.block_size: int = manifest["block_size"]
        self.slab_cuts: tuple[tuple[int, ...], ...] = tuple(tuple(c) for c in manifest["slab_cuts"])
        self.shapes: dict[str, list[int]] = manifest["matrices"]
        self.file = SafetensorsFile(path / WEIGHTS_FILE)

    @property
    def weights_file(self) -> Path:
        """The safetensors file holding every matrix."""
        return self.file.path

    def matrix(self, key: str) -> QuantizedMatrix:
        """Location and shape of the matrix stored under ``key``."""
        q = self.file.info(key + ".qweight")
        n, k, bits = self.shapes[key]
        return QuantizedMatrix(
            key, n, k, bits, self.file.byte_range(key + ".qweight"), q.shape,
            self.file.byte_range(key + ".scales"),
        )  # fmt: skip

    def column_scales(self, key: str) -> np.ndarray | None:
        """The matrix's column divisors ``[K]`` (see :func:`column_scales`), None if all 1."""
        s = self.file.get(key + ".colscale")
        return None if bool(np.all(s == 1.0)) else s

    def dequantize(self, key: str) -> np.ndarray:
        """The float32 ``[N, K]`` matrix it stands for (tests and diagnostics)."""
        m = self.matrix(key)
        packed = self.file.get(key + ".qweight", packed=True)
        scales = self.file.get(key + ".scales")
        w = dequantize_blockwise(packed, scales, m.bits, self.block_size, m.k)
        colscale = self.column_scales(key)
        return w if colscale is None else w * colscale

    @property
    def nbytes(self) -> int:
        """Bytes of quantized weights and scales."""
        return sum(i.nbytes for i in self.file.tensors.values())


def open_store(ckpt: Checkpoint, bits: int, block_size: int) -> QuantizedStore | None:
    """The checkpoint's quantized copy, or None when absent or stale (logged)."""
    check_format(bits, block_size)
    path = store_dir(ckpt.path, bits, block_size)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    wanted = _manifest(ckpt, bits, block_size)
    if manifest != wanted:
        changed = sorted(k for k in wanted if manifest.get(k) != wanted[k])
        _LOGGER.warning("quantized copy %s is stale (%s differ)", path, ", ".join(changed))
        return None
    return QuantizedStore(path, manifest)


def store_specs(manifest: dict[str, Any], keys: Iterable[str]) -> list[TensorSpec]:
    """The tensors of a store's ``weights.safetensors``, matrix by matrix in ``keys`` order:
    ``KEY.qweight`` ``[N, K/block, block·bits/8]`` uint8, ``KEY.scales`` ``[N·K/block]`` and
    ``KEY.colscale`` ``[K]`` float32 (``manifest["matrices"][KEY]`` is ``[N, K, bits]``)."""
    block_size = int(manifest["block_size"])
    specs = []
    for key in keys:
        n, k, bits = manifest["matrices"][key]
        nb = -(-k // block_size)
        specs += [
            TensorSpec(key + ".qweight", np.dtype("u1"), (n, nb, block_size * bits // 8)),
            TensorSpec(key + ".scales", np.dtype(F32), (n * nb,)),
            TensorSpec(key + ".colscale", np.dtype(F32), (k,)),
        ]
    return specs


@contextlib.contextmanager
def replacing_store(directory: Path, manifest: dict[str, Any]) -> Iterator[Path]:
    """A temporary sibling of ``directory`` to write a store into; on success the manifest is
    added and it replaces ``directory``, on failure it is removed (``directory`` untouched)."""
    tmp = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def quantize_checkpoint(
    ckpt: Checkpoint, bits: int = 4, block_size: int = 64, progress: ProgressFn | None = None
) -> QuantizedStore:
    """Write the quantized copy of ``ckpt`` beside it (replacing a stale one) and open it.

    Memory use is one chunk of rows (≤ 32 MB of float32) whatever the model size.
    Files go to a temporary sibling that is renamed into place at the end.
    """
    check_format(bits, block_size)
    cfg = ckpt.config
    manifest = _manifest(ckpt, bits, block_size)
    plan = units(cfg, tuple(tuple(c) for c in manifest["slab_cuts"]))
    specs = store_specs(manifest, [unit.key for unit in plan])
    total = sum(n * k for n, k, _ in manifest["matrices"].values())
    final = store_dir(ckpt.path, bits, block_size)
    done = 0
    with replacing_store(final, manifest) as tmp:
        meta = {"format": "edgeagent-matmulnbits", "bits": str(bits), "block_size": str(block_size)}
        with SafetensorsWriter(tmp / WEIGHTS_FILE, specs, meta) as writer:
            for unit in plan:
                unit_bits = manifest["matrices"][unit.key][2]
                for rows in _chunks(ckpt, unit, unit_bits, block_size, writer):
                    done += rows
                    if progress is not None:
                        progress(done, total)
    _LOGGER.info("wrote %d-bit copy (block %d) of %s to %s", bits, block_size, ckpt.path, final)
    store = open_store(ckpt, bits, block_size)
    assert store is not None
    return store


def _chunks(
    ckpt: Checkpoint, unit: Unit, bits: int, block_size: int, writer: SafetensorsWriter
) -> Iterator[int]:
    """Quantize ``unit`` a block of rows at a time into ``writer``; yield weights done."""
    weight = ckpt.tensor(unit.tensor)  # [out, in], mapped
    if unit.rows:
        weight = weight[unit.rows[0] : unit.rows[1]]
    if unit.cols:
        weight = weight[:, unit.cols[0] : unit.cols[1]]
    n, k = weight.shape
    step = max(1, _CHUNK_ELEMENTS // k)
    peak = np.zeros(k, dtype=F32)
    for start in range(0, n, step):
        peak = np.maximum(peak, np.max(np.abs(as_f32(weight[start : start + step])), axis=0))
    colscale = column_scales(peak[None, :])  # [K]
    scales = []
    for start in range(0, n, step):
        block = as_f32(np.ascontiguousarray(weight[start : start + step])) / colscale  # [rows, K]
        packed, s = quantize_blockwise(block, bits, block_size)
        writer.write(unit.key + ".qweight", packed)
        scales.append(s.reshape(-1))
        yield block.size
    writer.write(unit.key + ".scales", np.concatenate(scales))
    writer.write(unit.key + ".colscale", colscale)
