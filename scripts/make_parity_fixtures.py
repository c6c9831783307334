#!/usr/bin/env python3
"""Generate the Gemma 3n parity fixtures under ``tests/fixtures/`` from Hugging Face transformers.

transformers is the reference implementation of the Gemma 3n text decoder. This script is the
only place in the project that imports torch or transformers; the ``edgeagent`` package never
does. The fixtures it writes are committed, so tests run without torch.

Make the oracle venv once (CPU torch is enough; on x86 Linux ``pip`` may pull the CUDA build of
torch, which also works, just bigger):

    python3.11 -m venv /tmp/x && /tmp/x/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy

(``scripts/fixture-venv [DIR]`` does exactly that.) Then, from the repository root:

    /tmp/x/bin/python scripts/make_parity_fixtures.py

regenerates everything in ``tests/fixtures/`` (``--out DIR`` writes elsewhere). Seeds are fixed,
JSON keys are sorted and the ``.npz`` archive is written with fixed timestamps, so running it
twice on the same machine gives byte-identical files. Float32 matmul results can differ in the
last bits between CPU kinds/BLAS builds, so a run on another machine may change low bits of the
reference arrays (never the weights, which come from numpy's PCG64 and are rounded to bf16).

Other torch/transformers versions are refused unless ``--allow-other-versions`` is given; the
versions used are recorded in ``tests/fixtures/gemma3n_tiny/meta.json`` and in the manifests.

What is written:

* ``gemma3n_tiny/text/``        Gemma3nForCausalLM ``save_pretrained`` (fp32, ``model.*`` keys).
* ``gemma3n_tiny/multimodal/``  the layout Google releases (``model_type: gemma3n``, bf16,
                                two shards + index, ``model.language_model.*`` keys, unused
                                KV-shared k/v/k_norm tensors, small audio/vision tensors).
* ``gemma3n_tiny/reference.npz`` logits and more, computed with transformers in float32.
* ``gemma3n_tiny/meta.json``    versions, seeds, descriptions, slicing rules, statistics.
* ``manifests/gemma3n_{e2b,e4b}.json`` real-size configs, tensor names and shapes (meta device).
* ``README.md``                 what each file is.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REQUIRED_TORCH = "2.13.0"
REQUIRED_TRANSFORMERS = "5.24.0"

SEED_TORCH = 1234  # torch.manual_seed before building modules (their init is overwritten anyway)
SEED_WEIGHTS = 20250626  # numpy PCG64 stream for every text-decoder weight
SEED_UNUSED = 20250627  # numpy stream for the unused KV-shared k/v/k_norm of the multimodal layout
SEED_MULTIMODAL = (
    20250628  # numpy stream for embed_vision/embed_audio/audio_tower/vision_tower tensors
)
SEED_IDS = 20250629  # numpy stream for input_ids / prompt_ids

T = 24  # reference sequence length (3x the sliding window)
PROMPT_LEN = 10
MAX_NEW_TOKENS = 20
EOS_IDS = [1, 106]

# Tiny "E4B scaled down" text config.
TINY = dict(
    vocab_size=512,
    vocab_size_per_layer_input=384,
    hidden_size=32,
    hidden_size_per_layer_input=8,
    num_hidden_layers=20,
    intermediate_size=[128] * 20,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    sliding_window=8,
    num_kv_shared_layers=10,
    laurel_rank=4,
    altup_num_inputs=4,
    activation_sparsity_pattern=[0.95] * 5 + [0.0] * 15,
    final_logit_softcapping=30.0,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    pad_token_id=0,
    eos_token_id=list(EOS_IDS),
    bos_token_id=2,
)
ROPE_GLOBAL = 1_000_000.0
ROPE_LOCAL = 10_000.0

# Multimodal id layout scaled into the tiny vocab: real 262144 text + 128 vision + 128 audio,
# tiny 384 text + 64 vision + 64 audio. boi/boa sit 145/144 ids below the end of the text vocab,
# as 255999/256000 do below 262144.
TINY_TEXT_VOCAB = 384
TINY_VISION_VOCAB = 64
TINY_AUDIO_VOCAB = 64
TINY_VISION_OFFSET = TINY_TEXT_VOCAB  # 384  (real 262144)
TINY_AUDIO_OFFSET = TINY_TEXT_VOCAB + TINY_VISION_VOCAB  # 448  (real 262272)
TINY_IDS = dict(
    boi_token_id=TINY_TEXT_VOCAB - 145,  # 239 (real 255999 <start_of_image>)
    boa_token_id=TINY_TEXT_VOCAB - 144,  # 240 (real 256000 <start_of_audio>)
    eoi_token_id=TINY_VISION_OFFSET,  # 384 (real 262144 <end_of_image>)
    image_token_id=TINY_VISION_OFFSET + 1,  # 385 (real 262145 <image_soft_token>)
    eoa_token_id=TINY_AUDIO_OFFSET,  # 448 (real 262272 <end_of_audio>)
    audio_token_id=TINY_AUDIO_OFFSET + 1,  # 449 (real 262273 <audio_soft_token>)
)
TINY_VISION_HIDDEN = 16  # real 2048 (MobileNetV5 output width)
TINY_AUDIO_HIDDEN = 16  # real 1536

# Tiers (MatFormer slices) of the tiny model.
SKIP_LAYERS = [10, 11, 12, 13, 14]  # the first 5 KV-shared layers, as E4B->E2B skips 20..24
TIERS = {
    "e2b": dict(ffn_dims=[64] * 20, skip_layers=SKIP_LAYERS),
    "mixed": dict(ffn_dims=[128 if i == 3 else 64 for i in range(20)], skip_layers=SKIP_LAYERS),
}

# Randomisation scales.
EMBED_STD = 1.0  # embed_tokens (tied lm_head): sets the logit scale (std ~2.4, below the 30 cap)
ROUTER_STD = 4.0  # modality_router: its input is RMSNorm(x)/hidden, so it needs a large weight
COEF_STD = (
    0.05  # altup prediction/correction coefs (0.2 makes the model amplify fp32 rounding ~20x more)
)
# RMSNorm weights and altup.correct_output_scale. Around 1 the random 20-layer model amplifies
# float32 rounding to ~2e-4 in the logits (measured against float64), above the 1e-4 parity
# tolerance; at 0.2-0.6 each layer adds a modest update, like trained post-norm scales, and the
# float32-vs-float64 gap is ~1e-5 (reported as fp64_deviation in meta.json).
NORM_LO, NORM_HI = 0.2, 0.6

MULTIMODAL_SHARDS = 2


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def base_version(v: str) -> str:
    return v.split("+", 1)[0]


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez with fixed zip timestamps (np.savez stamps the current time: not reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def file_tree_sizes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------------------------------------
# version check
# ----------------------------------------------------------------------------------------------


def check_versions(allow_other: bool):
    import safetensors
    import torch
    import transformers

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": sys.version.split()[0],
    }
    bad = []
    if base_version(torch.__version__) != REQUIRED_TORCH:
        bad.append(f"torch {torch.__version__} (want {REQUIRED_TORCH})")
    if base_version(transformers.__version__) != REQUIRED_TRANSFORMERS:
        bad.append(f"transformers {transformers.__version__} (want {REQUIRED_TRANSFORMERS})")
    if bad:
        msg = "unexpected versions: " + ", ".join(bad)
        if not allow_other:
            sys.exit(msg + "\nrefusing; pass --allow-other-versions to generate anyway")
        log("WARNING:", msg)
    versions["allow_other_versions_used"] = bool(bad)
    return versions


# ----------------------------------------------------------------------------------------------
# tiny model
# ----------------------------------------------------------------------------------------------


def tiny_text_config(**overrides):
    from transformers import Gemma3nTextConfig

    kw = copy.deepcopy(TINY)
    kw["rope_parameters"] = {
        "full_attention": {"rope_type": "default", "rope_theta": ROPE_GLOBAL},
        "sliding_attention": {"rope_type": "default", "rope_theta": ROPE_LOCAL},
    }
    kw.update(overrides)
    return Gemma3nTextConfig(**kw)


def check_mirrors_e4b(cfg) -> dict:
    """The tiny model keeps E4B's structure: skipping the first 5 KV-shared layers keeps both producers."""
    L = cfg.num_hidden_layers
    first_shared = L - cfg.num_kv_shared_layers
    modes = cfg.kv_sharing_modes
    producers = {cfg.layer_types[i]: i for i in range(L) if modes[i] == "store"}
    full = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
    assert full == [4, 9, 14, 19], full
    assert first_shared == 10 and producers == {"sliding_attention": 8, "full_attention": 9}, (
        producers
    )
    assert all(m == "reuse" for m in modes[first_shared:])
    kept = L - len(SKIP_LAYERS)
    shared_after = cfg.num_kv_shared_layers - sum(1 for i in SKIP_LAYERS if i >= first_shared)
    assert (kept, shared_after) == (15, 5)
    # E4B: 35 layers, 15 shared, first shared 20, producers 18/19; skipping 20..24 gives E2B 30/10.
    return {
        "first_shared_layer": first_shared,
        "kv_producers": producers,
        "full_attention_layers": full,
        "after_skipping": {"layers": kept, "num_kv_shared_layers": shared_after},
        "e4b_analogue": "E4B 35 layers / 15 shared (first shared 20, producers 18 sliding, 19 full); "
        "skipping 20..24 gives E2B 30 / 10. Tiny: 20 / 10 (first shared 10, producers 8, 9); "
        "skipping 10..14 gives 15 / 5.",
    }


