#!/usr/bin/env python3
# ruff: noqa: PLC0415, PLR0915  (torch/transformers are imported lazily; main() is a recipe)
"""Generate the audio parity fixtures under ``tests/fixtures/audio/`` from transformers.

transformers' ``Gemma3nAudioFeatureExtractor``, ``Gemma3nAudioEncoder`` and
``Gemma3nMultimodalEmbedder`` are the reference. This script (like
``make_parity_fixtures.py``) is the only place that imports torch or
transformers; run it with the oracle venv (``scripts/fixture-venv``):

    /tmp/x/bin/python scripts/make_audio_fixtures.py

It reads the committed speech clips (``tests/fixtures/audio/clips/*.wav``, made
by ``scripts/make_test_clips.py``) and writes:

* ``gemma3n_audio_tiny/``     a multimodal-layout checkpoint (bf16, one file):
                              a 3-block audio encoder with the real block structure
                              (chunk 12, left context 13, right 0, conv kernel 5,
                              reduction 4, 128 mel bins) at hidden 24 / 4 heads,
                              ``embed_audio`` into a 16-wide text space, a 2-layer
                              random text decoder so the checkpoint loads, and
                              ``preprocessor_config.json``.
* ``gemma3n_audio_variant/``  the same with other structure constants (chunk 5,
                              left context 7, conv kernel 3, reduction 2, 2 blocks,
                              hidden 16 / 2 heads, logit cap 10).
* ``reference.npz``           features and encoder outputs (names in ``meta.json``).
* ``meta.json``               versions, configs, seeds, statistics, what each array is.
* ``manifest_released_audio.json`` the released audio tower's tensor names and shapes.

Seeds are fixed and weights are rounded to bfloat16, so the stored weights are
exact; the reference arrays are float32 results of transformers on this CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
from fixture_common import TEXT, log, write_npz

REQUIRED_TORCH = "2.13.0"
REQUIRED_TRANSFORMERS = "5.24.0"
SEED = 20250701
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "audio"
CLIPS = ("two_clean", "one_white_5db")
FEATURE_SAMPLES = 8_000  # features stored for the first 0.5 s of each clip (size)

AUDIO_VOCAB = 16
AUDIO_OFFSET = 160 - AUDIO_VOCAB  # 144 (real 262272)
MODELS = {
    "gemma3n_audio_tiny": dict(
        hidden_size=24,
        conf_num_attention_heads=4,
        conf_num_hidden_layers=3,
        sscp_conv_channel_size=[8, 4],
        conf_attention_chunk_size=12,
        conf_attention_context_left=13,
        conf_attention_context_right=0,
        conf_conv_kernel_size=5,
        conf_reduction_factor=4,
        conf_attention_logit_cap=50.0,
    ),
    "gemma3n_audio_variant": dict(
        hidden_size=16,
        conf_num_attention_heads=2,
        conf_num_hidden_layers=2,
        sscp_conv_channel_size=[6, 3],
        conf_attention_chunk_size=5,
        conf_attention_context_left=7,
        conf_attention_context_right=0,
        conf_conv_kernel_size=3,
        conf_reduction_factor=2,
        conf_attention_logit_cap=10.0,
    ),
}
QK_GAIN = 3.0  # q/k/pos projections at 3/sqrt(fan_in): attention logits reach the soft cap


def check_versions(allow_other: bool) -> dict[str, str]:
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "numpy": np.__version__, "python": sys.version.split()[0]}  # fmt: skip
    bad = [k for k, want in (("torch", REQUIRED_TORCH), ("transformers", REQUIRED_TRANSFORMERS))
           if versions[k].split("+")[0] != want]  # fmt: skip
    if bad and not allow_other:
        sys.exit(f"unexpected versions {bad}: {versions}; pass --allow-other-versions")
    return versions


def read_clip(name: str) -> np.ndarray:
    with wave.open(str(OUT / "clips" / f"{name}.wav"), "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32)


# -- models ------------------------------------------------------------------------------------


def configs(name: str):  # type: ignore[no-untyped-def]
    from transformers import Gemma3nAudioConfig, Gemma3nTextConfig

    text = Gemma3nTextConfig(**TEXT)
    audio = Gemma3nAudioConfig(input_feat_size=128, vocab_size=AUDIO_VOCAB,
                               vocab_offset=AUDIO_OFFSET, **MODELS[name])  # fmt: skip
    return text, audio


def randomise(module, rng: np.random.Generator, rules: dict[str, str], prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Overwrite every parameter with seeded values far from its init, rounded to bf16."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            shape = tuple(p.shape)
            if name.endswith("per_dim_scale"):
                v, rule = rng.normal(0.0, 0.5, size=shape), "normal std 0.5"
            elif name.endswith("norm.weight") or len(shape) == 1:
                v, rule = rng.uniform(0.5, 1.5, size=shape), "uniform[0.5,1.5]"
            elif name.endswith("embedding.weight") or name.endswith("embed_tokens.weight"):
                v, rule = rng.normal(0.0, 1.0, size=shape), "normal std 1"
            else:
                fan_in = math.prod(shape[1:])
                gain = (
                    QK_GAIN
                    if name.endswith(("q_proj.weight", "k_proj.weight", "pos_proj.weight"))
                    else 1.0
                )
                v = rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)
                rule = f"normal std {gain:g}/sqrt(fan_in)"
            p.copy_(torch.from_numpy(v.astype(np.float32)).to(torch.bfloat16).float())
            rules[prefix + name] = rule


def build(name: str, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    import torch
    from transformers import Gemma3nForCausalLM
    from transformers.models.gemma3n.modeling_gemma3n import (
        Gemma3nAudioEncoder,
        Gemma3nMultimodalEmbedder,
    )

    text_cfg, audio_cfg = configs(name)
    torch.manual_seed(SEED)
    tower = Gemma3nAudioEncoder(audio_cfg).float().eval()
    embed = Gemma3nMultimodalEmbedder(audio_cfg, text_cfg).float().eval()
    text = Gemma3nForCausalLM(text_cfg).float().eval()
    rules: dict[str, str] = {}
    randomise(tower, rng, rules, "model.audio_tower.")
    randomise(embed, rng, rules, "model.embed_audio.")
    randomise(text, rng, rules, "model.language_model.")
    return text_cfg, audio_cfg, tower, embed, text, rules


def write_checkpoint(out: Path, text_cfg, audio_cfg, tower, embed, text, versions) -> int:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma3nAudioFeatureExtractor

    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in text.state_dict().items():
        if k != "lm_head.weight":
            tensors["model.language_model." + k[len("model.") :]] = v
    tensors.update({"model.audio_tower." + k: v for k, v in tower.state_dict().items()})
    tensors.update({"model.embed_audio." + k: v for k, v in embed.state_dict().items()})
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    text_dict = text_cfg.to_dict()
    text_dict.pop("transformers_version", None)
    audio_dict = audio_cfg.to_dict()
    audio_dict.pop("transformers_version", None)
    config = {
        "architectures": ["Gemma3nForConditionalGeneration"],
        "model_type": "gemma3n",
        "text_config": text_dict,
        "audio_config": audio_dict,
        "audio_soft_tokens_per_image": 188,
        "boa_token_id": 100,
        "eoa_token_id": AUDIO_OFFSET,
        "audio_token_id": AUDIO_OFFSET + 1,
        "torch_dtype": "bfloat16",
        "transformers_version": versions["transformers"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    fe = Gemma3nAudioFeatureExtractor()
    (out / "preprocessor_config.json").write_text(fe.to_json_string())
    return sum(t.numel() for k, t in tensors.items() if not k.startswith("model.language_model."))


# -- references ---------------------------------------------------------------------------------


def features(pcm: np.ndarray, pad: bool) -> np.ndarray:
    from transformers import Gemma3nAudioFeatureExtractor

    fe = Gemma3nAudioFeatureExtractor()
    out = fe(pcm, return_tensors="np", pad_to_multiple_of=128 if pad else None)
    mask = out["input_features_mask"][0]
    assert mask.all(), "a single clip is never masked"
    return out["input_features"][0].astype(np.float32)


def encode(tower, embed, mel: np.ndarray, mask: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    """(encoder output [T, H], projected [T, text_H], per-block debug, padding mask)."""
    import torch

    x = torch.from_numpy(mel)[None] if mel.ndim == 2 else torch.from_numpy(mel)
    m = torch.zeros(x.shape[:2], dtype=torch.bool) if mask is None else torch.from_numpy(mask)
    debug: list[np.ndarray] = []
    hooks = [tower.subsample_conv_projection.register_forward_hook(
        lambda _m, _i, o: debug.append(o[0].detach().numpy().copy()))]  # fmt: skip
    for block in tower.conformer:
        hooks.append(block.register_forward_hook(
            lambda _m, _i, o: debug.append(o[0].detach().numpy().copy())))  # fmt: skip
    logit_max = []

    def cap_hook(mod, args, out):  # type: ignore[no-untyped-def]
        logit_max.append(float(out.abs().max()))

    for block in tower.conformer:
        hooks.append(
            block.attention.attn.relative_position_embedding.register_forward_hook(cap_hook)
        )
    with torch.no_grad():
        res = tower(x, m, return_dict=True)
        proj = embed(inputs_embeds=res.last_hidden_state)
    for h in hooks:
        h.remove()
    return (res.last_hidden_state.numpy(), proj.numpy(), debug, res.audio_mel_mask.numpy(),
            max(logit_max))  # fmt: skip


def fp64_deviation(tower, embed, mel: np.ndarray, proj32: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """How far transformers' own float32 result is from float64: the parity noise floor."""
    import copy

    import torch

    t64, e64 = copy.deepcopy(tower).double(), copy.deepcopy(embed).double()
    x = torch.from_numpy(mel.astype(np.float64))[None]
    with torch.no_grad():
        out = t64(x, torch.zeros(x.shape[:2], dtype=torch.bool), return_dict=True)
        proj = e64(inputs_embeds=out.last_hidden_state).numpy()[0]
    return float(np.abs(proj - proj32).max())


