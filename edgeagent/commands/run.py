"""``edgeagent run``: the daemon."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from edgeagent import __version__
from edgeagent.commands.common import add_settings_options, load_from_args
from edgeagent.logsetup import configure_logging

if TYPE_CHECKING:  # the daemon (MQTT, pipeline) is imported only by `edgeagent run`
    from edgeagent.daemon import Supervisor

_LOGGER = logging.getLogger(__name__)

# Variables for this process only: children (e.g. an arecord audio source) must not
# talk to systemd in our name (sd_notify's unset_environment).
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the daemon",
        description="Run the supervisor and the configured stages until SIGTERM or SIGINT. "
        "Under systemd (Type=notify) it reports READY=1, WATCHDOG=1, STATUS= and STOPPING=1.",
    )
    add_settings_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    settings = loaded.settings
    fmt = configure_logging(settings.logging.level, settings.logging.format)
    from edgeagent.daemon import build_supervisor  # noqa: PLC0415 - see the imports

    supervisor = build_supervisor(settings)
    for name in _SYSTEMD_VARIABLES:
        os.environ.pop(name, None)
    _LOGGER.info(
        "edgeagent %s starting: profile %s, config %s, stages %s, log format %s",
        __version__,
        settings.profile or "none",
        loaded.config_path or "none",
        ", ".join(settings.daemon.stages) or "none",
        fmt,
    )
    import asyncio  # noqa: PLC0415 - see edgeagent.cli

    return asyncio.run(_run(supervisor))


async def _run(supervisor: Supervisor) -> int:
    with supervisor.notifier:
        status = await supervisor.run()
    stuck = supervisor.unfinished()
    if supervisor.forced or stuck:
        # Tasks that ignore cancellation would keep asyncio.run from returning.
        _LOGGER.warning("exiting now with status %d; abandoned: %s", status, stuck or "none")
        logging.shutdown()
        os._exit(status)
    return status
