"""Read-only weights of the text decoder, as views of the checkpoint.

Matrices stay in their stored dtype and memory (memory-mapped safetensors
views); only the small vectors (norm weights, AltUp coefficients) are widened
to float32 once here. Attribute names follow the checkpoint keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.engine.reference import as_f32

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint


@dataclass(frozen=True)
class AttentionWeights:
    """``layers.N.self_attn.*``; k/v are ``None`` on KV-shared layers."""

    q_proj: np.ndarray  # [n_heads*hd, H]
    q_norm: np.ndarray  # [hd] f32
    o_proj: np.ndarray  # [H, n_heads*hd]
    k_proj: np.ndarray | None  # [n_kv*hd, H]
    v_proj: np.ndarray | None  # [n_kv*hd, H]
    k_norm: np.ndarray | None  # [hd] f32
    # derived: the q/k/v norm weight of each head side by side (v_norm has none: ones)
    qkv_norm: np.ndarray  # [nH (+ 2·n_kv), hd] f32


@dataclass(frozen=True)
class AltUpWeights:
    """``layers.N.altup.*``."""

    correct_output_scale: np.ndarray  # [H] f32
    correction_coefs: np.ndarray  # [n, n] f32
    prediction_coefs: np.ndarray  # [n*n, n] f32
    modality_router: np.ndarray  # [n, H] f32
    router_norm: np.ndarray  # [H] f32
    # derived: modality_router · router_norm / H, so that the router is one [T, H] @ [H, n]
    router: np.ndarray  # [n, H] f32


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer, ``layers.N.*``."""

    self_attn: AttentionWeights
    gate_proj: np.ndarray  # [I, H]   (mlp.gate_proj)
    up_proj: np.ndarray  # [I, H]     (mlp.up_proj)
    down_proj: np.ndarray  # [H, I]   (mlp.down_proj)
    input_layernorm: np.ndarray  # [H] f32
    post_attention_layernorm: np.ndarray
    pre_feedforward_layernorm: np.ndarray
    post_feedforward_layernorm: np.ndarray
    altup: AltUpWeights
    laurel_left: np.ndarray  # [r, H]   (laurel.linear_left)
    laurel_right: np.ndarray  # [H, r]  (laurel.linear_right)
    post_laurel_norm: np.ndarray  # [H] f32
    per_layer_input_gate: np.ndarray  # [Hp, H]
    per_layer_projection: np.ndarray  # [H, Hp]
    post_per_layer_input_norm: np.ndarray  # [H] f32

    def ffn_slab(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first ``width`` FFN units as views: gate, up ``[w, H]``, down ``[H, w]``."""
        return self.gate_proj[:width], self.up_proj[:width], self.down_proj[:, :width]


@dataclass(frozen=True)
class TextWeights:
    """Everything the text decoder reads, one view per checkpoint tensor."""

    embed_tokens: np.ndarray  # [V, H]  also the tied LM head
    embed_tokens_per_layer: np.ndarray  # [Vp, L*Hp]  stays on disk
    per_layer_model_projection: np.ndarray  # [L*Hp, H]
    per_layer_projection_norm: np.ndarray  # [Hp] f32
    altup_projections: tuple[np.ndarray, ...]  # (n-1) × [H, H]
    altup_unembed_projections: tuple[np.ndarray, ...]  # (n-1) × [H, H]
    norm: np.ndarray  # [H] f32
    layers: tuple[LayerWeights, ...]

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> TextWeights:
        """Collect views of every text-decoder tensor; no matrix is copied."""
        cfg = ckpt.config
        t = ckpt.tensor
        n_extra = cfg.altup_num_inputs - 1
        layers = tuple(_layer(ckpt, i) for i in range(cfg.num_hidden_layers))
        return cls(
            embed_tokens=t("embed_tokens.weight"),
            embed_tokens_per_layer=t("embed_tokens_per_layer.weight"),
            per_layer_model_projection=t("per_layer_model_projection.weight"),
            per_layer_projection_norm=as_f32(t("per_layer_projection_norm.weight")),
            altup_projections=tuple(t(f"altup_projections.{i}.weight") for i in range(n_extra)),
            altup_unembed_projections=tuple(
                t(f"altup_unembed_projections.{i}.weight") for i in range(n_extra)
            ),
            norm=as_f32(t("norm.weight")),
            layers=layers,
        )


def _layer(ckpt: Checkpoint, i: int) -> LayerWeights:
    cfg = ckpt.config
    p = f"layers.{i}."

    def t(name: str) -> np.ndarray:
        return ckpt.tensor(p + name + ".weight")

    def v(name: str) -> np.ndarray:
        return as_f32(t(name))

    def small(name: str) -> np.ndarray:
        # column-major, so that linear()'s weight.T is row-major: numpy's matmul with a
        # transposed operand this narrow (4 outputs) takes a path ~40× slower at T=128
        return np.asfortranarray(as_f32(t(name)))

    owns_kv = cfg.kv_source(i) == i
    q_norm = v("self_attn.q_norm")
    k_norm = v("self_attn.k_norm") if owns_kv else None
    norms = [np.broadcast_to(q_norm, (cfg.num_attention_heads, cfg.head_dim))]
    if k_norm is not None:
        n_kv = cfg.num_key_value_heads
        norms += [np.broadcast_to(k_norm, (n_kv, cfg.head_dim)), np.ones((n_kv, cfg.head_dim))]
    attn = AttentionWeights(
        q_proj=t("self_attn.q_proj"),
        q_norm=q_norm,
        o_proj=t("self_attn.o_proj"),
        k_proj=t("self_attn.k_proj") if owns_kv else None,
        v_proj=t("self_attn.v_proj") if owns_kv else None,
        k_norm=k_norm,
        qkv_norm=np.ascontiguousarray(np.concatenate(norms), dtype=np.float32),  # C order
    )
    router_norm = v("altup.router_norm")
    modality_router = small("altup.modality_router")
    altup = AltUpWeights(
        correct_output_scale=as_f32(ckpt.tensor(p + "altup.correct_output_scale")),
        correction_coefs=small("altup.correction_coefs"),
        prediction_coefs=small("altup.prediction_coefs"),
        modality_router=modality_router,
        router_norm=router_norm,
        router=np.asfortranarray(modality_router * (router_norm / np.float32(cfg.hidden_size))),
    )
    return LayerWeights(
        self_attn=attn,
        gate_proj=t("mlp.gate_proj"),
        up_proj=t("mlp.up_proj"),
        down_proj=t("mlp.down_proj"),
        input_layernorm=v("input_layernorm"),
        post_attention_layernorm=v("post_attention_layernorm"),
        pre_feedforward_layernorm=v("pre_feedforward_layernorm"),
        post_feedforward_layernorm=v("post_feedforward_layernorm"),
        altup=altup,
        laurel_left=t("laurel.linear_left"),
        laurel_right=t("laurel.linear_right"),
        post_laurel_norm=v("laurel.post_laurel_norm"),
        per_layer_input_gate=t("per_layer_input_gate"),
        per_layer_projection=t("per_layer_projection"),
        post_per_layer_input_norm=v("post_per_layer_input_norm"),
    )
