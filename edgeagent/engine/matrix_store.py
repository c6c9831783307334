"""Quantized copies of an encoder tower's matrices, in the engine's store format.

The text decoder's copy (:mod:`edgeagent.engine.quantize`) covers the text
weights only; the audio and vision towers write their matrices into stores
of their own, in the same format (blockwise symmetric 4- or 8-bit codes,
outlier columns pre-scaled: ``KEY.qweight``, ``KEY.scales``, ``KEY.colscale``
in ``weights.safetensors``, shapes and widths in ``manifest.json``), which
:class:`~edgeagent.engine.quantize.QuantizedStore` opens and
:class:`~edgeagent.engine.ort_kernels.GraphBuilder` multiplies by. A store
whose manifest differs from the wanted one (other widths, block size or
source checkpoint) is written again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.quantize import (
    FORMAT,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    QuantizedStore,
    column_scales,
    quantize_blockwise,
)
from edgeagent.engine.reference import F32, as_f32
from edgeagent.engine.safetensors_io import SafetensorsWriter, TensorSpec
from edgeagent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 23  # rows are quantized ≤ 8 M weights (32 MB float32) at a time


def tower_manifest(
    matrices: Iterable[tuple[str, np.ndarray]],
    bits: int,
    block_size: int,
    source: Any = None,
    sensitive: Collection[str] = (),
) -> dict[str, Any]:
    """A tower store's manifest: format, widths, each matrix's ``[N, K, bits]`` (those named in
    ``sensitive`` at 8 bits whatever ``bits``), and the checkpoint it came from."""
    return {
        "format": FORMAT,
        "bits": bits,
        "block_size": block_size,
        "slab_cuts": [],
        "source": source,
        "matrices": {name: [*m.shape, 8 if name in sensitive else bits] for name, m in matrices},
    }


def write_matrix_store(
    directory: Path, manifest: dict[str, Any], matrices: Iterable[tuple[str, np.ndarray]]
) -> Path:
    """Quantize ``matrices`` (``name -> [N, K]``, any float dtype) into ``directory`` (replaced).

    ``manifest["matrices"][name]`` is ``[N, K, bits]``; ``manifest["block_size"]``
    the weights per scale. Written to a sibling directory, then renamed.
    """
    block_size = int(manifest["block_size"])
    specs = []
    for name, (n, k, unit_bits) in manifest["matrices"].items():
        nb = -(-k // block_size)
        specs += [
            TensorSpec(name + ".qweight", np.dtype("u1"), (n, nb, block_size * unit_bits // 8)),
            TensorSpec(name + ".scales", np.dtype(F32), (n * nb,)),
            TensorSpec(name + ".colscale", np.dtype(F32), (k,)),
        ]
    tmp = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with SafetensorsWriter(tmp / WEIGHTS_FILE, specs, {"format": "edgeagent-matmulnbits"}) as w:
            for name, matrix in matrices:
                unit_bits = manifest["matrices"][name][2]
                n, k = matrix.shape
                step = max(1, _CHUNK_ELEMENTS // k)
                peak = np.max(np.abs(as_f32(np.asarray(matrix))), axis=0)  # [K]
                colscale = column_scales(peak[None, :])
                scales = []
                for start in range(0, n, step):
                    block = as_f32(np.asarray(matrix[start : start + step])) / colscale
                    packed, s = quantize_blockwise(block, unit_bits, block_size)
                    w.write(name + ".qweight", packed)
                    scales.append(s.reshape(-1))
                w.write(name + ".scales", np.concatenate(scales))
                w.write(name + ".colscale", colscale)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def open_matrix_store(
    directory: Path, manifest: dict[str, Any], matrices: Iterable[tuple[str, np.ndarray]]
) -> QuantizedStore:
    """The store in ``directory``, written first from ``matrices`` when absent or stale."""
    try:
        stored = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        stored = None
    if stored != manifest:
        try:
            write_matrix_store(directory, manifest, matrices)
        except OSError as exc:  # a read-only model folder, a full disk
            raise EngineError(f"cannot write the quantized copy {directory}: {exc}") from exc
        _LOGGER.info("wrote %d quantized matrices to %s", len(manifest["matrices"]), directory)
    return QuantizedStore(directory, manifest)
