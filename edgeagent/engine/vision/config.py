"""Gemma 3n vision-encoder configuration: ``vision_config`` of a multimodal ``config.json``.

The released config names a timm architecture (``mobilenetv5_300m_enc``)
and carries no block list; its structure is timm's, reproduced here as
:data:`RELEASED_ARCH`. Scaled-down checkpoints (tests, presets) carry their
structure under ``vision_config.edgeagent_structure`` in timm's own block
notation (``er_r1_k3_s2_e4_c128``, ``uir_r1_a3_k5_s2_e6_c256``,
``mqa_r1_k3_h12_v2_s1_d64_c640``), so the reduced and the real encoder run
the same code. Every problem is a :class:`CheckpointError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from edgeagent.errors import CheckpointError
from edgeagent.jsonfile import read_json_object

ARCHITECTURE = "mobilenetv5_300m_enc"
STRUCTURE_KEY = "edgeagent_structure"
_MQA_640 = "mqa_r1_k3_h12_v2_s1_d64_c640"
_MQA_1280 = "mqa_r1_k3_h16_s1_d96_c1280"
RELEASED_ARCH: tuple[tuple[str, ...], ...] = (
    ("er_r1_k3_s2_e4_c128", "er_r1_k3_s1_e4_c128", "er_r1_k3_s1_e4_c128"),
    (
        "uir_r1_a3_k5_s2_e6_c256",
        "uir_r1_a5_k0_s1_e4_c256",
        "uir_r1_a3_k0_s1_e4_c256",
        "uir_r1_a5_k0_s1_e4_c256",
        "uir_r1_a3_k0_s1_e4_c256",
    ),
    (
        "uir_r1_a5_k5_s2_e6_c640",
        *["uir_r1_a5_k0_s1_e4_c640"] * 7,
        "uir_r1_a0_k0_s1_e1_c640",
        *[b for _ in range(14) for b in (_MQA_640, "uir_r1_a0_k0_s1_e2_c640")],
    ),
    (
        "uir_r1_a5_k5_s2_e6_c1280",
        *[b for _ in range(19) for b in (_MQA_1280, "uir_r1_a0_k0_s1_e2_c1280")],
    ),
)
"""timm 1.0.31 ``_gen_mobilenet_v5`` for ``mobilenetv5_300m_enc``: four stages."""

RELEASED_STRUCTURE: dict[str, Any] = {
    "stem_size": 64,
    "arch_def": [list(stage) for stage in RELEASED_ARCH],
    "msfa_indices": [-2, -1],
    "msfa_output_resolution": 16,
    "msfa_expansion_ratio": 2.0,
}
_DEFAULTS: dict[str, Any] = {
    "architecture": ARCHITECTURE,
    "hidden_size": 2048,
    "vocab_size": 128,
    "vocab_offset": 262_144,
    "rms_norm_eps": 1e-6,
}
NORM_EPS = 1e-6  # timm RmsNorm2d / RmsNormAct2d default, every norm inside the tower


def make_divisible(v: float, divisor: int = 8) -> int:
    """timm's channel rounding (``round_limit`` 0.9): the nearest multiple of ``divisor``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class BlockSpec:
    """One block of the tower, decoded from timm's notation (channels after rounding).

    ``kind``: ``er`` (EdgeResidual: full conv ``k`` then 1×1), ``uir`` (universal
    inverted residual: optional depthwise ``a`` start, 1×1 expand, optional
    depthwise ``k`` mid, 1×1 project, layer scale), ``mqa`` (mobile multi-query
    attention: RMSNorm, one shared key/value head, keys and values downsampled
    by a depthwise ``k`` conv of stride ``kv_stride``, layer scale).
    """

    kind: str
    in_chs: int
    out_chs: int
    stride: int
    exp_ratio: float = 1.0
    kernel: int = 0  # er: expansion conv; uir: mid depthwise (0 = none); mqa: kv down conv
    start_kernel: int = 0  # uir only: start depthwise (0 = none)
    num_heads: int = 0  # mqa only
    key_dim: int = 0  # mqa only (= value dim)
    kv_stride: int = 1  # mqa only
    noskip: bool = False

    @property
    def mid_chs(self) -> int:
        """Expanded width (er, uir)."""
        return make_divisible(self.in_chs * self.exp_ratio)

    @property
    def has_skip(self) -> bool:
        """A residual connection: same width, stride 1, not ``noskip``."""
        return self.in_chs == self.out_chs and self.stride == 1 and not self.noskip


