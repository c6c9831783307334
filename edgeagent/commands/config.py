"""``edgeagent config show|check``: the effective settings, and their validation."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel

from edgeagent.commands.common import add_settings_options, load_from_args
from edgeagent.config import Loaded
from edgeagent.settings import Settings
from edgeagent.stages import stage_factory
from edgeagent.tomlfile import dumps


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
    loaded = load_from_args(args)
    print(render(loaded, comments=args.comments), end="")
    return 0


def handle_check(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    for name in loaded.settings.daemon.stages:
        stage_factory(name)
    print(f"ok: {_origin(loaded)}")
    return 0


def render(loaded: Loaded, *, comments: bool = False, commented: bool = False) -> str:
    """The settings as TOML, headed by where they came from."""
    header = f"# edgeagent effective settings: {_origin(loaded)}\n"
    if loaded.settings.mqtt.password is not None:
        header += "# mqtt.password is masked; keep the real one in EDGEAGENT_MQTT__PASSWORD\n"
    header += "\n"
    data = loaded.settings.model_dump(mode="json")
    return header + dumps(
        data, descriptions=descriptions() if comments else None, commented=commented
    )


def descriptions(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, str]:
    """Dotted setting name -> its description (sections: their docstring's first line)."""
    result: dict[str, str] = {}
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            result[dotted] = (annotation.__doc__ or "").strip().splitlines()[0]
            result |= descriptions(annotation, f"{dotted}.")
        elif field.description:
            result[dotted] = field.description
    return result


def _origin(loaded: Loaded) -> str:
    return "defaults < " + " < ".join([layer.source for layer in loaded.layers] or ["nothing else"])


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
