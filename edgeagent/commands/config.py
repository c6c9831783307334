"""``edgeagent config show|check``: the effective settings, and their validation."""

from __future__ import annotations

import argparse

from edgeagent.commands.common import add_settings_options, load_from_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="show or check the effective settings")
    parser.set_defaults(handler=lambda _args: _usage(parser))
    sub = parser.add_subparsers(title="config commands", metavar="COMMAND")

    show = sub.add_parser(
        "show",
        help="print the effective settings as TOML",
        description="Print the settings after merging defaults, hardware profile, config file, "
        "environment and flags, as TOML that is itself a valid config file.",
    )
    add_settings_options(show)
    show.add_argument(
        "--comments", action="store_true", help="describe every setting in a comment above it"
    )
    show.set_defaults(handler=handle_show)

    check = sub.add_parser(
        "check",
        help="validate the settings; exit 2 if they are invalid",
        description="Load and validate every layer, including stage names; exit 0 if valid.",
    )
    add_settings_options(check)
    check.set_defaults(handler=handle_check)


def handle_show(args: argparse.Namespace) -> int:
    from edgeagent.settings_text import render  # noqa: PLC0415 - see edgeagent.cli

    loaded = load_from_args(args)
    print(render(loaded, comments=args.comments), end="")
    return 0


def handle_check(args: argparse.Namespace) -> int:
    from edgeagent.settings_text import origin  # noqa: PLC0415 - see edgeagent.cli
    from edgeagent.stages import stage_factory  # noqa: PLC0415

    loaded = load_from_args(args)
    for name in loaded.settings.daemon.stages:
        stage_factory(name)
    print(f"ok: {origin(loaded)}")
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