def randomise(model, rng: np.random.Generator) -> dict[str, str]:
    """Overwrite every parameter with fixed-seed values far from its init; return the rule per name."""
    import torch
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nRMSNorm

    norm_weights = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, Gemma3nRMSNorm) and getattr(mod, "with_scale", False):
            norm_weights.add(f"{mname}.weight")

    rules = {}
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is listed once, as embed_tokens
            shape = tuple(p.shape)
            if name in norm_weights or name.endswith("altup.correct_output_scale"):
                v = rng.uniform(NORM_LO, NORM_HI, size=shape)
                rule = f"uniform[{NORM_LO},{NORM_HI}]"
            elif name.endswith("embed_tokens.weight"):
                v = rng.normal(0.0, EMBED_STD, size=shape)
                rule = f"normal std {EMBED_STD}"
            elif name.endswith("embed_tokens_per_layer.weight"):
                std = 1.0 / math.sqrt(model.config.hidden_size_per_layer_input)
                v = rng.normal(0.0, std, size=shape)
                rule = "normal std 1/sqrt(hidden_size_per_layer_input)"
            elif name.endswith("altup.modality_router.weight"):
                v = rng.normal(0.0, ROUTER_STD, size=shape)
                rule = f"normal std {ROUTER_STD}"
            elif name.endswith("altup.prediction_coefs.weight") or name.endswith(
                "altup.correction_coefs.weight"
            ):
                v = rng.normal(0.0, COEF_STD, size=shape)
                rule = f"normal std {COEF_STD}"
            elif len(shape) == 2:
                v = rng.normal(0.0, 1.0 / math.sqrt(shape[1]), size=shape)
                rule = "normal std 1/sqrt(fan_in)"
            else:
                raise RuntimeError(f"no randomisation rule for {name} {shape}")
            p.copy_(torch.from_numpy(v.astype(np.float32)))
            rules[name] = rule
    return rules


def round_to_bf16(model) -> None:
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def build_tiny_model(versions_only=False):
    import torch
    from transformers import Gemma3nForCausalLM

    cfg = tiny_text_config()
    torch.manual_seed(SEED_TORCH)
    model = Gemma3nForCausalLM(cfg).to(torch.float32)
    rules = randomise(model, np.random.default_rng(SEED_WEIGHTS))
    round_to_bf16(model)
    model.config._attn_implementation = "eager"
    model.eval()
    return model, rules


