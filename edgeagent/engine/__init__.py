"""The Gemma 3n engine: a library that knows nothing of asyncio, MQTT or devices.

``load(path)`` opens a checkpoint in Hugging Face layout (text-only or the
released multimodal one) and returns a ``TextModel``::

    model = edgeagent.engine.load("/models/gemma-3n-E4B")
    logits = model.logits(ids)                 # [T, vocab] float32
    logits = model.logits(ids, tier="e2b")     # the nested submodel, same weights
    model = edgeagent.engine.load(path, kernels="quantized", kv_dtype="int8")  # 4-bit, int8 KV
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeagent.engine.checkpoint import Checkpoint, open_checkpoint
from edgeagent.engine.config import TextConfig
from edgeagent.engine.conversation import Conversation
from edgeagent.engine.generate import Generation, generate
from edgeagent.engine.kernels import KERNELS, ModelKernels
from edgeagent.engine.kv_cache import KV_DTYPES
from edgeagent.engine.model import DEFAULT_ROW_CACHE, RunState, TextModel
from edgeagent.engine.sampling import GREEDY, SamplingParams
from edgeagent.engine.tiers import TierPlan
from edgeagent.errors import EngineError

_LOGGER = logging.getLogger(__name__)

__all__ = [
    "GREEDY",
    "KERNELS",
    "KV_DTYPES",
    "Checkpoint",
    "Conversation",
    "Generation",
    "RunState",
    "SamplingParams",
    "TextConfig",
    "TextModel",
    "TierPlan",
    "generate",
    "load",
    "quantized_store",
]


def load(
    path: str | Path,
    max_context: int = 4096,
    *,
    kernels: str = "reference",
    kv_dtype: str = "fp32",
    bits: int = 4,
    block_size: int = 64,
    threads: int = 0,
    row_cache: int = DEFAULT_ROW_CACHE,
) -> TextModel:
    """Open the checkpoint at ``path`` (validated, memory-mapped) and build its text model.

    ``max_context`` is the longest conversation, in tokens, a state holds.
    ``kernels``: ``"reference"`` (numpy float32, exact) or ``"quantized"``
    (ONNX Runtime, ``bits``-bit weights in blocks of ``block_size``, int8
    activations, ``threads`` threads, 0 = every core); a checkpoint without a
    quantized copy is quantized once, beside it. ``kv_dtype``: ``"fp32"``,
    ``"fp16"`` or ``"int8"`` (per-token, per-head scales). ``row_cache``: rows
    of each embedding table kept in memory (the tables stay on disk).
    """
    checkpoint = open_checkpoint(path)
    if kernels not in KERNELS:
        raise EngineError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    built: ModelKernels | None = None
    if kernels == "quantized":
        from edgeagent.engine.ort_kernels import quantized_kernels  # noqa: PLC0415

        store = quantized_store(checkpoint, bits, block_size)
        built = quantized_kernels(checkpoint.config, store, threads)
    return TextModel(
        checkpoint, max_context=max_context, kernels=built, kv_dtype=kv_dtype, row_cache=row_cache
    )


def quantized_store(checkpoint: Checkpoint, bits: int = 4, block_size: int = 64):  # type: ignore[no-untyped-def]
    """The checkpoint's quantized copy, written once (beside it) when missing or stale."""
    from edgeagent.engine.quantize import open_store, quantize_checkpoint, store_dir  # noqa: PLC0415

    store = open_store(checkpoint, bits, block_size)
    if store is None:
        target = store_dir(checkpoint.path, bits, block_size)
        _LOGGER.warning(
            "no %d-bit copy of %s yet: quantizing once into %s", bits, checkpoint.path, target
        )
        store = quantize_checkpoint(checkpoint, bits, block_size)
    return store
