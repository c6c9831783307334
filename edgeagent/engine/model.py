"""The Gemma 3n text decoder: embeddings, AltUp streams, layers, LM head.

``TextModel`` holds the immutable parts (config, weight views, tiers);
``RunState`` holds what a conversation changes (KV cache, position). One
``forward`` serves a single pass, chunked prefill and single-token decode.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.engine.checkpoint import Checkpoint
from edgeagent.engine.config import TextConfig
from edgeagent.engine.decode import DecodeScratch, decode_layer
from edgeagent.engine.kernels import ModelKernels, reference_kernels
from edgeagent.engine.kv_cache import KVCache, KVView, check_kv_dtype
from edgeagent.engine.layers import (
    INV_SQRT2,
    Step,
    altup_correct,
    altup_predict,
    laurel,
    mlp,
    per_layer_update,
    project_qkv,
    self_attention,
)
from edgeagent.engine.reference import F32, rms_norm, rope_inv_freq, softcap
from edgeagent.engine.safetensors_io import numpy_dtype
from edgeagent.engine.tables import RowTable
from edgeagent.engine.tiers import TierPlan, named_tiers
from edgeagent.engine.weights import TextWeights
from edgeagent.errors import EngineError, TierError

if TYPE_CHECKING:
    from edgeagent.engine.audio import AudioEncoder
    from edgeagent.engine.vision import VisionEncoder

_LOGGER = logging.getLogger(__name__)

DEFAULT_ROW_CACHE = 1024
"""Rows of each embedding table kept in memory (E2B per-layer rows: 15 KB each)."""

LAYER_TRIM_MIN_TOKENS = 32
"""Passes longer than this give freed activations back after every layer (a 128-token
prefill's would stay resident otherwise); shorter ones only at their end."""


@dataclass
class RunState:
    """One conversation's mutable state: the KV cache and the next position."""

    tier: TierPlan
    cache: KVCache
    position: int = 0
    tokens_processed: int = 0  # every token any forward pass took in, for accounting


class TextModel:
    """Gemma 3n's text decoder over one loaded checkpoint."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        max_context: int = 4096,
        kernels: ModelKernels | None = None,
        kv_dtype: str = "fp32",
        row_cache: int = DEFAULT_ROW_CACHE,
    ) -> None:
        self.checkpoint = checkpoint
        self.config: TextConfig = checkpoint.config
        self.weights = TextWeights.from_checkpoint(checkpoint)
        self.kernels = kernels or reference_kernels(self.weights)
        # the embedding tables stay on disk; lookups read rows into small LRUs
        self.embed_rows = _row_table(checkpoint, "embed_tokens.weight", row_cache)
        self.per_layer_rows = _row_table(checkpoint, "embed_tokens_per_layer.weight", row_cache)
        self.max_context = max_context
        self.kv_dtype = check_kv_dtype(kv_dtype)
        self.tiers: dict[str, TierPlan] = named_tiers(self.config, checkpoint.declared_tiers)
        hd = self.config.head_dim
        self._inv_freq = {
            True: rope_inv_freq(hd, self.config.rope_theta_local),
            False: rope_inv_freq(hd, self.config.rope_theta_global),
        }
        if self.kernels.store is not None:
            _release_checkpoint_pages(checkpoint)
        if self.config.random_weights:
            _LOGGER.warning("%s holds random weights: its output is noise", checkpoint.path)

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        """The checkpoint's tokenizer, or ``None`` when it has no ``tokenizer.json``."""
        return self.checkpoint.tokenizer

    @cached_property
    def audio(self) -> AudioEncoder:
        """The checkpoint's audio encoder (reference kernels), built on first use."""
        from edgeagent.engine.audio import load_audio  # noqa: PLC0415 - only when audio is used

        return load_audio(self.checkpoint)

    @cached_property
    def vision(self) -> VisionEncoder:
        """The checkpoint's vision encoder (reference kernels), built on first use."""
        from edgeagent.engine.vision import load_vision  # noqa: PLC0415 - only when vision is used

        return load_vision(self.checkpoint)

    # -- tiers and state -------------------------------------------------

    def tier(self, tier: str | TierPlan | None = None) -> TierPlan:
        """Resolve a tier name or plan (``None``: full) and check it against the checkpoint."""
        if tier is None:
            return self.tiers["full"]
        if isinstance(tier, TierPlan):
            plan = tier.validate(self.config)
            self.kernels.check_widths(plan.ffn_dims, plan.layers())
            return plan
        try:
            return self.tiers[tier]
        except KeyError:
            raise TierError(
                f"unknown tier {tier!r}; this checkpoint offers: {', '.join(self.tiers)}"
            ) from None

    def new_state(
        self, tier: str | TierPlan | None = None, max_context: int | None = None
    ) -> RunState:
        """A fresh conversation state with caches for the tier's cache-owning layers."""
        plan = self.tier(tier)
        capacity = max_context or self.max_context
        cache = KVCache(self.config, capacity, plan.layers(), self.kv_dtype)
        return RunState(tier=plan, cache=cache)

    # -- the forward pass ----------------------------------------------------

    def logits(self, ids: np.ndarray | list[int], tier: str | TierPlan | None = None) -> np.ndarray:
        """One forward pass over ``ids`` from an empty context: ``[T] -> [T, vocab]`` float32."""
        ids = np.asarray(ids, dtype=np.int64)
        state = self.new_state(tier, max_context=max(len(ids), 1))
        return self.forward(state, ids, all_logits=True)

    def forward(
        self,
        state: RunState,
        ids: np.ndarray | list[int],
        embeds: np.ndarray | None = None,
        all_logits: bool = False,
    ) -> np.ndarray:
        """Feed ``T`` tokens at the state's next positions and advance it.

        ``embeds`` ``[T, H]`` replaces the token embeddings (soft tokens from
        an encoder, already in the text embedding space); ``ids`` still
        drive the per-layer lookup. Returns logits ``[T, V]`` when
        ``all_logits``, else those of the last token ``[V]``.
        """
        cfg = self.config
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise EngineError("forward needs at least one token")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise EngineError(f"token ids must be in 0…{cfg.vocab_size - 1}")
        positions = np.arange(state.position, state.position + len(ids))
        x0 = self.embed(ids) if embeds is None else np.asarray(embeds, dtype=F32)  # [T, H]
        if x0.shape != (len(ids), cfg.hidden_size):
            raise EngineError(f"embeds must be [{len(ids)}, {cfg.hidden_size}], got {x0.shape}")
        memory = self.kernels.pass_memory if len(ids) > 1 else None
        if memory is not None:
            memory.begin()
        try:
            per_layer = self.per_layer_inputs(ids, x0)  # [T, L, Hp]
            streams = self.altup_streams(x0)  # [n, T, H]
            # short passes (a spoken turn's soft tokens, its closing) skip the per-layer trims:
            # their activations are small, and ~120 malloc_trim calls cost ~50 ms at E2B
            trimmed = memory if len(ids) > LAYER_TRIM_MIN_TOKENS else None
            step = Step(positions=positions, inv_freq=self._inv_freq, memory=trimmed)
            shared: dict[bool, KVView] = {}
            step.release()
            if len(ids) == 1:  # a decoded token: the work between kernels compiled
                scratch = DecodeScratch.for_config(cfg)
                for i in state.tier.layers():
                    decode_layer(self, i, streams, per_layer[:, i], state, step, shared, scratch)
            else:
                for i in state.tier.layers():
                    streams = self.decoder_layer(i, streams, per_layer[:, i], state, step, shared)
                    step.release()
        finally:
            if memory is not None:
                memory.end()
        state.position += len(ids)
        state.tokens_processed += len(ids)
        if not all_logits:
            streams = streams[:, -1:]  # only the last token's logits are wanted
        hidden = self.final_hidden(streams)  # [T, H]
        logits = softcap(self.kernels.lm_head(hidden), cfg.final_logit_softcapping)  # [T, V]
        return logits if all_logits else logits[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Token embeddings scaled by √H: ``[T] -> [T, H]``."""
        scale = F32(math.sqrt(self.config.hidden_size))
        return self.embed_rows.rows(ids) * scale

    def per_layer_inputs(self, ids: np.ndarray, x0: np.ndarray) -> np.ndarray:
        """Per-layer inputs ``[T, L, Hp]``: projected embedding plus per-layer embedding, · 2^-½.

        Ids outside the per-layer vocabulary (multimodal tokens) look up row 0.
        """
        cfg = self.config
        n, hp = cfg.num_hidden_layers, cfg.hidden_size_per_layer_input
        w = self.weights
        proj = self.kernels.per_layer_model_projection(x0) * F32(cfg.hidden_size**-0.5)  # [T, L*Hp]
        proj = rms_norm(proj.reshape(-1, n, hp), w.per_layer_projection_norm, cfg.rms_norm_eps)
        table_ids = np.where(ids < cfg.vocab_size_per_layer_input, ids, 0)
        rows = self.per_layer_rows.rows(table_ids)  # [T, L*Hp], a fresh array: scaled in place
        rows *= F32(math.sqrt(hp))
        proj += rows.reshape(-1, n, hp)
        proj *= INV_SQRT2
        return proj

    def altup_streams(self, x0: np.ndarray) -> np.ndarray:
        """Stream 0 is the embedding, streams 1… projections at its RMS: ``[T, H] -> [n, T, H]``."""
        return np.stack([x0, *(_rms_matched(p(x0), x0) for p in self.kernels.altup_projections)])

    def final_hidden(self, streams: np.ndarray) -> np.ndarray:
        """Unembed streams 1… at stream 0's RMS, average all, norm: ``[n, T, H] -> [T, H]``."""
        w = self.weights
        first = streams[0]
        unembedded = [
            first,
            *(
                _rms_matched(p(s), first)
                for s, p in zip(streams[1:], self.kernels.altup_unembed_projections, strict=True)
            ),
        ]
        return rms_norm(np.mean(np.stack(unembedded), axis=0), w.norm, self.config.rms_norm_eps)

    def decoder_layer(
        self,
        i: int,
        streams: np.ndarray,
        per_layer_input: np.ndarray,
        state: RunState,
        step: Step,
        shared: dict[bool, KVView],
    ) -> np.ndarray:
        """One layer: predict → attention and FFN on the active stream → correct → gate.

        Works in ``streams``' own memory and returns it."""
        cfg = self.config
        lw, kern = self.weights.layers[i], self.kernels.layers[i]
        predictions = altup_predict(lw.altup, streams, cfg)  # [n, T, H], in place
        active = predictions[cfg.altup_active_idx]  # [T, H]
        attn_laurel = self.attention_block(i, active, state, step, shared)  # [T, H]
        step.release()
        activated = self.ffn_block(i, attn_laurel, state.tier.ffn_dims[i])  # [T, H]
        step.release()
        corrected = altup_correct(lw.altup, predictions, activated, cfg)  # [n, T, H], in place
        update = per_layer_update(kern, lw, corrected[cfg.altup_active_idx], per_layer_input, cfg)
        corrected[1:] += update
        return corrected

    def attention_block(
        self, i: int, active: np.ndarray, state: RunState, step: Step, shared: dict[bool, KVView]
    ) -> np.ndarray:
        """``(active + post_attention_layernorm(attention) + laurel) / √2``: ``[T, H]``.

        Its own function so that its intermediates are freed before the FFN runs."""
        cfg = self.config
        lw, kern = self.weights.layers[i], self.kernels.layers[i]
        sliding = cfg.is_sliding(i)
        normed = rms_norm(active, lw.input_layernorm, cfg.rms_norm_eps)
        laurel_out = laurel(kern, lw, normed, cfg)
        q, keys, values = project_qkv(kern, lw.self_attn, normed, step, sliding, cfg)
        if keys is not None and values is not None:
            kv = state.cache.layers[i].extend(keys, values, step.positions)
            shared[sliding] = kv  # the last owner of each type feeds the shared layers
        else:
            kv = shared[sliding]
        del normed, keys, values
        step.release()
        attn = self_attention(kern, q, kv, step, sliding, cfg)
        out = rms_norm(attn, lw.post_attention_layernorm, cfg.rms_norm_eps)
        out += active
        out += laurel_out
        out *= INV_SQRT2
        return out

    def ffn_block(self, i: int, x: np.ndarray, width: int) -> np.ndarray:
        """``x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))``: ``[T, H]``."""
        cfg, lw = self.config, self.weights.layers[i]
        ffn_in = rms_norm(x, lw.pre_feedforward_layernorm, cfg.rms_norm_eps)
        ffn = mlp(self.kernels.layers[i].ffn, ffn_in, width, cfg.activation_sparsity[i])
        del ffn_in
        out = rms_norm(ffn, lw.post_feedforward_layernorm, cfg.rms_norm_eps)
        out += x
        return out


def _release_checkpoint_pages(checkpoint: Checkpoint) -> None:
    """Drop the checkpoint's pages that building the weights touched (small vectors, widened
    to float32 copies, and the kernel faulting in ~64 KB around each): quantized kernels never
    read the checkpoint's matrices, and anything read again faults back in from the file."""
    from edgeagent.engine.ort_kernels import release_mapped_pages  # noqa: PLC0415

    released = sum(release_mapped_pages(f.path) for f in checkpoint.files.values())
    _LOGGER.debug("dropped %.1f MB of mapped checkpoint pages", released / 1e6)


def _row_table(checkpoint: Checkpoint, name: str, capacity: int) -> RowTable:
    path, offset, info = checkpoint.location(name)
    rows, width = info.shape
    return RowTable(path, offset, (rows, width), numpy_dtype(info.dtype), capacity)


def _rms_matched(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rescale ``x`` to ``target``'s per-token RMS (``x``'s floored at √1e-5)."""
    width = x.shape[-1]
    if x.size == width:  # one token: Python floats
        mean_sq = max(float(np.vecdot(x.reshape(-1), x.reshape(-1))) / width, 1e-5)
        target_sq = float(np.vecdot(target.reshape(-1), target.reshape(-1))) / width
        return x * F32(math.sqrt(target_sq) / math.sqrt(mean_sq))
    target_rms = np.sqrt(np.vecdot(target, target)[..., None] * F32(1.0 / width))
    rms = np.sqrt(np.maximum(np.vecdot(x, x)[..., None] * F32(1.0 / width), F32(1e-5)))
    return x * target_rms / rms
