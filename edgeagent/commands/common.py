"""Options shared by the commands that load settings, and the loading itself."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeagent.config import Loaded


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--profile``, ``--set``, ``--log-level``, ``--log-format``."""
    group = parser.add_argument_group(
        "settings (precedence: defaults < profile < file < env < flags)"
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config file (default: /etc/edgeagent/edgeagent.toml if it exists)",
    )
    group.add_argument(
        "--profile", metavar="NAME", help="hardware profile name or file (edgeagent profiles list)"
    )
    group.add_argument(
        "--set",
        dest="set_pairs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set mqtt.port=1884 (value parsed as TOML; repeatable)",
    )
    group.add_argument(
        "--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
    group.add_argument(
        "--log-format",
        choices=["auto", "text", "journal", "json"],
        help="log line format (auto: journal under journald, else text)",
    )


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line layer of the settings, from the options above."""
    from edgeagent.config import deep_merge, nested, overrides_from_pairs  # noqa: PLC0415

    result = overrides_from_pairs(args.set_pairs)
    for dotted, value in (
        ("profile", args.profile),
        ("logging.level", args.log_level),
        ("logging.format", args.log_format),
    ):
        if value is not None:
            result = deep_merge(result, nested(dotted, value))
    return result


def load_from_args(args: argparse.Namespace) -> Loaded:
    """Settings from every layer, the command line last."""
    from edgeagent.config import load  # noqa: PLC0415 - see edgeagent.cli

    return load(args.config, cli_overrides(args))