def parse_block(text: str, in_chs: int, where: str) -> BlockSpec:
    """Decode one timm block string (``r1`` only: one block per string)."""
    kind, *ops = text.split("_")
    opts: dict[str, str] = {}
    noskip = False
    for op in ops:
        if op == "noskip":
            noskip = True
            continue
        key = op[:2] if op[:2] in ("se", "fc") else op[0]
        opts[key] = op[len(key) :]
    try:
        if opts.get("r", "1") != "1" or kind not in ("er", "uir", "mqa"):
            raise ValueError("only r1 blocks of type er, uir or mqa are supported")
        out_chs = make_divisible(int(opts["c"]))
        stride = int(opts.get("s", "1"))
        if kind == "mqa":
            return BlockSpec(
                kind, in_chs, out_chs, stride, kernel=int(opts["k"]),
                num_heads=int(opts["h"]), key_dim=int(opts["d"]),
                kv_stride=int(opts.get("v", "1")), noskip=noskip,
            )  # fmt: skip
        spec = BlockSpec(
            kind, in_chs, out_chs, stride, exp_ratio=float(opts["e"]), kernel=int(opts["k"]),
            start_kernel=int(opts.get("a", "0")) if kind == "uir" else 0, noskip=noskip,
        )  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot decode block {text!r}: {exc}") from exc
    if stride > 1 and (kind == "mqa" or (kind == "uir" and not (spec.kernel or spec.start_kernel))):
        raise CheckpointError(f"{where}: block {text!r}: a strided block needs a spatial conv")
    return spec


