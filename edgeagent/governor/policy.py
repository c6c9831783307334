"""The governor's policy: a pure function from readings to the next rung.

Levels count rungs down from the top of the ladder (0 = the largest). Each
sensor demands a level twice over:

- *entry* (the plain thresholds): where the rung must be at least;
- *release* (thresholds moved by the hysteresis): the highest rung the
  readings allow going back up to.

Entry is never above release, so a reading that stays within a hysteresis band
(between a threshold and the threshold moved by the hysteresis) causes at
most one switch. Stepping down happens at once; stepping up waits for
``min_dwell_s`` on the current rung and then goes straight to the release
level. Battery: below ``battery_low`` one rung down, below
``battery_critical`` the lowest running rung; charging relaxes both by one band
(only below ``battery_critical`` one rung down). Temperature (the hottest zone):
above ``warm`` one rung down, above ``hot`` the lowest running rung, above
``critical`` suspend — at once, whatever the dwell time or a manual override.
An unknown reading (a configured sensor that is missing, unreadable or out of
range) demands one rung down. A board without a battery is governed by
temperature alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeagent.settings import GovernorSettings

OVERRIDE = "override"


@dataclass(frozen=True)
class Readings:
    """One poll of the sensors. None: no reading (the sensor is unknown or absent)."""

    battery_percent: float | None = None
    charging: bool | None = None
    temperature_c: float | None = None
    """The hottest zone read, degC."""
    thermal_complete: bool = True
    """False if a configured thermal zone gave no reading."""

    def as_json(self) -> dict[str, float | bool | None]:
        return {
            "battery_percent": self.battery_percent,
            "charging": self.charging,
            "temperature_c": self.temperature_c,
        }


@dataclass(frozen=True)
class PolicyConfig:
    """The ladder's rung names (largest first, ``suspend`` last) and the thresholds."""

    ladder: tuple[str, ...]
    has_battery: bool
    has_thermal: bool = True
    battery_low_percent: float = 30
    battery_critical_percent: float = 15
    hysteresis_percent: float = 5
    thermal_warm_c: float = 70
    thermal_hot_c: float = 80
    thermal_critical_c: float = 90
    hysteresis_c: float = 3
    min_dwell_s: float = 30

    def __post_init__(self) -> None:
        if len(self.ladder) < 2 or self.ladder[-1] != "suspend":
            raise ValueError("the ladder needs a running rung and ends with suspend")


@dataclass(frozen=True)
class PolicyState:
    """Where the governor is: the rung, how long it has been there, a manual override."""

    rung: str
    time_in_rung_s: float = 0.0
    override: str | None = None
    """A rung chosen by command, or None for automatic."""


@dataclass(frozen=True)
class Decision:
    """The rung to be on and why; ``urgent``: apply now, not at the end of the utterance."""

    rung: str
    reason: str
    urgent: bool = False


@dataclass(frozen=True)
class _Demand:
    entry: int
    release: int
    reason: str


def decide(readings: Readings, state: PolicyState, config: PolicyConfig) -> Decision:
    """The next rung for ``readings``; see the module docstring."""
    ladder = config.ladder
    suspend = len(ladder) - 1
    current = ladder.index(state.rung)
    hot = _thermal(readings, config, suspend)
    if readings.temperature_c is not None and readings.temperature_c > config.thermal_critical_c:
        return Decision(ladder[suspend], "thermal_critical", urgent=current != suspend)
    if state.override is not None:
        return Decision(state.override, OVERRIDE)
    demands = [hot, _battery(readings, config, suspend)]
    entry = max(demands, key=lambda d: d.entry)
    release = max(d.release for d in demands)
    if entry.entry > current:
        return Decision(ladder[entry.entry], entry.reason)
    if release < current and state.time_in_rung_s >= config.min_dwell_s:
        return Decision(ladder[release], "recovered")
    return Decision(state.rung, "steady" if release >= current else "dwell")


def _battery(readings: Readings, config: PolicyConfig, suspend: int) -> _Demand:
    lowest = suspend - 1
    if not config.has_battery:
        return _Demand(0, 0, "ok")
    percent = readings.battery_percent
    if percent is None:
        return _Demand(min(1, lowest), min(1, lowest), "battery_unknown")
    low, critical = config.battery_low_percent, config.battery_critical_percent
    levels: tuple[tuple[float, int, str], ...] = ((critical, min(1, lowest), "battery_critical"),)
    if not readings.charging:
        levels = ((critical, lowest, "battery_critical"), (low, min(1, lowest), "battery_low"))
    entry, release, reason = 0, 0, "ok"
    for threshold, level, why in levels:
        if percent < threshold and level > entry:
            entry, reason = level, why
        if percent < threshold + config.hysteresis_percent:
            release = max(release, level)
    return _Demand(entry, release, reason)


def _thermal(readings: Readings, config: PolicyConfig, suspend: int) -> _Demand:
    lowest = suspend - 1
    entry, release, reason = 0, 0, "ok"
    if config.has_thermal and not readings.thermal_complete:
        entry, release, reason = min(1, lowest), min(1, lowest), "thermal_unknown"
    temp = readings.temperature_c
    if temp is None:
        if config.has_thermal and reason == "ok":
            return _Demand(min(1, lowest), min(1, lowest), "thermal_unknown")
        return _Demand(entry, release, reason)
    levels = (
        (config.thermal_critical_c, suspend, "thermal_critical"),
        (config.thermal_hot_c, lowest, "thermal_hot"),
        (config.thermal_warm_c, min(1, lowest), "thermal_warm"),
    )
    for threshold, level, why in levels:
        if temp > threshold and level > entry:
            entry, reason = level, why
        if temp > threshold - config.hysteresis_c:
            release = max(release, level)
    return _Demand(entry, release, reason)


def policy_config(governor: GovernorSettings, ladder: tuple[str, ...]) -> PolicyConfig:
    """The policy's configuration from the ``governor`` settings and a ladder's rung names."""
    return PolicyConfig(
        ladder=ladder,
        has_battery=governor.battery_capacity_path is not None,
        has_thermal=bool(governor.thermal_zone_paths),
        battery_low_percent=governor.battery_low_percent,
        battery_critical_percent=governor.battery_critical_percent,
        hysteresis_percent=governor.hysteresis_percent,
        thermal_warm_c=governor.thermal_warm_c,
        thermal_hot_c=governor.thermal_hot_c,
        thermal_critical_c=governor.thermal_critical_c,
        hysteresis_c=governor.hysteresis_c,
        min_dwell_s=governor.min_dwell_s,
    )


def advance(
    state: PolicyState, readings: Readings, config: PolicyConfig, elapsed_s: float
) -> tuple[PolicyState, Decision]:
    """One poll: ``elapsed_s`` more on the current rung, the decision, and the state after it."""
    state = PolicyState(state.rung, state.time_in_rung_s + elapsed_s, state.override)
    decision = decide(readings, state, config)
    if decision.rung != state.rung:
        state = PolicyState(decision.rung, 0.0, state.override)
    return state, decision