def released_manifest() -> dict[str, object]:
    """Names and shapes of the released audio tower and embedder (meta device, no weights)."""
    import torch
    from transformers import Gemma3nAudioConfig, Gemma3nTextConfig
    from transformers.models.gemma3n.modeling_gemma3n import (
        Gemma3nAudioEncoder,
        Gemma3nMultimodalEmbedder,
    )

    audio_cfg, text_cfg = Gemma3nAudioConfig(), Gemma3nTextConfig()
    with torch.device("meta"):
        tower = Gemma3nAudioEncoder(audio_cfg)
        embed = Gemma3nMultimodalEmbedder(audio_cfg, text_cfg)
    shapes = {"model.audio_tower." + k: list(v.shape) for k, v in tower.state_dict().items()}
    shapes.update({"model.embed_audio." + k: list(v.shape) for k, v in embed.state_dict().items()})
    return {
        "audio_config": audio_cfg.to_dict() | {"transformers_version": None},
        "text_hidden_size": text_cfg.hidden_size,
        "tensors": shapes,
        "parameters": {
            "audio_tower": sum(p.numel() for p in tower.parameters()),
            "embed_audio": sum(p.numel() for p in embed.parameters()),
        },
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--allow-other-versions", action="store_true")
    args = parser.parse_args(argv)
    versions = check_versions(args.allow_other_versions)
    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {}
    desc: dict[str, str] = {}
    stats: dict[str, object] = {}

    # Features: the first 0.5 s of each clip, and a synthetic edge case.
    t = np.arange(6000) / 16000
    synthetic = np.concatenate([
        np.zeros(1500),  # digital silence: every bin at the floor
        0.99 * np.sign(np.sin(2 * np.pi * 440 * t[:2000])),  # full-scale square wave
        0.3 * np.sin(2 * np.pi * (200 + 3000 * t[:2500]) * t[:2500]),  # chirp
    ]).astype(np.float32)  # fmt: skip
    arrays["synthetic_pcm"] = synthetic
    arrays["synthetic_features"] = features(synthetic, pad=False)
    desc["synthetic_pcm"] = (
        "float32 [6000]: 1500 zeros, full-scale 440 Hz square, a 0.3-amplitude chirp"
    )
    desc["synthetic_features"] = (
        "float32 [T, 128]: Gemma3nAudioFeatureExtractor, pad_to_multiple_of=None"
    )
    for clip in CLIPS:
        pcm = read_clip(clip)
        arrays[f"{clip}_features"] = features(pcm[:FEATURE_SAMPLES], pad=False)
        desc[f"{clip}_features"] = (
            f"float32 [T, 128]: features of clips/{clip}.wav[:{FEATURE_SAMPLES}] (int16/32768)"
        )

    all_rules: dict[str, dict[str, str]] = {}
    for name in MODELS:
        text_cfg, audio_cfg, tower, embed, text, all_rules[name] = build(
            name, np.random.default_rng([SEED, len(name)])
        )
        n_params = write_checkpoint(OUT / name, text_cfg, audio_cfg, tower, embed, text, versions)
        model_stats: dict[str, object] = {"audio_parameters": n_params}
        for clip in CLIPS:
            pcm = read_clip(clip)
            for pad in (False, True):
                key = f"{name}/{clip}" + ("_processor" if pad else "")
                mel = features(pcm, pad=pad)
                out, proj, debug, mask, logit_max = encode(tower, embed, mel)
                assert not mask.any()
                arrays[f"{key}/encoder"] = out[0]
                arrays[f"{key}/projected"] = proj[0]
                padded = " padded to 128 samples" if pad else ""
                desc[f"{key}/encoder"] = (
                    f"float32 [tokens, {audio_cfg.hidden_size}]: audio_tower(features of "
                    f"clips/{clip}.wav{padded}, no mask)"
                )
                desc[f"{key}/projected"] = (
                    f"float32 [tokens, {text_cfg.hidden_size}]: embed_audio(inputs_embeds=encoder)"
                )
                if not pad and clip == CLIPS[0]:
                    arrays[f"{key}/debug_subsample"] = debug[0]
                    for i, d in enumerate(debug[1:]):
                        arrays[f"{key}/debug_block{i}"] = d
                    desc[f"{key}/debug_*"] = (
                        "float32: subsample_conv_projection output, then each block output"
                    )
                    model_stats["max_abs_attention_logit_before_cap"] = logit_max
                    model_stats["fp32_vs_fp64_max_abs_diff_projected"] = fp64_deviation(
                        tower, embed, mel, proj[0]
                    )
                    model_stats["tokens"] = int(out.shape[1])
                    model_stats["mel_frames"] = int(mel.shape[0])
        # A padded batch: the shorter clip in a batch with the longer one (the processor's path).
        long_pcm, short_pcm = read_clip(CLIPS[0]), read_clip(CLIPS[1])
        from transformers import Gemma3nAudioFeatureExtractor

        batch = Gemma3nAudioFeatureExtractor()([long_pcm, short_pcm], return_tensors="np")
        mels, masks = batch["input_features"].astype(np.float32), ~batch["input_features_mask"]
        out, proj, _, mask, _ = encode(tower, embed, mels, masks)
        valid = int((~mask[1]).sum())
        alone = arrays[f"{name}/{CLIPS[1]}_processor/projected"]
        n = min(valid, len(alone))
        diff = np.abs(proj[1][:n] - alone[:n]).max(axis=-1)
        model_stats["padded_batch_vs_alone"] = {
            "valid_tokens": valid,
            "tokens_alone": len(alone),
            "max_abs_diff_per_token_last5": [float(d) for d in diff[-5:]],
            "note": "in a padded batch the shorter clip's last tokens see log-floor mel frames "
                    "where alone they see the sub-sampling conv's zero padding",
        }  # fmt: skip
        with torch.no_grad():
            pad_id = torch.tensor([[text_cfg.vocab_size - 1]])
            arrays[f"{name}/pad_embedding"] = embed(input_ids=pad_id).numpy()[0, 0]
        desc[f"{name}/pad_embedding"] = (
            "float32 [text_H]: embed_audio(input_ids=vocab_size-1), what the processor's "
            "188-token path pads with"
        )
        stats[name] = model_stats
        log(name, json.dumps(model_stats))

    write_npz(OUT / "reference.npz", arrays)
    manifest = json.dumps(released_manifest(), indent=1, sort_keys=True, default=str)
    (OUT / "manifest_released_audio.json").write_text(manifest + "\n")
    meta = {
        "generator": "scripts/make_audio_fixtures.py",
        "versions": versions,
        "seed": SEED,
        "text_config": TEXT,
        "audio_configs": MODELS,
        "weights": "every parameter random (numpy PCG64), rounded to bfloat16; RMSNorm and "
        "group-norm weights uniform[0.5,1.5], per_dim_scale normal(0,0.5), q/k/pos_proj "
        f"{QK_GAIN}/sqrt(fan_in), other matrices 1/sqrt(fan_in), embeddings normal(0,1)",
        "randomisation_rules": all_rules,
        "arrays": desc,
        "stats": stats,
    }  # fmt: skip
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log("wrote", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
