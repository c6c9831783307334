#!/usr/bin/env python3
# ruff: noqa: PLC0415  (torch/timm/transformers/PIL are imported lazily)
"""Generate the vision parity fixtures under ``tests/fixtures/vision/`` from timm + transformers.

timm's ``MobileNetV5Encoder`` (the ``mobilenetv5_300m_enc`` tower) and transformers'
``Gemma3nModel.get_image_features`` (× √hidden, ``Gemma3nMultimodalEmbedder``) are the
reference. Like the other ``make_*_fixtures.py`` scripts this is the only kind of place that
imports torch, timm, transformers or PIL; run it with the vision oracle venv
(``scripts/fixture-venv``, second venv ``DIR-vision``)::

    /tmp/edgeagent-fixture-venv-vision/bin/python scripts/make_vision_fixtures.py

Pinned: torch 2.14.1, torchvision 0.29.1, timm 1.0.31, transformers 5.24.0 (timm needs a
torchvision whose compiled ops match torch; the only local pair is 2.14.1 / 0.29.1 — the text
and audio oracle keeps torch 2.13.0). Other versions are refused unless
``--allow-other-versions``. It writes:

* ``gemma3n_vision_reduced/``  a multimodal-layout checkpoint (bf16, one file): a reduced
  MobileNetV5 with every block type (stem; EdgeResidual; UIR with start/mid depthwise convs,
  strided and not; MobileAttention with kv stride 2 and without; MSFA over the last two
  stages, 2×/3× average pooling at 512/768 px) registered in timm as
  ``edgeagent_mnv5_reduced``, ``embed_vision`` into a 16-wide text space, the 2-layer random
  text decoder of the audio fixtures so the checkpoint loads, ``preprocessor_config.json``
  (the released image settings at 256 px).
* ``reference.npz``  input pixels and outputs (names in ``meta.json``), plus Pillow resize
  references for the numpy resize.
* ``meta.json``  versions, structure, seeds, statistics, what each array is.
* ``manifest_released_vision.json``  names and shapes of the released tower (timm
  ``mobilenetv5_300m_enc``, meta device) and of ``embed_vision`` for text hidden 2048 / 2560.

Seeds are fixed and weights are rounded to bfloat16, so the stored weights are exact.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np
from fixture_common import TEXT, log, write_npz

REQUIRED = {"torch": "2.14.1", "timm": "1.0.31", "transformers": "5.24.0"}
SEED = 20251128
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "vision"
NAME = "gemma3n_vision_reduced"
TIMM_NAME = "edgeagent_mnv5_reduced"
HIDDEN = 64  # MSFA output width (2048 released)
VISION_VOCAB, VISION_OFFSET = 16, 128
SIZES = (256, 512, 768)
STRUCTURE = {
    "stem_size": 8,
    "arch_def": [
        ["er_r1_k3_s2_e4_c16", "er_r1_k3_s1_e4_c16"],
        ["uir_r1_a3_k5_s2_e4_c24", "uir_r1_a5_k0_s1_e2_c24"],
        [
            "uir_r1_a5_k5_s2_e4_c32",
            "uir_r1_a0_k0_s1_e1_c32",
            "mqa_r1_k3_h4_v2_s1_d8_c32",
            "uir_r1_a0_k0_s1_e2_c32",
        ],
        ["uir_r1_a5_k5_s2_e4_c48", "mqa_r1_k3_h4_s1_d12_c48", "uir_r1_a0_k0_s1_e2_c48"],
    ],
    "msfa_indices": [-2, -1],
    "msfa_output_resolution": 16,
    "msfa_expansion_ratio": 2.0,
}
QK_GAIN = 2.0  # query/key projections at 2/sqrt(fan_in): attention is far from uniform
PREPROCESSOR = {
    "do_convert_rgb": True,
    "do_normalize": False,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessorFast",
    "resample": 2,
    "rescale_factor": 1 / 255,
    "size": {"height": 256, "width": 256},
}


def check_versions(allow_other: bool) -> dict[str, str]:
    import PIL
    import timm
    import torch
    import transformers

    versions = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    bad = [k for k, want in REQUIRED.items() if versions[k].split("+")[0] != want]
    if bad and not allow_other:
        sys.exit(f"unexpected versions {bad}: {versions}; pass --allow-other-versions")
    return versions


# -- images ------------------------------------------------------------------------------------


def scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic RGB scene ``[size, size, 3]`` uint8: gradients, shapes, stripes, a noisy
    patch (edges and texture at every scale, yet it compresses well)."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * np.sin(6 * x * y)], axis=-1)
    img = np.floor(img * 16) / 16  # banded gradients: hard edges everywhere, compressible
    for _ in range(6):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        color = rng.uniform(0, 1, 3)
        if rng.uniform() < 0.5:
            img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = color
        else:
            img[(abs(x - cx) < r) & (abs(y - cy) < r / 2)] = color
    stripes = (np.sin(2 * np.pi * 24 * (x + 0.5 * y)) > 0) & (x > 0.6) & (y > 0.7)
    img[stripes] = 1.0 - img[stripes]
    img[8:40, 8:40] += rng.normal(0, 0.15, (32, 32, 3))  # fixed size: noise is incompressible
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def pil_resize(img: np.ndarray, h: int, w: int, resample: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), resample=resample))


# -- the reduced tower, registered in timm ----------------------------------------------------


def register_reduced() -> None:
    import timm
    from timm.layers import RmsNorm2d
    from timm.models import register_model
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.mobilenetv5 import (
        _GELU,
        MobileNetV5Encoder,
        MobileNetV5MultiScaleFusionAdapter,
    )

    if TIMM_NAME in timm.list_models(TIMM_NAME):
        return

    def edgeagent_mnv5_reduced(pretrained: bool = False, **_: object) -> MobileNetV5Encoder:
        """MobileNetV5Encoder as ``mobilenetv5_300m_enc`` builds it, with the reduced arch_def;
        the MSFA is rebuilt ``HIDDEN`` wide (timm fixes 2048)."""
        model = MobileNetV5Encoder(
            block_args=decode_arch_def(STRUCTURE["arch_def"]),
            stem_size=STRUCTURE["stem_size"],
            fix_stem=False,
            pad_type="same",
            msfa_indices=tuple(STRUCTURE["msfa_indices"]),
            msfa_output_resolution=STRUCTURE["msfa_output_resolution"],
            round_chs_fn=partial(round_channels, multiplier=1.0),
            norm_layer=RmsNorm2d,
            act_layer=_GELU,
            layer_scale_init_value=1e-5,
        )
        model.msfa = MobileNetV5MultiScaleFusionAdapter(
            in_chs=model.msfa_in_chs,
            out_chs=HIDDEN,
            output_resolution=STRUCTURE["msfa_output_resolution"],
            expansion_ratio=STRUCTURE["msfa_expansion_ratio"],
            norm_layer=RmsNorm2d,
            act_layer=_GELU,
        )
        model.num_features = model.head_hidden_size = HIDDEN
        return model

    register_model(edgeagent_mnv5_reduced)


def randomise(module, rng: np.random.Generator, rules: dict[str, str], prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Overwrite every parameter with seeded values far from its init, rounded to bf16."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            shape = tuple(p.shape)
            if name.endswith("layer_scale.gamma"):
                v, rule = rng.uniform(0.3, 1.0, size=shape), "uniform[0.3,1.0]"
            elif name.endswith("conv.bias"):
                v, rule = rng.normal(0.0, 0.1, size=shape), "normal std 0.1"
            elif len(shape) == 1:
                v, rule = rng.uniform(0.5, 1.5, size=shape), "uniform[0.5,1.5]"
            elif name.endswith(("embedding.weight", "embed_tokens.weight")):
                v, rule = rng.normal(0.0, 1.0, size=shape), "normal std 1"
            else:
                fan_in = math.prod(shape[1:])
                qk = name.endswith(("query.proj.weight", "key.proj.weight"))
                gain = QK_GAIN if qk else 1.0
                v = rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)
                rule = f"normal std {gain:g}/sqrt(fan_in)"
            p.copy_(torch.from_numpy(v.astype(np.float32)).to(torch.bfloat16).float())
            rules[prefix + name] = rule


def build(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    import torch
    from transformers import (
        Gemma3nAudioConfig,
        Gemma3nConfig,
        Gemma3nForConditionalGeneration,
        Gemma3nTextConfig,
        Gemma3nVisionConfig,
    )

    register_reduced()
    vision_cfg = Gemma3nVisionConfig(
        architecture=TIMM_NAME,
        hidden_size=HIDDEN,
        vocab_size=VISION_VOCAB,
        vocab_offset=VISION_OFFSET,
        rms_norm_eps=1e-6,
    )
    audio_cfg = Gemma3nAudioConfig(
        hidden_size=8,
        conf_num_attention_heads=2,
        conf_num_hidden_layers=1,
        sscp_conv_channel_size=[4, 4],
        vocab_size=16,
        vocab_offset=144,
    )
    cfg = Gemma3nConfig(
        text_config=Gemma3nTextConfig(**TEXT),
        vision_config=vision_cfg,
        audio_config=audio_cfg,
        boi_token_id=99,
        eoi_token_id=VISION_OFFSET,
        image_token_id=VISION_OFFSET + 1,
        boa_token_id=100,
        eoa_token_id=144,
        audio_token_id=145,
    )
    torch.manual_seed(SEED)
    model = Gemma3nForConditionalGeneration(cfg).float().eval()
    rules: dict[str, str] = {}
    randomise(model.model.vision_tower, rng, rules, "model.vision_tower.")
    randomise(model.model.embed_vision, rng, rules, "model.embed_vision.")
    randomise(model.model.language_model, rng, rules, "model.language_model.")
    return cfg, model, rules


def write_checkpoint(out: Path, cfg, model, versions) -> int:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    keep = ("model.language_model.", "model.vision_tower.", "model.embed_vision.")
    tensors = {
        k: v.detach().to(torch.bfloat16).contiguous()
        for k, v in sorted(model.state_dict().items())
        if k.startswith(keep)
    }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    text_dict = cfg.text_config.to_dict()
    vision_dict = cfg.vision_config.to_dict()
    for d in (text_dict, vision_dict):
        d.pop("transformers_version", None)
    vision_dict["edgeagent_structure"] = STRUCTURE
    config = {
        "architectures": ["Gemma3nForConditionalGeneration"],
        "model_type": "gemma3n",
        "text_config": text_dict,
        "vision_config": vision_dict,
        "vision_soft_tokens_per_image": 256,
        "boi_token_id": cfg.boi_token_id,
        "eoi_token_id": cfg.eoi_token_id,
        "image_token_id": cfg.image_token_id,
        "torch_dtype": "bfloat16",
        "transformers_version": versions["transformers"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    return sum(t.numel() for k, t in tensors.items() if not k.startswith(keep[0]))


def image_features(model, pixels: np.ndarray):  # type: ignore[no-untyped-def]
    """transformers' ``get_image_features`` on ``[S, S, 3]`` pixels: (tower tokens
    ``[256, hidden]``, projected ``[256, text_H]``, stage outputs ``[H, W, C]``)."""
    import torch

    stages: list[np.ndarray] = []
    timm_model = model.model.vision_tower.timm_model
    hooks = [
        b.register_forward_hook(
            lambda _m, _i, o: stages.append(o[0].permute(1, 2, 0).numpy().copy())
        )
        for b in timm_model.blocks
    ]
    tower: list[np.ndarray] = []  # copied by a hook: get_image_features scales it in place
    hooks.append(
        timm_model.msfa.register_forward_hook(
            lambda _m, _i, o: tower.append(o[0].reshape(o.shape[1], -1).T.numpy().copy())
        )
    )
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        out = model.model.get_image_features(x)
    for h in hooks:
        h.remove()
    return tower[0], out.pooler_output[0].numpy(), stages  # [256, hidden], [256, text_H]


def fp64_deviation(model, pixels: np.ndarray, proj32: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """How far timm/transformers' own float32 result is from float64: the parity noise floor."""
    import copy

    import torch

    m64 = copy.deepcopy(model).double()
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(np.float64))[None]
    with torch.no_grad():
        proj = m64.model.get_image_features(x).pooler_output[0].numpy()
    return float(np.abs(proj - proj32).max())


