"""The audio encoder's projections on the engine's quantized kernels (``MatMulNBits``).

The engine's quantized backend (:mod:`edgeagent.engine.ort_kernels`) runs
matrices from a :class:`~edgeagent.engine.quantize.QuantizedStore`. The text
decoder's store covers the text weights only; this module writes the audio
projections into a store of their own, in the same format (blockwise
symmetric 4- or 8-bit codes, outlier columns pre-scaled), beside the
checkpoint as ``edgeagent-audio-q{bits}b{block}/``, and builds one
ONNX Runtime session per projection from it. The sub-sampling input
projection and the embedder's projection, which feed the encoder and the
decoder directly, stay at 8 bits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.audio.kernels import AudioKernels, audio_kernels_from, projection_weights
from edgeagent.engine.audio.weights import AudioWeights
from edgeagent.engine.reference import as_f32
from edgeagent.engine.safetensors_io import SafetensorsWriter, TensorSpec
from edgeagent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
SENSITIVE = ("subsample_conv_projection.input_proj_linear", "embedding_projection")
_CHUNK_ELEMENTS = 1 << 23


def audio_store_dir(checkpoint_dir: str | Path, bits: int, block_size: int) -> Path:
    """Where the quantized audio projections of a checkpoint live."""
    return Path(checkpoint_dir) / f"edgeagent-audio-q{bits}b{block_size}"


def _manifest(weights: AudioWeights, bits: int, block_size: int, source: Any) -> dict[str, Any]:
    from edgeagent.engine.quantize import FORMAT  # noqa: PLC0415 - the engine's quantized backend

    return {
        "format": FORMAT,
        "bits": bits,
        "block_size": block_size,
        "slab_cuts": [],
        "source": source,
        "matrices": {
            name: [*m.shape, 8 if name in SENSITIVE else bits]
            for name, m in projection_weights(weights)
        },
    }


def write_audio_store(
    weights: AudioWeights, directory: Path, bits: int = 4, block_size: int = 64, source: Any = None
) -> Path:
    """Quantize every audio projection into ``directory`` (replaced); return it."""
    from edgeagent.engine.quantize import (  # noqa: PLC0415
        check_format,
        column_scales,
        quantize_blockwise,
    )

    check_format(bits, block_size)
    manifest = _manifest(weights, bits, block_size, source)
    specs = []
    for name, (n, k, unit_bits) in manifest["matrices"].items():
        nb = -(-k // block_size)
        specs += [
            TensorSpec(name + ".qweight", np.dtype("u1"), (n, nb, block_size * unit_bits // 8)),
            TensorSpec(name + ".scales", np.dtype(np.float32), (n * nb,)),
            TensorSpec(name + ".colscale", np.dtype(np.float32), (k,)),
        ]
    tmp = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with SafetensorsWriter(tmp / WEIGHTS_FILE, specs, {"format": "edgeagent-matmulnbits"}) as w:
            for name, matrix in projection_weights(weights):
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
    _LOGGER.info("wrote %d-bit audio projections to %s", bits, directory)
    return directory


def quantized_audio_kernels(
    weights: AudioWeights, directory: Path, bits: int = 4, block_size: int = 64,
    threads: int = 0, source: Any = None,
) -> AudioKernels:  # fmt: skip
    """Sessions over the audio store in ``directory``, written first when absent or stale."""
    from edgeagent.engine.ort_kernels import SessionFactory  # noqa: PLC0415
    from edgeagent.engine.quantize import QuantizedStore  # noqa: PLC0415

    wanted = _manifest(weights, bits, block_size, source)
    try:
        stored = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        stored = None
    if stored != wanted:
        write_audio_store(weights, directory, bits, block_size, source)
    factory = SessionFactory(QuantizedStore(directory, wanted), threads)
    try:
        return audio_kernels_from(f"quantized q{bits}", weights, lambda n, _: factory.projection(n))
    except KeyError as exc:  # pragma: no cover - a store missing a projection
        raise EngineError(f"{directory}: no quantized projection {exc}") from exc
