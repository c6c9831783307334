"""The ``edgeagent`` command: builds the argument parser and runs one handler.

Each command group lives in its own module under :mod:`edgeagent.commands`
and exposes ``register(subparsers)``. Handlers return the exit status;
edgeagent errors become ``edgeagent: error: ...`` with status 2 for invalid
configuration and 1 otherwise.

The parser for every command is built on each start, so a command module
imports at the top only what its parser needs; a handler imports the rest
(pydantic and the settings, the daemon, the pipeline) when it runs. That
keeps ``edgeagent bench``'s peak memory the engine's, and start-up quick.
``tests/foundation/test_cli_imports.py`` holds the line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from edgeagent import __version__
from edgeagent.commands import bench, config, demo, generate, governor, model, profiles, run
from edgeagent.errors import ConfigError, EdgeAgentError

COMMAND_MODULES: tuple[ModuleType, ...] = (
    run,
    config,
    profiles,
    # Engine commands; later issues append theirs here.
    model,
    generate,
    bench,
    governor,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeagent",
        description="On-device Gemma 3n agent daemon for ARM Linux wearables and IoT boards.",
    )
    parser.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = handler(args)
    except ConfigError as exc:
        _error(exc)
        return 2
    except EdgeAgentError as exc:
        _error(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def _error(exc: Exception) -> None:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"edgeagent: error: {line}", file=sys.stderr)