def released_manifest() -> dict[str, object]:
    """Names and shapes of the released tower and embed_vision (meta device, no weights)."""
    import timm
    import torch
    from transformers import Gemma3nTextConfig, Gemma3nVisionConfig
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nMultimodalEmbedder

    vcfg = Gemma3nVisionConfig()
    with torch.device("meta"):
        tower = timm.create_model("mobilenetv5_300m_enc", pretrained=False)
        embeds = {
            h: Gemma3nMultimodalEmbedder(vcfg, Gemma3nTextConfig(hidden_size=h))
            for h in (2048, 2560)
        }
    shapes = [
        ["model.vision_tower.timm_model." + k, list(v.shape)] for k, v in tower.state_dict().items()
    ]  # a list: timm's order
    return {
        "timm_architecture": "mobilenetv5_300m_enc",
        "vision_config": {
            k: vcfg.to_dict()[k]
            for k in ("architecture", "hidden_size", "vocab_size", "vocab_offset", "rms_norm_eps")
        },
        "tower_tensors": shapes,
        "embed_vision_tensors": {
            str(h): {"model.embed_vision." + k: list(v.shape) for k, v in e.state_dict().items()}
            for h, e in embeds.items()
        },
        "parameters": {
            "vision_tower": sum(p.numel() for p in tower.parameters()),
            **{
                f"embed_vision_{h}": sum(p.numel() for p in e.parameters())
                for h, e in embeds.items()
            },
        },
    }


