"""``edgeagent demo``: the voice pipeline on a bundled clip (see :mod:`edgeagent.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the voice pipeline on a bundled clip: no microphone, broker or model needed",
        description="Create (once, in the user cache) a tiny random Gemma 3n checkpoint, play a "
        "bundled speech clip through the real pipeline with the embedded MQTT broker, print "
        "every published message, and exit 0. The weights are random: the words are noise.",
    )
    add = parser.add_argument
    add("--task", choices=("assistant", "transcribe", "translate"), default="assistant",
        help="what speech becomes (default assistant)")  # fmt: skip
    add("--target-language", default="fr", metavar="TAG",
        help="translate: the language to translate into (default fr)")  # fmt: skip
    add("--realtime", action="store_true",
        help="play the clip in real time instead of as fast as possible")  # fmt: skip
    add("--kernels", choices=("reference", "quantized"), default="reference",
        help="engine kernels (default reference)")  # fmt: skip
    add("--cache", type=Path, default=None, metavar="DIR",
        help="where the demo checkpoint is kept (default ~/.cache/edgeagent/demo)")  # fmt: skip
    add("--timeout", type=float, default=300.0, metavar="S",
        help="give up after this many seconds (default 300)")  # fmt: skip
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from edgeagent.demo import DemoOptions, run_demo  # noqa: PLC0415 - loads the whole daemon

    options = DemoOptions(
        task=args.task,
        target_language=args.target_language,
        realtime=args.realtime,
        timeout_s=args.timeout,
        kernels=args.kernels,
    )
    if args.cache is not None:
        options.cache = args.cache
    return run_demo(options)