def text_state_dict(model) -> dict:
    """The state dict save_pretrained writes (tied lm_head left out)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return sd


# ----------------------------------------------------------------------------------------------
# forward passes and statistics
# ----------------------------------------------------------------------------------------------


def softcap(logits, cap):
    import torch

    return torch.tanh(logits / cap) * cap


def forward_with_debug(model, ids):
    """One no-cache forward; also capture the altup stacks around each decoder layer and more."""
    import torch

    inner = model.model
    captured = {"layer_io": [], "gate": {}}
    hooks = []

    def pre0(mod, args, kwargs):
        hs = args[0] if args else kwargs["hidden_states"]
        captured["layer_io"].append(hs.detach().clone())

    def post(mod, args, kwargs, out):
        captured["layer_io"].append(out.detach().clone())

    hooks.append(inner.layers[0].register_forward_pre_hook(pre0, with_kwargs=True))
    for layer in inner.layers:
        hooks.append(layer.register_forward_hook(post, with_kwargs=True))

    def mk_gate_hook(i):
        def h(mod, inp, out):
            g = out.detach().clone()
            mlp = inner.layers[i].mlp
            if mlp.activation_sparsity > 0.0:
                g = mlp._gaussian_topk(g)
            captured["gate"][i] = g

        return h

    for i, layer in enumerate(inner.layers):
        hooks.append(layer.mlp.gate_proj.register_forward_hook(mk_gate_hook(i)))

    def norm_hook(mod, inp, out):
        captured["final_hidden"] = out.detach().clone()

    hooks.append(inner.norm.register_forward_hook(norm_hook))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=False)
            embeds = inner.embed_tokens(ids)
            pli = inner.project_per_layer_inputs(embeds, inner.get_per_layer_inputs(ids))
            raw = model.lm_head(captured["final_hidden"])
    finally:
        for h in hooks:
            h.remove()
    return out.logits[0], {
        "inputs_embeds": embeds[0],
        "per_layer_inputs": pli[0],
        "layer_io": torch.stack([x[:, 0] for x in captured["layer_io"]]),
        "final_hidden": captured["final_hidden"][0],
        "raw_logits": raw[0],
        "gate": captured["gate"],
    }


def logits_of(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0]


def logit_stats(logits, raw=None, cap=30.0) -> dict:
    x = np.asarray(logits, dtype=np.float64)
    st = {
        "abs_max": float(np.abs(x).max()),
        "std": float(x.std()),
        "mean": float(x.mean()),
        "frac_abs_gt_20": float((np.abs(x) > 20).mean()),
        "frac_abs_gt_25": float((np.abs(x) > 25).mean()),
    }
    if raw is not None:
        r = np.asarray(raw, dtype=np.float64)
        st["pre_softcap_abs_max"] = float(np.abs(r).max())
        st["pre_softcap_std"] = float(r.std())
        st["softcap_max_abs_change"] = float(np.abs(r - x).max())
    return st


ABLATIONS = {
    # group -> (parameter-name regex, value to set); each must change the logits noticeably
    "altup.correct_output_scale": (r"altup\.correct_output_scale$", 0.0),
    "altup.prediction_coefs": (r"altup\.prediction_coefs\.weight$", 0.0),
    "altup.correction_coefs": (r"altup\.correction_coefs\.weight$", 0.0),
    "altup.modality_router": (r"altup\.modality_router\.weight$", 0.0),
    "laurel.linear_right": (r"laurel\.linear_right\.weight$", 0.0),
    "embed_tokens_per_layer": (r"embed_tokens_per_layer\.weight$", 0.0),
    "per_layer_model_projection": (r"per_layer_model_projection\.weight$", 0.0),
    "altup_projections": (r"model\.altup_projections\.\d+\.weight$", 0.0),
    "altup_unembed_projections": (r"model\.altup_unembed_projections\.\d+\.weight$", 0.0),
    "per_layer_projection": (r"layers\.\d+\.per_layer_projection\.weight$", 0.0),
    "q_norm": (r"q_norm\.weight$", 1.0),
    "k_norm": (r"k_norm\.weight$", 1.0),
}


def ablation_effects(model, ids) -> dict:
    """Max |logit change| when one group of parameters is reset (or activation sparsity is switched off)."""
    import torch

    base = logits_of(model, ids)
    params = dict(model.named_parameters())
    effects = {}
    for group, (pattern, value) in ABLATIONS.items():
        names = [n for n in params if re.search(pattern, n)]
        assert names, group
        saved = {n: params[n].detach().clone() for n in names}
        with torch.no_grad():
            for n in names:
                params[n].fill_(value)
        effects[group] = float((logits_of(model, ids) - base).abs().max())
        with torch.no_grad():
            for n in names:
                params[n].copy_(saved[n])
    saved_pattern = [layer.mlp.activation_sparsity for layer in model.model.layers]
    for layer in model.model.layers:
        layer.mlp.activation_sparsity = 0.0
    effects["activation_sparsity (off)"] = float((logits_of(model, ids) - base).abs().max())
    for layer, sp in zip(model.model.layers, saved_pattern):
        layer.mlp.activation_sparsity = sp
    assert torch.equal(logits_of(model, ids), base)
    return effects


def fp64_deviation(model, ids, ref_logits) -> float:
    """Max |float32 reference - float64 recomputation|: the numerical noise floor of the reference."""
    import torch

    m64 = copy.deepcopy(model).to(torch.float64)
    return float((logits_of(m64, ids).to(torch.float64) - ref_logits.to(torch.float64)).abs().max())


# ----------------------------------------------------------------------------------------------
# MatFormer slicing (as Google's MatFormer Lab slices E4B into E2B)
# ----------------------------------------------------------------------------------------------


SLICING_RULES = [
    "kept layers = all layers not in skip_layers, in order; kept layer i is renumbered to its index among kept layers",
    "mlp.gate_proj.weight / mlp.up_proj.weight [ffn, hidden]: keep the first ffn_dims[i] rows",
    "mlp.down_proj.weight [hidden, ffn]: keep the first ffn_dims[i] columns",
    "intermediate_size becomes the list of ffn_dims of the kept layers",
    "layer_types and activation_sparsity_pattern keep the kept layers' entries",
    "num_kv_shared_layers drops by one per skipped layer >= first shared layer (num_hidden_layers - num_kv_shared_layers)",
    "embed_tokens_per_layer.weight [vocab_pl, L*P]: keep the column blocks [i*P:(i+1)*P] of the kept layers, in order",
    "per_layer_model_projection.weight [L*P, hidden]: keep the row blocks [i*P:(i+1)*P] of the kept layers, in order",
    "everything else (embed_tokens, altup_(un)embed_projections, norm, per_layer_projection_norm) unchanged",
    "KV producers (last non-shared layer of each type) must not be skipped; checked via kv_sharing_modes",
    "activation sparsity statistics (mean/std over the FFN dim) are then taken over the kept ffn_dims[i] values only",
]


def slice_tier(full_cfg, sd: dict, ffn_dims: list[int], skip_layers: list[int]):
    import torch

    L = full_cfg.num_hidden_layers
    P = full_cfg.hidden_size_per_layer_input
    skip = set(skip_layers)
    kept = [i for i in range(L) if i not in skip]
    first_shared = L - full_cfg.num_kv_shared_layers
    full_modes = full_cfg.kv_sharing_modes
    producers = [i for i in range(L) if full_modes[i] == "store"]
    assert not (skip & set(producers)), f"cannot skip KV producers {producers}"
    for i in kept:
        assert 0 < ffn_dims[i] <= full_cfg.intermediate_size[i]

    new_shared = full_cfg.num_kv_shared_layers - sum(1 for i in skip if i >= first_shared)
    cfg = tiny_text_config(
        num_hidden_layers=len(kept),
        intermediate_size=[int(ffn_dims[i]) for i in kept],
        layer_types=[full_cfg.layer_types[i] for i in kept],
        activation_sparsity_pattern=[full_cfg.activation_sparsity_pattern[i] for i in kept],
        num_kv_shared_layers=new_shared,
    )

    # Every kept shared layer must read the KV of the same original producer as in the full model.
    def producer_of(c, layer):
        m = c.kv_sharing_modes
        fs = c.num_hidden_layers - c.num_kv_shared_layers
        if m[layer] != "reuse":
            return layer
        return max(j for j in range(fs) if c.layer_types[j] == c.layer_types[layer])

    for new_i, old_i in enumerate(kept):
        assert kept[producer_of(cfg, new_i)] == producer_of(full_cfg, old_i), (new_i, old_i)

    out = {}
    layer_re = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
    for name, t in sd.items():
        m = layer_re.match(name)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if i in skip:
                continue
            d = ffn_dims[i]
            if rest in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
                t = t[:d, :]
            elif rest == "mlp.down_proj.weight":
                t = t[:, :d]
            out[f"model.layers.{kept.index(i)}.{rest}"] = t.clone().contiguous()
        elif name == "model.embed_tokens_per_layer.weight":
            out[name] = torch.cat([t[:, i * P : (i + 1) * P] for i in kept], dim=1).contiguous()
        elif name == "model.per_layer_model_projection.weight":
            out[name] = torch.cat([t[i * P : (i + 1) * P, :] for i in kept], dim=0).contiguous()
        else:
            out[name] = t.clone()
    return cfg, out, kept


def build_sliced_model(cfg, sd):
    import torch
    from transformers import Gemma3nForCausalLM

    torch.manual_seed(SEED_TORCH)
    model = Gemma3nForCausalLM(cfg).to(torch.float32)
    expected = set(text_state_dict(model))
    missing = expected - set(sd)
    unexpected = set(sd) - expected
    assert not missing and not unexpected, (sorted(missing), sorted(unexpected))
    sd_full = dict(sd)
    sd_full["lm_head.weight"] = sd["model.embed_tokens.weight"]
    res = model.load_state_dict(sd_full, strict=True)
    assert not res.missing_keys and not res.unexpected_keys, res
    model.config._attn_implementation = "eager"
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# multimodal (released) layout
# ----------------------------------------------------------------------------------------------


def released_text_config_dict(cfg) -> dict:
    """text_config in the older released format: rope_theta / rope_local_base_freq, no rope_parameters."""
    return {
        "activation_sparsity_pattern": list(cfg.activation_sparsity_pattern),
        "altup_active_idx": cfg.altup_active_idx,
        "altup_coef_clip": cfg.altup_coef_clip,
        "altup_correct_scale": cfg.altup_correct_scale,
        "altup_lr_multiplier": 1.0,
        "altup_num_inputs": cfg.altup_num_inputs,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "final_logit_softcapping": cfg.final_logit_softcapping,
        "head_dim": cfg.head_dim,
        "hidden_activation": cfg.hidden_activation,
        "hidden_size": cfg.hidden_size,
        "hidden_size_per_layer_input": cfg.hidden_size_per_layer_input,
        "initializer_range": 0.02,
        "intermediate_size": list(cfg.intermediate_size),
        "laurel_rank": cfg.laurel_rank,
        "layer_types": list(cfg.layer_types),
        "max_position_embeddings": cfg.max_position_embeddings,
        "model_type": "gemma3n_text",
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_key_value_heads": cfg.num_key_value_heads,
        "num_kv_shared_layers": cfg.num_kv_shared_layers,
        "query_pre_attn_scalar": cfg.head_dim,  # present in releases (256 = head_dim); unused: scaling is 1.0
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_local_base_freq": ROPE_LOCAL,
        "rope_scaling": None,
        "rope_theta": ROPE_GLOBAL,
        "sliding_window": cfg.sliding_window,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": cfg.vocab_size,
        "vocab_size_per_layer_input": cfg.vocab_size_per_layer_input,
    }


def audio_config_dict() -> dict:
    return {
        "conf_attention_chunk_size": 12,
        "conf_attention_context_left": 13,
        "conf_attention_context_right": 0,
        "conf_attention_logit_cap": 50.0,
        "conf_conv_kernel_size": 5,
        "conf_num_attention_heads": 2,
        "conf_num_hidden_layers": 1,
        "conf_reduction_factor": 4,
        "conf_residual_weight": 0.5,
        "gradient_clipping": 10000000000.0,
        "hidden_size": TINY_AUDIO_HIDDEN,
        "input_feat_size": 16,
        "model_type": "gemma3n_audio",
        "rms_norm_eps": 1e-06,
        "sscp_conv_channel_size": [8, 4],
        "sscp_conv_group_norm_eps": 0.001,
        "sscp_conv_kernel_size": [[3, 3], [3, 3]],
        "sscp_conv_stride_size": [[2, 2], [2, 2]],
        "torch_dtype": "bfloat16",
        "vocab_offset": TINY_AUDIO_OFFSET,
        "vocab_size": TINY_AUDIO_VOCAB,
    }


def vision_config_dict() -> dict:
    return {
        "architecture": "mobilenetv5_300m_enc",
        "do_pooling": False,
        "hidden_size": TINY_VISION_HIDDEN,
        "initializer_range": 0.02,
        "label_names": ["LABEL_0", "LABEL_1"],
        "model_args": None,
        "model_type": "gemma3n_vision",
        "num_classes": 2,
        "rms_norm_eps": 1e-06,
        "torch_dtype": "bfloat16",
        "vocab_offset": TINY_VISION_OFFSET,
        "vocab_size": TINY_VISION_VOCAB,
    }


def multimodal_config_dict(cfg, transformers_version) -> dict:
    d = {
        "architectures": ["Gemma3nForConditionalGeneration"],
        "audio_config": audio_config_dict(),
        "audio_soft_tokens_per_image": 8,  # real 188
        "eos_token_id": list(EOS_IDS),
        "initializer_range": 0.02,
        "model_type": "gemma3n",
        "text_config": released_text_config_dict(cfg),
        "torch_dtype": "bfloat16",
        "transformers_version": transformers_version,
        "vision_config": vision_config_dict(),
        "vision_soft_tokens_per_image": 4,  # real 256
    }
    d.update(TINY_IDS)
    return d


def multimodal_generation_config(transformers_version) -> dict:
    # as released: sampling defaults top_k 64, top_p 0.95; EOS 1 and 106
    return {
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "do_sample": True,
        "eos_token_id": list(EOS_IDS),
        "pad_token_id": 0,
        "top_k": 64,
        "top_p": 0.95,
        "transformers_version": transformers_version,
    }


def multimodal_extra_modules():
    """Small real-shaped embed_vision / embed_audio / audio_tower modules (randomised, bf16-rounded)."""
    import torch
    from transformers import Gemma3nAudioConfig, Gemma3nVisionConfig
    from transformers.models.gemma3n.modeling_gemma3n import (
        Gemma3nAudioEncoder,
        Gemma3nMultimodalEmbedder,
    )

    text_cfg = tiny_text_config()
    acfg = Gemma3nAudioConfig(
        **{k: v for k, v in audio_config_dict().items() if k not in ("model_type", "torch_dtype")}
    )
    vkw = {
        k: v
        for k, v in vision_config_dict().items()
        if k not in ("model_type", "torch_dtype", "label_names", "num_classes")
    }
    vcfg = Gemma3nVisionConfig(num_labels=2, **vkw)
    torch.manual_seed(SEED_TORCH)
    embed_vision = Gemma3nMultimodalEmbedder(vcfg, text_cfg).float().eval()
    embed_audio = Gemma3nMultimodalEmbedder(acfg, text_cfg).float().eval()
    audio_tower = Gemma3nAudioEncoder(acfg).float().eval()

    rng = np.random.default_rng(SEED_MULTIMODAL)
    with torch.no_grad():
        for mod in (embed_vision, embed_audio):
            for name, p in mod.named_parameters():
                if name.endswith("norm.weight"):
                    v = rng.uniform(NORM_LO, NORM_HI, size=tuple(p.shape))
                elif name == "embedding.weight":
                    v = rng.normal(0.0, 1.0, size=tuple(p.shape))
                else:
                    v = rng.normal(0.0, 1.0 / math.sqrt(p.shape[1]), size=tuple(p.shape))
                p.copy_(torch.from_numpy(v.astype(np.float32)).to(torch.bfloat16).float())
        for name, p in audio_tower.named_parameters():  # dummies: only their names/shapes matter
            v = rng.normal(0.0, 0.1, size=tuple(p.shape))
            p.copy_(torch.from_numpy(v.astype(np.float32)).to(torch.bfloat16).float())
    tensors = {}
    for prefix, mod in (
        ("model.embed_vision.", embed_vision),
        ("model.embed_audio.", embed_audio),
        ("model.audio_tower.", audio_tower),
    ):
        for k, v in mod.state_dict().items():
            tensors[prefix + k] = v.detach().to(torch.bfloat16).contiguous()
    # A few vision-tower stand-ins (transformers needs timm for the real MobileNetV5; names follow
    # the released checkpoint's timm_model.* layout).
    for name, shape in (
        ("model.vision_tower.timm_model.conv_stem.conv.weight", (8, 3, 3, 3)),
        ("model.vision_tower.timm_model.conv_stem.bn.weight", (8,)),
        ("model.vision_tower.timm_model.msfa.norm.weight", (TINY_VISION_HIDDEN,)),
    ):
        tensors[name] = torch.from_numpy(rng.normal(0.0, 0.1, size=shape).astype(np.float32)).to(
            torch.bfloat16
        )
    return embed_vision, embed_audio, tensors


def unused_shared_kv_tensors(cfg) -> dict:
    """k_proj / v_proj / k_norm of the KV-shared layers: present in released checkpoints, never used."""
    import torch

    rng = np.random.default_rng(SEED_UNUSED)
    first_shared = cfg.num_hidden_layers - cfg.num_kv_shared_layers
    kv = cfg.num_key_value_heads * cfg.head_dim
    out = {}
    for i in range(first_shared, cfg.num_hidden_layers):
        p = f"model.language_model.layers.{i}.self_attn."
        out[p + "k_proj.weight"] = rng.normal(0.0, 1.0, size=(kv, cfg.hidden_size))
        out[p + "v_proj.weight"] = rng.normal(0.0, 1.0, size=(kv, cfg.hidden_size))
        out[p + "k_norm.weight"] = rng.uniform(NORM_LO, NORM_HI, size=(cfg.head_dim,))
    return {k: torch.from_numpy(v.astype(np.float32)).to(torch.bfloat16) for k, v in out.items()}


def write_multimodal(out_dir: Path, cfg, sd: dict, extra: dict, transformers_version: str) -> dict:
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in sd.items():
        assert k.startswith("model.")
        tensors["model.language_model." + k[len("model.") :]] = v.to(torch.bfloat16).contiguous()
    tensors.update(unused_shared_kv_tensors(cfg))
    tensors.update(extra)

    names = sorted(tensors)
    nbytes = {k: tensors[k].numel() * tensors[k].element_size() for k in names}
    total = sum(nbytes.values())
    # split the sorted names into two shards of roughly equal size
    shards = [[] for _ in range(MULTIMODAL_SHARDS)]
    acc = 0
    for k in names:
        idx = min(MULTIMODAL_SHARDS - 1, int(acc * MULTIMODAL_SHARDS // total))
        shards[idx].append(k)
        acc += nbytes[k]
    weight_map = {}
    for s, keys in enumerate(shards):
        fname = f"model-{s + 1:05d}-of-{MULTIMODAL_SHARDS:05d}.safetensors"
        save_file({k: tensors[k] for k in keys}, str(out_dir / fname), metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = fname
    dump_json(
        out_dir / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )
    dump_json(out_dir / "config.json", multimodal_config_dict(cfg, transformers_version))
    dump_json(
        out_dir / "generation_config.json", multimodal_generation_config(transformers_version)
    )
    return {"num_tensors": len(names), "total_size": total, "shard_sizes": [len(s) for s in shards]}


# ----------------------------------------------------------------------------------------------
# manifests of the real shapes
# ----------------------------------------------------------------------------------------------


def real_config(kind: str):
    from transformers import Gemma3nTextConfig

    if kind == "e4b":
        cfg = Gemma3nTextConfig()
    elif kind == "e2b":
        cfg = Gemma3nTextConfig(
            num_hidden_layers=30,
            intermediate_size=[8192] * 30,
            num_kv_shared_layers=10,
            activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20,
        )
    else:
        raise ValueError(kind)
    cfg.architectures = ["Gemma3nForCausalLM"]
    return cfg


def build_manifest(kind: str, transformers_version: str) -> dict:
    import torch
    from transformers import Gemma3nForCausalLM

    cfg = real_config(kind)
    with torch.device("meta"):
        model = Gemma3nForCausalLM(cfg)
    with tempfile.TemporaryDirectory() as td:
        model.config.save_pretrained(td)
        config_json = json.loads((Path(td) / "config.json").read_text())
    sd = model.state_dict()
    tensors = {k: list(v.shape) for k, v in sd.items() if k != "lm_head.weight"}
    n_params = sum(math.prod(s) for s in tensors.values())
    n_ple = math.prod(tensors["model.embed_tokens_per_layer.weight"])
    n_embed = math.prod(tensors["model.embed_tokens.weight"])
    L = cfg.num_hidden_layers
    first_shared = L - cfg.num_kv_shared_layers
    kv = cfg.num_key_value_heads * cfg.head_dim
    unused = {}
    for i in range(first_shared, L):
        p = f"model.language_model.layers.{i}.self_attn."
        unused[p + "k_proj.weight"] = [kv, cfg.hidden_size]
        unused[p + "v_proj.weight"] = [kv, cfg.hidden_size]
        unused[p + "k_norm.weight"] = [cfg.head_dim]
    n_unused = sum(math.prod(s) for s in unused.values())
    modes = cfg.kv_sharing_modes
    return {
        "transformers": transformers_version,
        "config": config_json,
        "tensors": tensors,
        "num_parameters": n_params,
        "num_per_layer_embedding_parameters": n_ple,
        "num_embed_tokens_parameters": n_embed,
        "num_parameters_excluding_per_layer_embeddings": n_params - n_ple,
        "num_parameters_excluding_all_embeddings": n_params - n_ple - n_embed,
        "released_unused_shared_kv_tensors": unused,
        "num_released_unused_shared_kv_parameters": n_unused,
        "kv_sharing": {
            "first_shared_layer": first_shared,
            "producers": {cfg.layer_types[i]: i for i in range(L) if modes[i] == "store"},
        },
        "notes": (
            f"Gemma 3n {kind.upper()} text decoder, built by Gemma3nForCausalLM on the meta device in transformers "
            f"{transformers_version}. 'config' is what model.save_pretrained writes to config.json (model_type "
            "gemma3n_text, rope_parameters format). 'tensors' are the state-dict names and shapes that "
            "save_pretrained writes (keys model.*; lm_head.weight is tied to model.embed_tokens.weight and left out; "
            "the KV-shared layers have no k_proj/v_proj/k_norm). Released multimodal checkpoints "
            "(model_type gemma3n) name these tensors model.language_model.* instead of model.*, store them in "
            "bfloat16, and also carry the unused k_proj/v_proj/k_norm of the KV-shared layers, listed under "
            "'released_unused_shared_kv_tensors' (not counted in num_parameters). num_parameters counts the text "
            "decoder only (no audio/vision towers or embedders). Token ids in 'config' are transformers' defaults "
            "(eos 1); released checkpoints stop on eos [1, 106] (top-level config / generation_config.json)."
        ),
    }


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def make_ids():
    rng = np.random.default_rng(SEED_IDS)
    ids = rng.integers(3, TINY_TEXT_VOCAB, size=T)
    ids[ids == 106] = 107
    ids[0] = 2  # <bos>
    # multimodal-range ids: per-layer lookup uses id 0 for them
    ids[5] = TINY_IDS["eoi_token_id"]  # vision range
    ids[13] = TINY_VISION_OFFSET + int(rng.integers(2, TINY_VISION_VOCAB))  # vision range
    ids[19] = TINY_AUDIO_OFFSET + int(rng.integers(2, TINY_AUDIO_VOCAB))  # audio range
    prompt = rng.integers(3, TINY_TEXT_VOCAB, size=PROMPT_LEN)
    prompt[prompt == 106] = 107
    prompt[0] = 2
    return ids.astype(np.int64), prompt.astype(np.int64)


def mm_embed_logits(model, embed_vision, embed_audio, ids):
    """Logits Gemma3nForConditionalGeneration gives for text-only input_ids (Gemma3nModel.forward logic):
    ids in [vision_offset, audio_offset) are embedded by embed_vision, ids >= audio_offset by embed_audio
    (hard embeddings, no sqrt(hidden) scale); per-layer inputs still come from the ids (>= 384 -> id 0)."""
    import torch

    inner = model.model
    with torch.no_grad():
        emb = inner.embed_tokens(ids)
        pli = inner.get_per_layer_inputs(ids)
        vmask = (ids >= embed_vision.vocab_offset) & (ids < embed_audio.vocab_offset)
        vdummy = embed_vision.vocab_offset + embed_vision.vocab_size - 1
        vemb = embed_vision(input_ids=torch.where(vmask, ids, vdummy))
        emb = torch.where(vmask.unsqueeze(-1), vemb, emb)
        amask = ids >= embed_audio.vocab_offset
        adummy = embed_audio.vocab_offset + embed_audio.vocab_size - 1
        aemb = embed_audio(input_ids=torch.where(amask, ids, adummy))
        emb = torch.where(amask.unsqueeze(-1), aemb, emb)
        hs = inner(inputs_embeds=emb, per_layer_inputs=pli, use_cache=False).last_hidden_state
        logits = softcap(model.lm_head(hs), model.config.final_logit_softcapping)
    return logits[0], emb[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", default=None, help="fixtures directory (default: <repo>/tests/fixtures)"
    )
    ap.add_argument(
        "--allow-other-versions",
        action="store_true",
        help="run with torch/transformers other than pinned",
    )
    args = ap.parse_args(argv)

    versions = check_versions(args.allow_other_versions)

    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import Gemma3nConfig, Gemma3nForCausalLM

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)  # fixed reduction order for reproducible float32 results
    torch.use_deterministic_algorithms(True)

    repo = Path(__file__).resolve().parent.parent
    out = Path(args.out) if args.out else repo / "tests" / "fixtures"
    tiny_dir = out / "gemma3n_tiny"
    text_dir = tiny_dir / "text"
    mm_dir = tiny_dir / "multimodal"
    man_dir = out / "manifests"
    for d in (text_dir, mm_dir):
        if d.exists():
            shutil.rmtree(d)
    for d in (text_dir, mm_dir, man_dir):
        d.mkdir(parents=True, exist_ok=True)

    # ---- tiny model -------------------------------------------------------------------------
    model, rules = build_tiny_model()
    cfg = model.config
    mirror = check_mirrors_e4b(cfg)
    sd = text_state_dict(model)
    n_params = sum(v.numel() for v in sd.values())
    log(f"tiny model: {n_params} parameters, kv_sharing_modes {cfg.kv_sharing_modes}")

    input_ids, prompt_ids = make_ids()
    ids_t = torch.from_numpy(input_ids)[None]
    logits, dbg = forward_with_debug(model, ids_t)
    stats = {
        "logits": logit_stats(
            logits.numpy(), dbg["raw_logits"].numpy(), cfg.final_logit_softcapping
        )
    }

    # activation sparsity statistics (gate after _gaussian_topk, layers with sparsity > 0)
    spars = {}
    for i, g in sorted(dbg["gate"].items()):
        if cfg.activation_sparsity_pattern[i] > 0:
            spars[str(i)] = float((g == 0).float().mean())
    stats["activation_sparsity_zero_fraction_of_gate"] = spars
    stats["dense_layer_gate_zero_fraction_layer5"] = float((dbg["gate"][5] == 0).float().mean())
    # altup router modalities (tanh) magnitude, layer 0
    with torch.no_grad():
        mods = model.model.layers[0].altup.compute_router_modalities(dbg["layer_io"][0][0][None])
    stats["altup_router_modalities_layer0_abs_mean"] = float(mods.abs().mean())
    stats["layer_io_rms_per_layer"] = [float(x.pow(2).mean().sqrt()) for x in dbg["layer_io"]]
    log("logit stats:", json.dumps(stats["logits"]))
    log("activation sparsity zero fraction:", spars)
    log("router |tanh| mean layer 0:", stats["altup_router_modalities_layer0_abs_mean"])
    assert stats["logits"]["abs_max"] < 29.0 and stats["logits"]["frac_abs_gt_25"] < 0.01, (
        "logits saturated"
    )
    assert stats["logits"]["softcap_max_abs_change"] > 0.1, "softcap has no effect"
    assert all(0.5 < f < 0.999 for f in spars.values()), spars
    stats["ablation_max_abs_logit_change"] = ablation_effects(model, ids_t)
    log("ablations:", json.dumps(stats["ablation_max_abs_logit_change"]))
    assert min(stats["ablation_max_abs_logit_change"].values()) > 0.1, "some term does not matter"
    stats["fp64_vs_fp32_max_abs_logit_diff"] = {"logits": fp64_deviation(model, ids_t, logits)}

    # ---- text/ (save_pretrained) ------------------------------------------------------------
    model.save_pretrained(str(text_dir))
    for p in text_dir.iterdir():
        if p.name not in ("config.json", "model.safetensors", "generation_config.json"):
            p.unlink() if p.is_file() else shutil.rmtree(p)
    saved = load_file(str(text_dir / "model.safetensors"))
    assert set(saved) == set(sd), sorted(set(saved) ^ set(sd))
    for k in sd:
        assert saved[k].dtype == torch.float32 and torch.equal(saved[k], sd[k]), k
    first_shared = cfg.num_hidden_layers - cfg.num_kv_shared_layers
    assert not any(
        re.match(r"model\.layers\.(\d+)\.self_attn\.(k_proj|v_proj|k_norm)", k)
        and int(k.split(".")[2]) >= first_shared
        for k in saved
    )

    # ---- tiers ------------------------------------------------------------------------------
    tier_arrays = {}
    tier_meta = {}
    for name, tier in TIERS.items():
        tcfg, tsd, kept = slice_tier(cfg, sd, tier["ffn_dims"], tier["skip_layers"])
        tmodel = build_sliced_model(tcfg, tsd)
        # cross-check the slice against the full model: per-layer inputs are the kept layers' blocks,
        # each kept layer keeps its attention type and the FFN prefix
        with torch.no_grad():
            emb = model.model.embed_tokens(ids_t)
            full_pli = model.model.project_per_layer_inputs(
                emb, model.model.get_per_layer_inputs(ids_t)
            )
            t_pli = tmodel.model.project_per_layer_inputs(
                emb, tmodel.model.get_per_layer_inputs(ids_t)
            )
        assert torch.equal(t_pli, full_pli[:, :, kept]), "per-layer input slicing"
        for j, i in enumerate(kept):
            a, b = tmodel.model.layers[j], model.model.layers[i]
            assert a.self_attn.layer_type == b.self_attn.layer_type
            assert a.self_attn.is_kv_shared_layer == b.self_attn.is_kv_shared_layer
            assert a.mlp.activation_sparsity == b.mlp.activation_sparsity
            d = tier["ffn_dims"][i]
            assert torch.equal(a.mlp.down_proj.weight, b.mlp.down_proj.weight[:, :d])
        tlog = logits_of(tmodel, ids_t)
        tier_arrays[f"tier_{name}_ffn_dims"] = np.array(tier["ffn_dims"], dtype=np.int64)
        tier_arrays[f"tier_{name}_skip_layers"] = np.array(tier["skip_layers"], dtype=np.int64)
        tier_arrays[f"tier_{name}_logits"] = tlog.numpy().astype(np.float32)
        modes = tcfg.kv_sharing_modes
        tier_meta[name] = {
            "ffn_dims": tier["ffn_dims"],
            "skip_layers": tier["skip_layers"],
            "kept_original_layers": kept,
            "sliced_config": {
                "num_hidden_layers": tcfg.num_hidden_layers,
                "intermediate_size": list(tcfg.intermediate_size),
                "num_kv_shared_layers": tcfg.num_kv_shared_layers,
                "layer_types": list(tcfg.layer_types),
                "activation_sparsity_pattern": list(tcfg.activation_sparsity_pattern),
                "kv_sharing_modes": list(modes),
            },
            "num_parameters": int(sum(v.numel() for v in tsd.values())),
            "logit_stats": logit_stats(tlog.numpy()),
            "max_abs_diff_vs_full_logits": float((tlog - logits).abs().max()),
            "fp64_vs_fp32_max_abs_logit_diff": fp64_deviation(tmodel, ids_t, tlog),
        }
        log(
            f"tier {name}: layers {tcfg.num_hidden_layers}, shared {tcfg.num_kv_shared_layers}, modes {modes}"
        )
        log(f"  max |tier - full| logits = {tier_meta[name]['max_abs_diff_vs_full_logits']:.3f}")

    # ---- greedy generation (KV-cache path) --------------------------------------------------
    prompt_t = torch.from_numpy(prompt_ids)[None]
    with torch.no_grad():
        gen = model.generate(
            prompt_t,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=list(EOS_IDS),
            pad_token_id=0,
            top_k=None,
            top_p=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    greedy = gen.sequences[0, PROMPT_LEN:].numpy().astype(np.int64)
    step_logits = torch.stack([x[0] for x in gen.logits]).float()
    # generate's output_logits are the model's forward logits (already softcapped), before any processor
    hit_eos = bool(len(greedy) and int(greedy[-1]) in EOS_IDS)
    # consistency: the no-cache forward over prompt + generated reproduces the greedy choices
    full_seq = torch.from_numpy(np.concatenate([prompt_ids, greedy]))[None]
    full_logits = logits_of(model, full_seq)
    nocache_steps = full_logits[PROMPT_LEN - 1 : PROMPT_LEN - 1 + len(greedy)]
    cache_vs_nocache = float((nocache_steps - step_logits).abs().max())
    assert torch.equal(nocache_steps.argmax(-1), torch.from_numpy(greedy)), (
        "cache/no-cache greedy mismatch"
    )
    log(
        f"greedy ids {greedy.tolist()} (hit EOS: {hit_eos}); max |cached - uncached| step logits {cache_vs_nocache:.2e}"
    )
    assert PROMPT_LEN + len(greedy) > 2 * cfg.sliding_window

    # ---- multimodal/ (released layout) ------------------------------------------------------
    embed_vision, embed_audio, extra = multimodal_extra_modules()
    mm_info = write_multimodal(mm_dir, cfg, sd, extra, transformers.__version__)
    mm_logits, mm_emb = mm_embed_logits(model, embed_vision, embed_audio, ids_t)

    # ---- reference.npz ----------------------------------------------------------------------
    ref = {
        "input_ids": input_ids,
        "logits": logits.numpy().astype(np.float32),
        "prompt_ids": prompt_ids,
        "greedy_ids": greedy,
        "greedy_step_logits": step_logits.numpy().astype(np.float32),
        "mm_logits": mm_logits.numpy().astype(np.float32),
        "mm_inputs_embeds": mm_emb.numpy().astype(np.float32),
        "debug_inputs_embeds": dbg["inputs_embeds"].numpy().astype(np.float32),
        "debug_per_layer_inputs": dbg["per_layer_inputs"].numpy().astype(np.float32),
        "debug_layer_io": dbg["layer_io"].numpy().astype(np.float32),
        "debug_final_hidden": dbg["final_hidden"].numpy().astype(np.float32),
        "debug_logits_before_softcap": dbg["raw_logits"].numpy().astype(np.float32),
    }
    ref.update(tier_arrays)
    write_npz(tiny_dir / "reference.npz", ref)

    # ---- manifests --------------------------------------------------------------------------
    manifest_summary = {}
    for kind in ("e2b", "e4b"):
        man = build_manifest(kind, transformers.__version__)
        dump_json(man_dir / f"gemma3n_{kind}.json", man)
        manifest_summary[kind] = {
            k: man[k]
            for k in (
                "num_parameters",
                "num_per_layer_embedding_parameters",
                "num_embed_tokens_parameters",
                "num_parameters_excluding_per_layer_embeddings",
                "num_parameters_excluding_all_embeddings",
                "num_released_unused_shared_kv_parameters",
            )
        }
        log(f"manifest {kind}: {manifest_summary[kind]}")

    # ---- verification -----------------------------------------------------------------------
    verify = {}
    # (a) text/ reloads through from_pretrained and reproduces the logits exactly
    torch.manual_seed(SEED_TORCH)
    reloaded = Gemma3nForCausalLM.from_pretrained(
        str(text_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    rl = logits_of(reloaded, ids_t)
    assert torch.equal(rl, torch.from_numpy(ref["logits"])), float((rl - logits).abs().max())
    verify["text_from_pretrained_logits_equal"] = True
    # (b) bf16 shards decode to the fp32 values
    mm_tensors = {}
    index = json.loads((mm_dir / "model.safetensors.index.json").read_text())
    for fname in sorted(set(index["weight_map"].values())):
        mm_tensors.update(load_file(str(mm_dir / fname)))
    assert set(mm_tensors) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in mm_tensors.values()
    )
    for k, v in saved.items():
        mk = "model.language_model." + k[len("model.") :]
        assert mm_tensors[mk].dtype == torch.bfloat16 and torch.equal(mm_tensors[mk].float(), v), k
    assert "lm_head.weight" not in mm_tensors and not any(
        k.startswith("lm_head") for k in mm_tensors
    )
    verify["bf16_shards_equal_fp32"] = True
    # (c) the released-format config parses to the same text config, and transformers loads the
    #     multimodal checkpoint into Gemma3nForCausalLM with the same logits
    mm_cfg = Gemma3nConfig.from_pretrained(str(mm_dir))
    tc = mm_cfg.text_config
    assert tc.rope_parameters["full_attention"]["rope_theta"] == ROPE_GLOBAL
    assert tc.rope_parameters["sliding_attention"]["rope_theta"] == ROPE_LOCAL
    for key in TINY:
        if key in ("pad_token_id", "eos_token_id", "bos_token_id"):
            continue
        a, b = getattr(tc, key), getattr(cfg, key)
        assert (list(a) if isinstance(a, (list, tuple)) else a) == (
            list(b) if isinstance(b, (list, tuple)) else b
        ), key
    assert list(tc.layer_types) == list(cfg.layer_types)
    try:
        mm_model = Gemma3nForCausalLM.from_pretrained(
            str(mm_dir), config=tc, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        ml = logits_of(mm_model, ids_t)
        verify["multimodal_via_transformers_causal_lm_logits_equal"] = bool(torch.equal(ml, logits))
        assert verify["multimodal_via_transformers_causal_lm_logits_equal"], float(
            (ml - logits).abs().max()
        )
    except AssertionError:
        raise
    except Exception as e:  # pragma: no cover - depends on transformers' key mapping
        verify["multimodal_via_transformers_causal_lm_logits_equal"] = (
            f"not checked: {type(e).__name__}: {e}"
        )
    # (d) unused shared-layer k/v really do not matter (transformers ignores them; checked by (c))
    log("verification:", verify)

    # ---- meta.json --------------------------------------------------------------------------
    text_cfg_json = json.loads((text_dir / "config.json").read_text())
    meta = {
        "generator": "scripts/make_parity_fixtures.py",
        "regenerate": "python scripts/make_parity_fixtures.py  (with the venv from its docstring / scripts/fixture-venv)",
        "versions": versions,
        "seeds": {
            "torch_manual_seed": SEED_TORCH,
            "weights_numpy_pcg64": SEED_WEIGHTS,
            "unused_shared_kv_numpy_pcg64": SEED_UNUSED,
            "multimodal_extras_numpy_pcg64": SEED_MULTIMODAL,
            "ids_numpy_pcg64": SEED_IDS,
        },
        "torch_settings": {
            "num_threads": 1,
            "deterministic_algorithms": True,
            "dtype": "float32",
            "attn_implementation": "eager",
            "mode": "model.eval(), torch.no_grad()",
        },
        "tiny_model": {
            "text_config": text_cfg_json,
            "num_parameters": n_params,
            "kv_sharing_modes": list(cfg.kv_sharing_modes),
            "mirrors_e4b": mirror,
            "multimodal_ids": dict(
                TINY_IDS,
                vision_vocab_offset=TINY_VISION_OFFSET,
                audio_vocab_offset=TINY_AUDIO_OFFSET,
                vision_vocab_size=TINY_VISION_VOCAB,
                audio_vocab_size=TINY_AUDIO_VOCAB,
            ),
            "weights": {
                "randomisation": "every parameter overwritten from numpy PCG64 (seed weights_numpy_pcg64) in "
                "model.named_parameters() order, then rounded to bfloat16 (round-to-nearest-even) and stored as "
                "float32, so text/ (fp32) and multimodal/ (bf16) hold identical values",
                "rules": {
                    "RMSNorm weights (all with_scale norms), altup.correct_output_scale": f"uniform[{NORM_LO},{NORM_HI}]",
                    "model.embed_tokens.weight (tied lm_head)": f"normal std {EMBED_STD}",
                    "model.embed_tokens_per_layer.weight": "normal std 1/sqrt(hidden_size_per_layer_input)",
                    "altup.modality_router.weight": f"normal std {ROUTER_STD} (router input is RMSNorm(x)/hidden_size)",
                    "altup.prediction_coefs.weight, altup.correction_coefs.weight": f"normal std {COEF_STD}",
                    "every other Linear weight": "normal std 1/sqrt(fan_in)",
                },
            },
            "statistics": stats,
        },
        "files": {
            "gemma3n_tiny/text/config.json": "Gemma3nTextConfig as transformers saves it (model_type gemma3n_text, rope_parameters format)",
            "gemma3n_tiny/text/generation_config.json": "as transformers saves it (bos 2, eos [1, 106], pad 0)",
            "gemma3n_tiny/text/model.safetensors": "model.save_pretrained of Gemma3nForCausalLM, float32, keys model.*; "
            "no lm_head (tied); no k_proj/v_proj/k_norm for KV-shared layers 10..19",
            "gemma3n_tiny/multimodal/config.json": "released layout: model_type gemma3n, Gemma3nForConditionalGeneration, "
            "text_config in the older released rope format (rope_theta, rope_local_base_freq, rope_scaling null; no "
            "rope_parameters), plus unused released fields (altup_lr_multiplier, query_pre_attn_scalar), torch_dtype; "
            "small audio_config/vision_config; special ids scaled into the tiny vocab. Field set written from memory of "
            "the released google/gemma-3n-E*B(-it) config.json, not copied from it",
            "gemma3n_tiny/multimodal/generation_config.json": "like the released one: do_sample, top_k 64, top_p 0.95, eos [1, 106]",
            "gemma3n_tiny/multimodal/model.safetensors.index.json": "{metadata: {total_size: bytes}, weight_map: {name: shard}}",
            "gemma3n_tiny/multimodal/model-0000{1,2}-of-00002.safetensors": "bfloat16, the same text weights under "
            "model.language_model.*, no lm_head (tied), PLUS unused random k_proj/v_proj/k_norm for KV-shared layers "
            "10..19 (must not matter), PLUS model.embed_vision.*, model.embed_audio.* (real-shaped embedders for the "
            "tiny audio/vision configs, used by mm_logits), model.audio_tower.* (a 1-block tiny audio encoder, random), "
            "model.vision_tower.timm_model.* (3 stand-in tensors). A text engine ignores the last two groups.",
            "gemma3n_tiny/reference.npz": "reference arrays (below), float32 / int64, zip without timestamps",
            "manifests/gemma3n_e2b.json, manifests/gemma3n_e4b.json": "real-size text configs, tensor names and shapes",
        },
        "reference_arrays": {
            "input_ids": f"int64 [{T}] : bos, random text ids, and ids 5, 13 in the vision range [384,448), 19 in the "
            "audio range [448,512); per-layer lookup uses id 0 for ids >= vocab_size_per_layer_input (384)",
            "logits": f"float32 [{T}, 512] : Gemma3nForCausalLM(input_ids) in one forward pass, no cache (softcapped)",
            "tier_e2b_ffn_dims": "int64 [20] : FFN width per ORIGINAL layer (all 64)",
            "tier_e2b_skip_layers": "int64 [5] : 10..14",
            "tier_e2b_logits": f"float32 [{T}, 512] : logits of the separately sliced model (15 layers, 5 shared)",
            "tier_mixed_ffn_dims": "int64 [20] : 64 except layer 3 at 128 (like E1.96B)",
            "tier_mixed_skip_layers": "int64 [5] : 10..14",
            "tier_mixed_logits": f"float32 [{T}, 512]",
            "prompt_ids": f"int64 [{PROMPT_LEN}] : bos + random text ids",
            "greedy_ids": "int64 [n<=20] : model.generate(prompt, do_sample=False, max_new_tokens=20, "
            "eos_token_id=[1,106]) new tokens only (KV-cache path, DynamicCache with sliding layers)",
            "greedy_step_logits": "float32 [n, 512] : the logits generate scored at each step (cached decode); "
            "argmax = greedy_ids",
            "mm_logits": f"float32 [{T}, 512] : what Gemma3nForConditionalGeneration gives for the same input_ids: ids "
            "in [384,448) embedded by model.embed_vision, ids >= 448 by model.embed_audio (hard embeddings: "
            "embedding -> RMSNorm(hard_embedding_norm) -> embedding_projection -> RMSNorm without scale; no "
            "sqrt(hidden) factor), other ids by embed_tokens; per-layer inputs from the ids as usual. Differs from "
            "'logits' (the text-only Gemma3nForCausalLM path) at and after those positions",
            "mm_inputs_embeds": f"float32 [{T}, 32] : the merged input embeddings of that path",
            "debug_inputs_embeds": f"float32 [{T}, 32] : embed_tokens(input_ids) * sqrt(32) (text path)",
            "debug_per_layer_inputs": f"float32 [{T}, 20, 8] : (RMSNorm(per_layer_model_projection(emb)/sqrt(32)) + "
            "embed_tokens_per_layer(ids')*sqrt(8)) / sqrt(2), per layer",
            "debug_layer_io": f"float32 [21, 4, {T}, 32] : the 4 AltUp streams entering layer 0 (index 0) and leaving "
            "layer i (index i+1)",
            "debug_final_hidden": f"float32 [{T}, 32] : after the final unembed/average and model.norm",
            "debug_logits_before_softcap": f"float32 [{T}, 512] : final_hidden @ embed_tokens.T, before 30*tanh(z/30)",
        },
        "greedy": {
            "num_new_tokens": len(greedy),
            "hit_eos": hit_eos,
            "total_length": int(PROMPT_LEN + len(greedy)),
            "crosses_sliding_window": True,
            "max_abs_diff_cached_vs_uncached_step_logits": cache_vs_nocache,
        },
        "tiers": tier_meta,
        "slicing_rules": SLICING_RULES,
        "multimodal_layout": mm_info,
        "manifests": manifest_summary,
        "verification": verify,
    }
    dump_json(tiny_dir / "meta.json", meta)

    (out / "README.md").write_text(README)
    sizes = file_tree_sizes(out)
    total = sum(sizes.values())
    for k, v in sizes.items():
        log(f"{v:>10}  {k}")
    log(f"{total:>10}  total")
    assert total < 4 * 1024 * 1024, "fixtures exceed 4 MiB"
    return 0


README = """\
# Test fixtures