def resize_cases(
    rng: np.random.Generator, arrays: dict[str, np.ndarray], desc: dict[str, str]
) -> dict[str, object]:
    """Pillow references for the numpy resize, and the processor vs Pillow difference."""
    from PIL import Image

    small = np.clip(rng.normal(128, 60, (67, 91, 3)), 0, 255).astype(np.uint8)
    wide = scene(160, rng)[:120]  # [120, 160, 3]
    arrays["resize_src_noise"], arrays["resize_src_scene"] = small, wide
    desc["resize_src_noise"] = "uint8 [67, 91, 3]: Gaussian noise"
    desc["resize_src_scene"] = "uint8 [120, 160, 3]: a synthetic scene"
    cases = {
        "noise_40x64_bilinear": ("resize_src_noise", 40, 64, Image.Resampling.BILINEAR),
        "noise_100x120_bilinear": ("resize_src_noise", 100, 120, Image.Resampling.BILINEAR),
        "scene_40x48_bilinear": ("resize_src_scene", 40, 48, Image.Resampling.BILINEAR),
        "scene_256x256_bilinear": ("resize_src_scene", 256, 256, Image.Resampling.BILINEAR),
        "noise_30x50_bicubic": ("resize_src_noise", 30, 50, Image.Resampling.BICUBIC),
    }
    for key, (src, h, w, mode) in cases.items():
        arrays[f"resize/{key}"] = pil_resize(arrays[src], h, w, int(mode))
        desc[f"resize/{key}"] = f"uint8 [{h}, {w}, 3]: Pillow resize of {src}, resample {int(mode)}"
    # The processor (torchvision backend) against Pillow, for the record.
    from transformers import SiglipImageProcessor

    proc = SiglipImageProcessor(
        **{k: v for k, v in PREPROCESSOR.items() if k != "image_processor_type"}
    )
    pv = proc(Image.fromarray(wide), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    pil = pil_resize(wide, 256, 256, int(Image.Resampling.BILINEAR)).astype(np.float32) / 255
    return {
        "processor_vs_pillow_max_abs": float(np.abs(pv - pil).max()),
        "processor_vs_pillow_mean_abs": float(np.abs(pv - pil).mean()),
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
    rng = np.random.default_rng(SEED)
    arrays: dict[str, np.ndarray] = {}
    desc: dict[str, str] = {}
    cfg, model, rules = build(np.random.default_rng([SEED, 1]))
    n_params = write_checkpoint(OUT / NAME, cfg, model, versions)
    stats: dict[str, object] = {"vision_parameters": n_params}
    for size in SIZES:
        img = scene(size, rng)
        pixels = img.astype(np.float32) / np.float32(255.0)  # do_normalize false, as released
        tokens, proj, stages = image_features(model, pixels)
        arrays[f"image_{size}"] = img
        arrays[f"{size}/tower"], arrays[f"{size}/projected"] = tokens, proj
        desc[f"image_{size}"] = f"uint8 [{size}, {size}, 3]: a synthetic scene; pixels = image/255"
        desc[f"{size}/tower"] = f"float32 [256, {HIDDEN}]: vision_tower last_hidden_state as tokens"
        desc[f"{size}/projected"] = (
            f"float32 [256, {TEXT['hidden_size']}]: get_image_features pooler_output"
        )
        if size == SIZES[0]:
            arrays[f"{size}/stage3"] = stages[3]
            desc[f"{size}/stage3"] = "float32 [8, 8, 48]: output of timm blocks[3]"
            stats["fp32_vs_fp64_max_abs_projected"] = fp64_deviation(model, pixels, proj)
        stats[f"{size}_tower_max_abs"] = float(np.abs(tokens).max())
        stats[f"{size}_stage_rms"] = [float(np.sqrt((s**2).mean())) for s in stages]
        log(
            size,
            "tower max",
            stats[f"{size}_tower_max_abs"],
            "stage rms",
            stats[f"{size}_stage_rms"],
        )
    stats["resize"] = resize_cases(rng, arrays, desc)
    write_npz(OUT / "reference.npz", arrays)
    manifest = json.dumps(released_manifest(), indent=1, sort_keys=True)
    (OUT / "manifest_released_vision.json").write_text(manifest + "\n")
    meta = {
        "generator": "scripts/make_vision_fixtures.py",
        "versions": versions,
        "seed": SEED,
        "text_config": TEXT,
        "vision_structure": STRUCTURE,
        "vision_hidden_size": HIDDEN,
        "weights": "every parameter random (numpy PCG64), rounded to bfloat16; norm weights "
        "uniform[0.5,1.5], layer_scale uniform[0.3,1], stem bias normal(0,0.1), query/key "
        f"projections {QK_GAIN}/sqrt(fan_in), other convs/matrices 1/sqrt(fan_in), "
        "embeddings normal(0,1)",
        "randomisation_rules": rules,
        "arrays": desc,
        "stats": stats,
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log("wrote", OUT, json.dumps(stats["resize"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
