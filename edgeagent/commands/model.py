"""``edgeagent model``: make random-weight checkpoints (``init``), describe one (``info``),
write its quantized copy (``quantize``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, TextIO

from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.presets import get_preset, preset_names, tensor_specs, write_checkpoint
from edgeagent.engine.quantize import BITS, BLOCK_SIZES, quantize_checkpoint
from edgeagent.engine.safetensors_io import safetensors_dtype

_PROGRESS_MIN_BYTES = 64 * 1024 * 1024  # smaller models are written without a progress bar


def register(subparsers: Any) -> None:
    """Add the ``model`` command and its ``init`` / ``info`` subcommands."""
    parser = subparsers.add_parser(
        "model",
        help="create or inspect Gemma 3n checkpoints",
        description="Create random-weight checkpoints in the real layout, or describe one.",
    )
    sub = parser.add_subparsers(dest="model_command", metavar="{init,info,quantize}", required=True)

    init = sub.add_parser(
        "init",
        help="write a random-weight checkpoint of a preset shape",
        description="Write config.json, model.safetensors (sharded above ~2 GB) and tokenizer.json "
        "with seeded random weights. Output is noise; the shapes and layout are the real ones.",
    )
    init.add_argument("--preset", required=True, choices=preset_names(), help="model shape")
    init.add_argument("--out", help="new or empty output directory (not needed with --dry-run)")
    init.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    init.add_argument(
        "--layout",
        choices=("text", "multimodal"),
        default="text",
        help="text: gemma3n_text, keys model.*; multimodal: gemma3n, keys model.language_model.* "
        "plus the audio and vision towers",
    )
    init.add_argument(
        "--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="stored dtype"
    )
    init.add_argument(
        "--dry-run",
        action="store_true",
        help="print 'name dtype shape' per tensor and the parameter count; write nothing",
    )
    init.set_defaults(handler=run_init)

    info = sub.add_parser("info", help="summarise a checkpoint directory")
    info.add_argument("path", help="checkpoint directory")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=run_info)

    quantize = sub.add_parser(
        "quantize",
        help="write the 4- or 8-bit copy the quantized kernels run",
        description="Quantize every projection and the tied LM head blockwise (ONNX Runtime "
        "MatMulNBits layout) into DIR/edgeagent-q{bits}b{block}/, memory-mappable and reused "
        'by every later load with kernels = "quantized". Rewrites a stale copy.',
    )
    quantize.add_argument("path", metavar="DIR", help="checkpoint directory")
    quantize.add_argument("--bits", type=int, choices=BITS, default=4, help="weight bits (4)")
    quantize.add_argument(
        "--block-size", type=int, choices=BLOCK_SIZES, default=64, help="weights per scale (64)"
    )
    quantize.set_defaults(handler=run_quantize)


def run_init(args: argparse.Namespace) -> int:
    """Write (or with --dry-run, list) a random checkpoint."""
    preset = get_preset(args.preset)
    specs = tensor_specs(preset.config, args.layout, args.dtype)
    total = sum(s.nbytes for s in specs)
    if args.dry_run:
        for spec in specs:
            shape = "x".join(str(d) for d in spec.shape)
            print(f"{spec.name} {safetensors_dtype(spec.dtype)} {shape}")
        n_params = sum(math.prod(s.shape) for s in specs)
        print(f"total parameters: {n_params} ({len(specs)} tensors, {total} bytes)")
        return 0
    if not args.out:
        raise SystemExit("edgeagent model init: --out is required unless --dry-run")
    bar = _ProgressBar(sys.stderr) if total >= _PROGRESS_MIN_BYTES else None
    out = write_checkpoint(
        preset,
        args.out,
        seed=args.seed,
        layout=args.layout,
        dtype=args.dtype,
        progress=bar.update if bar else None,
    )
    if bar:
        bar.finish()
    print(f"wrote {args.preset} ({args.layout}, {args.dtype}, seed {args.seed}) to {out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print a checkpoint's config summary, layout, tensor and parameter counts."""
    ckpt = open_checkpoint(args.path)
    cfg = ckpt.config
    summary = ckpt.describe()
    summary.update(
        {
            "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "intermediate_sizes": sorted(set(cfg.intermediate_sizes)),
            "heads": f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} x {cfg.head_dim}",
            "vocab_size": cfg.vocab_size,
            "vocab_size_per_layer_input": cfg.vocab_size_per_layer_input,
            "num_kv_shared_layers": cfg.num_kv_shared_layers,
            "sliding_window": cfg.sliding_window,
            "multimodal_tokens": ckpt.multimodal_tokens.as_dict(),
            "tokenizer": ckpt.tokenizer is not None,
        }
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        text = ", ".join(str(v) for v in value) if isinstance(value, list) else value
        print(f"{key:<{width}}  {text}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    """Write the quantized copy of a checkpoint, with a progress bar on stderr."""
    ckpt = open_checkpoint(args.path)
    bar = _ProgressBar(sys.stderr, unit="M weights", scale=1e6)
    store = quantize_checkpoint(ckpt, args.bits, args.block_size, progress=bar.update)
    bar.finish()
    print(
        f"wrote {args.bits}-bit copy (block {args.block_size}, {store.nbytes / 1e6:.0f} MB) "
        f"to {store.path}"
    )
    return 0


class _ProgressBar:
    """A one-line byte progress bar on a stream (redrawn in place on a terminal)."""

    def __init__(
        self, stream: TextIO, width: int = 30, unit: str = "GB", scale: float = 1e9
    ) -> None:
        self.stream = stream
        self.unit = unit
        self.scale = scale
        self.width = width
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last_percent = -1

    def update(self, done: int, total: int) -> None:
        percent = 100 * done // max(1, total)
        if percent == self.last_percent:
            return
        self.last_percent = percent
        filled = self.width * done // max(1, total)
        rate = done / max(1e-9, time.monotonic() - self.start)
        speed = (
            f"{rate / 1e6:.0f} MB/s"
            if self.unit == "GB"
            else f"{rate / self.scale:.1f} {self.unit}/s"
        )
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% "
            f"{done / self.scale:.2f}/{total / self.scale:.2f} {self.unit} {speed}"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