Generated by `scripts/make_parity_fixtures.py` from Hugging Face transformers (the reference
implementation of Gemma 3n). Do not edit by hand. To regenerate (pinned torch 2.13.0,
transformers 5.24.0; the script refuses other versions unless `--allow-other-versions`):

    python3.11 -m venv /tmp/x && /tmp/x/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy
    /tmp/x/bin/python scripts/make_parity_fixtures.py

(`scripts/fixture-venv [DIR]` makes the venv.) Seeds are fixed; a second run on the same machine
writes identical bytes. The package never imports torch or transformers; only that script does.

## `gemma3n_tiny/` — a tiny Gemma 3n text decoder, "E4B scaled down"

vocab 512 (384 text + 64 "vision" + 64 "audio" ids), hidden 32, 20 layers, FFN 128 per layer,
4 heads / 2 KV heads, head_dim 8, sliding window 8 (full attention at layers 4, 9, 14, 19),
per-layer inputs 8 wide, 10 KV-shared layers (first shared layer 10, KV producers 8 sliding
and 9 full), LAuReL rank 4, AltUp 4 streams, activation sparsity 0.95 on layers 0-4, final
logit softcap 30, rope theta 1e6 global / 1e4 local. Every weight is random (fixed seed) and
far from its initial value, then rounded to bfloat16-representable values.

