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
    replacing_store,
    store_specs,
)
from edgeagent.engine.reference import as_f32
from edgeagent.engine.safetensors_io import SafetensorsWriter
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
    specs = store_specs(manifest, manifest["matrices"])
    meta = {"format": "edgeagent-matmulnbits"}
    with (
        replacing_store(directory, manifest) as tmp,
        SafetensorsWriter(tmp / WEIGHTS_FILE, specs, meta) as w,
    ):
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
