"""The Gemma 3n engine: a library that knows nothing of asyncio, MQTT or devices.

``load(path)`` opens a checkpoint in Hugging Face layout (text-only or the
released multimodal one) and returns a ``TextModel``::

    model = edgeagent.engine.load("/models/gemma-3n-E4B")
    logits = model.logits(ids)                 # [T, vocab] float32
    logits = model.logits(ids, tier="e2b")     # the nested submodel, same weights
"""

from __future__ import annotations

from pathlib import Path

from edgeagent.engine.checkpoint import Checkpoint, open_checkpoint
from edgeagent.engine.config import TextConfig
from edgeagent.engine.conversation import Conversation
from edgeagent.engine.generate import Generation, generate
from edgeagent.engine.model import RunState, TextModel
from edgeagent.engine.sampling import GREEDY, SamplingParams
from edgeagent.engine.tiers import TierPlan

__all__ = [
    "GREEDY",
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
]


def load(path: str | Path, max_context: int = 4096) -> TextModel:
    """Open the checkpoint at ``path`` (validated, memory-mapped) and build its text model.

    ``max_context`` is the longest conversation, in tokens, a state holds.
    """
    return TextModel(open_checkpoint(path), max_context=max_context)
