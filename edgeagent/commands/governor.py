"""``edgeagent governor simulate``: replay a battery/temperature trace through the policy.

The trace is CSV with a header: ``t`` (seconds, rising), ``battery_percent``,
``charging`` (true/false/1/0/Charging/Discharging...) and ``temperature_c``;
an empty cell (or a missing column) is a sensor that gave no reading, which
the policy treats as unknown unless the profile has no such sensor. The
ladder is the profile's tiers (no model loaded: every rung is kept);
thresholds, hysteresis and dwell come from the settings, so ``--set
governor.min_dwell_s=60`` works.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edgeagent.commands.common import add_settings_options, load_from_args
from edgeagent.errors import ConfigError

if TYPE_CHECKING:
    from edgeagent.governor.policy import Readings

_TRUE = {"1", "true", "yes", "charging", "full"}
_FALSE = {"0", "false", "no", "discharging", "not charging"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("governor", help="power and thermal governor tools")
    parser.set_defaults(handler=lambda _args: _usage(parser))
    sub = parser.add_subparsers(title="governor commands", metavar="COMMAND")
    simulate = sub.add_parser(
        "simulate", help="replay a battery/temperature trace; print the tier timeline"
    )
    simulate.add_argument(
        "--trace",
        type=Path,
        required=True,
        metavar="FILE.csv",
        help="CSV: t, battery_percent, charging, temperature_c (empty cell: no reading)",
    )
    simulate.add_argument(
        "--every", action="store_true", help="print every row, not only the changes"
    )
    add_settings_options(simulate)
    simulate.set_defaults(handler=handle_simulate)


def handle_simulate(args: argparse.Namespace) -> int:
    from edgeagent.governor.ladder import build_ladder  # noqa: PLC0415 - see edgeagent.cli
    from edgeagent.governor.policy import PolicyState, advance, policy_config  # noqa: PLC0415

    settings = load_from_args(args).settings
    governor = settings.governor
    ladder = build_ladder(
        settings.model.allowed_tiers or ("full", "e2b"),
        None,
        economy_max_fps=governor.economy_max_fps,
        economy_max_new_tokens=governor.economy_max_new_tokens,
    )
    rows = list(_read_trace(args.trace))
    config = policy_config(governor, ladder.names)
    battery = "yes" if config.has_battery else "none (battery columns ignored)"
    print(f"# ladder: {' > '.join(ladder.names)}; battery: {battery}")
    print(f"{'time_s':>9}  {'tier':<9} reason")
    state = PolicyState(ladder.names[0])
    previous_t: float | None = None
    for index, (t, readings) in enumerate(rows):
        elapsed = 0.0 if previous_t is None else t - previous_t
        previous_t = t
        before = state.rung
        state, decision = advance(state, readings, config, elapsed)
        if args.every or index == 0 or decision.rung != before:
            urgent = " (at once)" if decision.urgent else ""
            print(f"{t:9.1f}  {decision.rung:<9} {decision.reason}{urgent}")
    return 0


def _read_trace(path: Path) -> Iterator[tuple[float, Readings]]:
    from edgeagent.governor.policy import Readings  # noqa: PLC0415 - see edgeagent.cli

    try:
        with path.open(newline="", encoding="utf-8") as file:
            lines = list(csv.DictReader(file))
    except OSError as exc:
        raise ConfigError(f"--trace {path}: {exc.strerror}") from exc
    previous = float("-inf")
    for number, row in enumerate(lines, start=2):
        try:
            t = float(row["t"])
            readings = Readings(
                battery_percent=_float(row.get("battery_percent")),
                charging=_bool(row.get("charging")),
                temperature_c=_float(row.get("temperature_c")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"--trace {path}: line {number}: {exc}") from exc
        if t < previous:
            raise ConfigError(f"--trace {path}: line {number}: t goes backwards")
        previous = t
        yield t, readings


def _float(cell: str | None) -> float | None:
    return None if cell is None or not cell.strip() else float(cell)


def _bool(cell: str | None) -> bool | None:
    if cell is None or not cell.strip():
        return None
    word = cell.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"charging: {cell!r} is not true or false")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
