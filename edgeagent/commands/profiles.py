"""``edgeagent profiles list|show NAME``: the bundled hardware profiles."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("profiles", help="list or show hardware profiles")
    parser.set_defaults(handler=lambda _args: _usage(parser))
    sub = parser.add_subparsers(title="profiles commands", metavar="COMMAND")
    listing = sub.add_parser("list", help="name and description of every bundled profile")
    listing.set_defaults(handler=handle_list)
    show = sub.add_parser("show", help="validate a profile and print its file")
    show.add_argument("name", metavar="NAME", help="profile name, or the path of a profile file")
    show.set_defaults(handler=handle_show)


def handle_list(_args: argparse.Namespace) -> int:
    from edgeagent.profiles import list_profiles, load_profile, profiles_dir  # noqa: PLC0415

    names = list_profiles()
    width = max((len(n) for n in names), default=0)
    for name in names:
        profile = load_profile(name)
        print(f"{name:<{width}}  {profile.description}")
    print(f"\n({len(names)} profiles in {profiles_dir()})")
    return 0


def handle_show(args: argparse.Namespace) -> int:
    from edgeagent.profiles import load_profile, profile_path  # noqa: PLC0415 - see edgeagent.cli

    load_profile(args.name)
    path = profile_path(args.name)
    print(f"# {path}")
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
