"""The Gemma 3n text decoder: embeddings, AltUp streams, layers, LM head.

``TextModel`` holds the immutable parts (config, weight views, tiers);
``RunState`` holds what a conversation changes (KV cache, position). One
``forward`` serves a single pass, chunked prefill and single-token decode.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from edgeagent.engine.checkpoint import Checkpoint
from edgeagent.engine.config import TextConfig
from edgeagent.engine.kv_cache import KVCache, KVView
from edgeagent.engine.layers import (
    INV_SQRT2,
    Step,
    altup_correct,
    altup_predict,
    laurel,
    mlp,
    per_layer_update,
    project_kv,
    self_attention,
)
from edgeagent.engine.reference import F32, as_f32, linear, rms_norm, rope_inv_freq, softcap
from edgeagent.engine.tiers import TierPlan, named_tiers
from edgeagent.engine.weights import TextWeights
from edgeagent.errors import EngineError, TierError

_LOGGER = logging.getLogger(__name__)


@dataclass
class RunState:
    """One conversation's mutable state: the KV cache and the next position."""

    tier: TierPlan
    cache: KVCache
    position: int = 0
    tokens_processed: int = 0  # every token any forward pass took in, for accounting


class TextModel:
    """Gemma 3n's text decoder over one loaded checkpoint."""

    def __init__(self, checkpoint: Checkpoint, max_context: int = 4096) -> None:
        self.checkpoint = checkpoint
        self.config: TextConfig = checkpoint.config
        self.weights = TextWeights.from_checkpoint(checkpoint)
        self.max_context = max_context
        self.tiers: dict[str, TierPlan] = named_tiers(self.config, checkpoint.declared_tiers)
        hd = self.config.head_dim
        self._inv_freq = {
            True: rope_inv_freq(hd, self.config.rope_theta_local),
            False: rope_inv_freq(hd, self.config.rope_theta_global),
        }
        if self.config.random_weights:
            _LOGGER.warning("%s holds random weights: its output is noise", checkpoint.path)

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        """The checkpoint's tokenizer, or ``None`` when it has no ``tokenizer.json``."""
        return self.checkpoint.tokenizer

    # -- tiers and state -------------------------------------------------

    def tier(self, tier: str | TierPlan | None = None) -> TierPlan:
        """Resolve a tier name or plan (``None``: full) and check it against the checkpoint."""
        if tier is None:
            return self.tiers["full"]
        if isinstance(tier, TierPlan):
            return tier.validate(self.config)
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
        return RunState(tier=plan, cache=KVCache(self.config, capacity, plan.layers()))

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
        per_layer = self.per_layer_inputs(ids, x0)  # [T, L, Hp]
        streams = self.altup_streams(x0)  # [n, T, H]
        step = Step(positions=positions, inv_freq=self._inv_freq)
        shared: dict[bool, KVView] = {}
        for i in state.tier.layers():
            streams = self.decoder_layer(i, streams, per_layer[:, i], state, step, shared)
        state.position += len(ids)
        state.tokens_processed += len(ids)
        hidden = self.final_hidden(streams)  # [T, H]
        if not all_logits:
            hidden = hidden[-1:]
        logits = softcap(linear(hidden, self.weights.embed_tokens), cfg.final_logit_softcapping)
        return logits if all_logits else logits[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Token embeddings scaled by √H: ``[T] -> [T, H]``."""
        scale = F32(math.sqrt(self.config.hidden_size))
        return as_f32(self.weights.embed_tokens[ids]) * scale

    def per_layer_inputs(self, ids: np.ndarray, x0: np.ndarray) -> np.ndarray:
        """Per-layer inputs ``[T, L, Hp]``: projected embedding plus per-layer embedding, · 2^-½.

        Ids outside the per-layer vocabulary (multimodal tokens) look up row 0.
        """
        cfg = self.config
        n, hp = cfg.num_hidden_layers, cfg.hidden_size_per_layer_input
        w = self.weights
        proj = linear(x0, w.per_layer_model_projection) * F32(cfg.hidden_size**-0.5)  # [T, L*Hp]
        proj = rms_norm(proj.reshape(-1, n, hp), w.per_layer_projection_norm, cfg.rms_norm_eps)
        table_ids = np.where(ids < cfg.vocab_size_per_layer_input, ids, 0)
        rows = as_f32(w.embed_tokens_per_layer[table_ids]) * F32(math.sqrt(hp))  # [T, L*Hp]
        return (proj + rows.reshape(-1, n, hp)) * INV_SQRT2

    def altup_streams(self, x0: np.ndarray) -> np.ndarray:
        """Stream 0 is the embedding, streams 1… projections at its RMS: ``[T, H] -> [n, T, H]``."""
        return np.stack(
            [x0, *(_rms_matched(linear(x0, p), x0) for p in self.weights.altup_projections)]
        )

    def final_hidden(self, streams: np.ndarray) -> np.ndarray:
        """Unembed streams 1… at stream 0's RMS, average all, norm: ``[n, T, H] -> [T, H]``."""
        w = self.weights
        first = streams[0]
        unembedded = [
            first,
            *(
                _rms_matched(linear(s, p), first)
                for s, p in zip(streams[1:], w.altup_unembed_projections, strict=True)
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
        """One layer: predict → attention and FFN on the active stream → correct → gate."""
        cfg = self.config
        lw = self.weights.layers[i]
        sliding = cfg.is_sliding(i)
        predictions = altup_predict(lw.altup, streams, cfg)  # [n, T, H]
        active = predictions[cfg.altup_active_idx]  # [T, H]
        normed = rms_norm(active, lw.input_layernorm, cfg.rms_norm_eps)
        laurel_out = laurel(lw, normed, cfg)
        if cfg.kv_source(i) == i:
            k, v = project_kv(lw.self_attn, normed, step, sliding, cfg)
            kv = state.cache.layers[i].extend(k, v, step.positions)
            shared[sliding] = kv  # the last owner of each type feeds the shared layers
        else:
            kv = shared[sliding]
        attn = self_attention(lw.self_attn, normed, kv, step, sliding, cfg)
        attn = rms_norm(attn, lw.post_attention_layernorm, cfg.rms_norm_eps)
        attn_laurel = (active + attn + laurel_out) * INV_SQRT2  # [T, H]
        ffn_in = rms_norm(attn_laurel, lw.pre_feedforward_layernorm, cfg.rms_norm_eps)
        ffn = mlp(lw, ffn_in, state.tier.ffn_dims[i], cfg.activation_sparsity[i])
        activated = attn_laurel + rms_norm(ffn, lw.post_feedforward_layernorm, cfg.rms_norm_eps)
        corrected = altup_correct(lw.altup, predictions, activated, cfg)  # [n, T, H]
        update = per_layer_update(lw, corrected[cfg.altup_active_idx], per_layer_input, cfg)
        corrected[1:] += update
        return corrected


def _rms_matched(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rescale ``x`` to ``target``'s per-token RMS (``x``'s floored at √1e-5)."""
    target_rms = np.sqrt(np.mean(np.square(target), axis=-1, keepdims=True))
    rms = np.sqrt(np.maximum(np.mean(np.square(x), axis=-1, keepdims=True), F32(1e-5)))
    return x * target_rms / rms