@dataclass(frozen=True)
class VisionConfig:
    """The MobileNetV5 tower and its embedder. Sizes in channels or pixels.

    ``stages``: the decoded blocks, per stage; ``msfa_stages``: which feature
    maps the multi-scale fusion adapter concatenates (0 = stem, ``i`` = end of
    stage ``i``); ``hidden_size``: the adapter's output width (2048 released),
    the embedder's input; ``text_hidden_size``: the embedder's output.
    """

    stem_size: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    msfa_stages: tuple[int, ...]
    msfa_output_resolution: int
    msfa_expansion_ratio: float
    hidden_size: int
    vocab_size: int
    vocab_offset: int
    rms_norm_eps: float
    text_hidden_size: int

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """Every block, in order."""
        return tuple(b for stage in self.stages for b in stage)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of feature map ``i`` (0 = stem)."""
        return (self.stem_size, *(stage[-1].out_chs for stage in self.stages))

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Total stride of feature map ``i`` (0 = stem, 2)."""
        strides = [2]
        for stage in self.stages:
            strides.append(strides[-1] * math.prod(b.stride for b in stage))
        return tuple(strides)

    @property
    def msfa_in_chs(self) -> int:
        """The adapter's input width: the fused feature maps' channels, summed."""
        return sum(self.feature_channels[i] for i in self.msfa_stages)

    @property
    def tokens(self) -> int:
        """Soft tokens per image (256 released)."""
        return self.msfa_output_resolution**2

    def check_resolution(self, size: int) -> None:
        """Raise unless a ``size``×``size`` image gives a whole ``tokens`` grid."""
        stride = self.feature_strides[self.msfa_stages[0]]
        res = self.msfa_output_resolution
        if size % stride or (size // stride) % res:
            raise CheckpointError(
                f"image size {size} px: needs a multiple of {stride * res} px "
                f"(feature stride {stride} × output grid {res})"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], text_hidden_size: int, source: str) -> VisionConfig:
        """Parse and validate a ``vision_config`` dict."""

        def value(name: str) -> Any:
            v = d.get(name)
            return _DEFAULTS[name] if v is None else v

        def fail(name: str, problem: str) -> CheckpointError:
            return CheckpointError(f"{source}: field 'vision_config.{name}' {problem}")

        structure = d.get(STRUCTURE_KEY)
        if structure is None:
            if value("architecture") != ARCHITECTURE:
                raise fail("architecture", f"is {value('architecture')!r}; only {ARCHITECTURE}")
            structure = RELEASED_STRUCTURE
        if not isinstance(structure, Mapping):
            raise fail(STRUCTURE_KEY, "must be an object")
        arch = structure.get("arch_def")
        if not _is_stage_list(arch):
            raise fail(f"{STRUCTURE_KEY}.arch_def", "must be a list of lists of block strings")
        stem = _pos_int(structure.get("stem_size"), fail, f"{STRUCTURE_KEY}.stem_size")
        stem = make_divisible(stem)
        stages: list[tuple[BlockSpec, ...]] = []
        chs = stem
        for stage in arch:
            blocks = []
            for text in stage:
                blocks.append(parse_block(text, chs, f"{source}: vision_config"))
                chs = blocks[-1].out_chs
            stages.append(tuple(blocks))
        n_features = len(stages) + 1
        raw_idx = structure.get("msfa_indices", [-2, -1])
        if not isinstance(raw_idx, Sequence) or not all(isinstance(i, int) for i in raw_idx):
            raise fail(f"{STRUCTURE_KEY}.msfa_indices", "must be a list of integers")
        idx = tuple(i % n_features if -n_features <= i < n_features else -1 for i in raw_idx)
        if not idx or min(idx) < 0:
            raise fail(f"{STRUCTURE_KEY}.msfa_indices", f"out of range for {n_features} maps")
        res = _pos_int(
            structure.get("msfa_output_resolution", 16), fail,
            f"{STRUCTURE_KEY}.msfa_output_resolution",
        )  # fmt: skip
        eps = value("rms_norm_eps")
        if not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise fail("rms_norm_eps", f"must be a small positive number, got {eps!r}")
        return cls(
            stem_size=stem,
            stages=tuple(stages),
            msfa_stages=idx,
            msfa_output_resolution=res,
            msfa_expansion_ratio=_pos_float(
                structure.get("msfa_expansion_ratio", 2.0),
                fail,
                f"{STRUCTURE_KEY}.msfa_expansion_ratio",
            ),
            hidden_size=_pos_int(value("hidden_size"), fail, "hidden_size"),
            vocab_size=_pos_int(value("vocab_size"), fail, "vocab_size"),
            vocab_offset=int(value("vocab_offset")),
            rms_norm_eps=float(eps),
            text_hidden_size=text_hidden_size,
        )


def _is_stage_list(arch: Any) -> TypeGuard[Sequence[Sequence[str]]]:
    return (
        isinstance(arch, Sequence)
        and bool(arch)
        and all(isinstance(s, Sequence) and s and all(isinstance(b, str) for b in s) for s in arch)
    )


def _pos_int(v: Any, fail: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise fail(name, f"must be a positive integer, got {v!r}")
    return v


def _pos_float(v: Any, fail: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
        raise fail(name, f"must be a positive number, got {v!r}")
    return float(v)


def load_vision_config(directory: str | Path, text_hidden_size: int) -> VisionConfig:
    """The ``vision_config`` of ``DIR/config.json``; a checkpoint without one is an error."""
    path = Path(directory) / "config.json"
    vision = read_json_object(path, CheckpointError, "config").get("vision_config")
    if not isinstance(vision, dict):
        raise CheckpointError(
            f"{path}: no 'vision_config' object: this checkpoint has no vision encoder "
            "(the multimodal layout has one)"
        )
    return VisionConfig.from_dict(vision, text_hidden_size, str(path))