- `text/` — `Gemma3nForCausalLM.save_pretrained()`: `config.json` (model_type `gemma3n_text`,
  `rope_parameters`), `generation_config.json`, one float32 `model.safetensors` with keys
  `model.*`, no `lm_head` (tied to `embed_tokens`), no `k_proj`/`v_proj`/`k_norm` for the
  KV-shared layers.
- `multimodal/` — the layout Google releases: `config.json` (model_type `gemma3n`,
  `text_config` in the older rope format `rope_theta` / `rope_local_base_freq`, small
  `audio_config` / `vision_config`), `generation_config.json`, bfloat16 tensors sharded into
  `model-00001-of-00002.safetensors` and `model-00002-of-00002.safetensors` with
  `model.safetensors.index.json`. Text weights are under `model.language_model.*` and equal
  the float32 ones exactly. Also present, as in released checkpoints: unused random
  `k_proj`/`v_proj`/`k_norm` for the KV-shared layers (they must not matter), and
  `model.embed_vision.*`, `model.embed_audio.*`, `model.audio_tower.*`,
  `model.vision_tower.*` tensors that a text engine ignores.
- `reference.npz` — float32 / int64 arrays computed with transformers in float32
  (eager attention, eval, no grad): `input_ids` [24] and `logits` [24, 512] (one
  forward, no cache); `tier_e2b_*` and `tier_mixed_*` (`ffn_dims` [20], `skip_layers` [5],
  `logits` [24, 512]) from MatFormer slices built as separate models; `prompt_ids` [10],
  `greedy_ids` and `greedy_step_logits` from greedy `generate` (KV cache); `mm_logits` for
  the multimodal embedding path; `debug_*` intermediates (embeddings, per-layer inputs,
  AltUp streams around every layer, final hidden state, logits before the softcap).
- `meta.json` — versions, seeds, randomisation rules, a description of every file and
  array, the slicing rules, statistics (logit magnitudes, activation sparsity), and the
  verification results.

## `manifests/` — the real shapes

`gemma3n_e2b.json`, `gemma3n_e4b.json`: the real E2B / E4B text configs (as `config.json`
would hold them), every state-dict tensor name and shape of `Gemma3nForCausalLM` (built on
the meta device, no weights), parameter counts, and the unused KV-shared tensors that
released checkpoints also carry.
"""


if __name__ == "__main__":
    sys.exit(main())
