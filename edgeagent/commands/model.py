"""``edgeagent model``: make random-weight checkpoints (``init``), describe one (``info``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, TextIO

from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.presets import get_preset, preset_names, tensor_specs, write_checkpoint
from edgeagent.engine.safetensors_io import safetensors_dtype

_PROGRESS_MIN_BYTES = 64 * 1024 * 1024  # smaller models are written without a progress bar


def register(subparsers: Any) -> None:
    """Add the ``model`` command and its ``init`` / ``info`` subcommands."""
    parser = subparsers.add_parser(
        "model",
        help="create or inspect Gemma 3n checkpoints",
        description="Create random-weight checkpoints in the real layout, or describe one.",
    )
    sub = parser.add_subparsers(dest="model_command", metavar="{init,info}", required=True)

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
        help="text: gemma3n_text, keys model.*; multimodal: gemma3n, keys model.language_model.*",
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


class _ProgressBar:
    """A one-line byte progress bar on a stream (redrawn in place on a terminal)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
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
        rate = done / max(1e-9, time.monotonic() - self.start) / 1e6
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% "
            f"{done / 1e9:.2f}/{total / 1e9:.2f} GB {rate:.0f} MB/s"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
