"""Property tests of the pure policy (must-show 1)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.governor.policy import Decision, PolicyConfig, PolicyState, Readings, decide

LADDER = ("full", "balanced", "e2b", "economy", "suspend")
SUSPEND = len(LADDER) - 1


@st.composite
def configs(
    draw: st.DrawFn, has_battery: bool | None = None, separated: bool = False
) -> PolicyConfig:
    """A ladder of 1-4 running rungs and thresholds; ``separated``: no threshold lies
    inside another's hysteresis band (as in every bundled profile)."""
    n = draw(st.integers(1, 4))
    hyst_pct = draw(st.integers(0, 20))
    hyst_c = draw(st.floats(0, 10))
    min_pct, min_c = (hyst_pct, hyst_c) if separated else (0, 0.0)
    critical_pct = draw(st.integers(0, 40))
    warm = draw(st.floats(30, 90))
    hot = warm + draw(st.floats(min_c, min_c + 20))
    return PolicyConfig(
        ladder=(*LADDER[:n], "suspend"),
        has_battery=draw(st.booleans()) if has_battery is None else has_battery,
        battery_critical_percent=critical_pct,
        battery_low_percent=min(100, critical_pct + draw(st.integers(min_pct, min_pct + 40))),
        hysteresis_percent=hyst_pct,
        thermal_warm_c=warm,
        thermal_hot_c=hot,
        thermal_critical_c=hot + draw(st.floats(min_c, min_c + 20)),
        hysteresis_c=hyst_c,
        min_dwell_s=draw(st.floats(0, 60)),
    )


def run(
    config: PolicyConfig,
    readings: list[Readings],
    start: str,
    steps: list[float],
) -> list[Decision]:
    """Feed ``readings`` to the policy ``steps`` seconds apart, as the governor stage would."""
    state = PolicyState(start)
    decisions = []
    for reading, dt in zip(readings, steps, strict=True):
        state = PolicyState(state.rung, state.time_in_rung_s + dt)
        decision = decide(reading, state, config)
        decisions.append(decision)
        if decision.rung != state.rung:
            state = PolicyState(decision.rung, 0.0)
    return decisions


def switches(start: str, decisions: list[Decision]) -> int:
    rungs = [start, *(d.rung for d in decisions)]
    return sum(a != b for a, b in itertools.pairwise(rungs))


@st.composite
def band_trace(draw: st.DrawFn) -> tuple[PolicyConfig, list[Readings], str, list[float]]:
    """A config and readings that stay inside one threshold's hysteresis band."""
    config = draw(configs(separated=True))
    n = draw(st.integers(1, 40))
    steps = draw(st.lists(st.floats(0, 120), min_size=n, max_size=n))
    start = draw(st.sampled_from(config.ladder))
    options = ["warm", "hot", "critical"]
    if config.has_battery:
        options += ["low", "battery_critical"]
    which = draw(st.sampled_from(options))
    cool = config.thermal_warm_c - config.hysteresis_c - 1
    full = min(100.0, config.battery_low_percent + config.hysteresis_percent + 1)
    charging = draw(st.booleans())
    if which in ("warm", "hot", "critical"):
        top = {"warm": config.thermal_warm_c, "hot": config.thermal_hot_c}.get(
            which, config.thermal_critical_c
        )
        values = st.floats(top - config.hysteresis_c, top).filter(
            lambda t: t > top - config.hysteresis_c
        )
        readings = [
            Readings(full if config.has_battery else None, charging, t)
            for t in draw(st.lists(values, min_size=n, max_size=n))
        ]
    else:
        low = config.battery_low_percent if which == "low" else config.battery_critical_percent
        values = st.floats(low, low + config.hysteresis_percent).filter(
            lambda p: p < low + config.hysteresis_percent and 0 <= p <= 100
        )
        readings = [
            Readings(p, charging, cool) for p in draw(st.lists(values, min_size=n, max_size=n))
        ]
    return config, readings, start, steps


@settings(max_examples=300, deadline=None)
@given(band_trace())
def test_a_reading_inside_a_hysteresis_band_switches_at_most_once(
    case: tuple[PolicyConfig, list[Readings], str, list[float]],
) -> None:
    config, readings, start, steps = case
    assert switches(start, run(config, readings, start, steps)) <= 1


@st.composite
def worsening(draw: st.DrawFn) -> tuple[PolicyConfig, list[Readings], list[float]]:
    """Battery never rising, temperature never falling, charging fixed."""
    config = draw(configs())
    n = draw(st.integers(1, 40))
    battery = sorted(draw(st.lists(st.floats(0, 100), min_size=n, max_size=n)), reverse=True)
    temps = sorted(draw(st.lists(st.floats(20, 120), min_size=n, max_size=n)))
    charging = draw(st.booleans())
    steps = draw(st.lists(st.floats(0, 600), min_size=n, max_size=n))
    readings = [
        Readings(b if config.has_battery else None, charging, t)
        for b, t in zip(battery, temps, strict=True)
    ]
    return config, readings, steps


@settings(max_examples=300, deadline=None)
@given(worsening())
def test_the_rung_never_rises_while_battery_falls_and_temperature_rises(
    case: tuple[PolicyConfig, list[Readings], list[float]],
) -> None:
    config, readings, steps = case
    start = config.ladder[0]
    levels = [config.ladder.index(d.rung) for d in run(config, readings, start, steps)]
    assert levels == sorted(levels)


@settings(max_examples=300, deadline=None)
@given(
    configs(),
    st.data(),
    st.floats(0, 3600),
    st.one_of(st.none(), st.floats(0, 100)),
    st.booleans(),
)
def test_a_critical_temperature_reaches_the_lowest_rung_in_one_decision(
    config: PolicyConfig,
    data: st.DataObject,
    dwell: float,
    battery: float | None,
    charging: bool,
) -> None:
    start = data.draw(st.sampled_from(config.ladder))
    override = data.draw(st.one_of(st.none(), st.sampled_from(config.ladder)))
    temp = data.draw(
        st.floats(config.thermal_critical_c, 150).filter(lambda t: t > config.thermal_critical_c)
    )
    decision = decide(
        Readings(battery, charging, temp), PolicyState(start, dwell, override), config
    )
    assert decision.rung == config.ladder[-1] == "suspend"
    assert decision.reason == "thermal_critical"
    assert decision.urgent == (start != "suspend")


@settings(max_examples=300, deadline=None)
@given(configs(has_battery=False), st.data())
def test_a_board_without_battery_is_never_demoted_for_lack_of_one(
    config: PolicyConfig, data: st.DataObject
) -> None:
    start = data.draw(st.sampled_from(config.ladder))
    cool = data.draw(st.floats(-40, config.thermal_warm_c - config.hysteresis_c))
    charging = data.draw(st.one_of(st.none(), st.booleans()))
    decision = decide(Readings(None, charging, cool), PolicyState(start, 1e9), config)
    assert decision.rung == config.ladder[0]
    assert not decision.reason.startswith("battery")


def test_examples() -> None:
    config = PolicyConfig(
        ladder=LADDER,
        has_battery=True,
        battery_low_percent=30,
        battery_critical_percent=15,
        hysteresis_percent=5,
        thermal_warm_c=70,
        thermal_hot_c=80,
        thermal_critical_c=90,
        hysteresis_c=3,
        min_dwell_s=30,
    )
    ok = Readings(80, False, 40)
    assert decide(ok, PolicyState("full"), config) == Decision("full", "steady")
    assert decide(Readings(25, False, 40), PolicyState("full"), config).rung == "balanced"
    assert decide(Readings(10, False, 40), PolicyState("full"), config).rung == "economy"
    # charging relaxes: low is ignored, critical only steps down once
    assert decide(Readings(25, True, 40), PolicyState("full"), config).rung == "full"
    assert decide(Readings(10, True, 40), PolicyState("full"), config).rung == "balanced"
    assert decide(Readings(40, False, 75), PolicyState("full"), config).rung == "balanced"
    assert decide(Readings(40, False, 85), PolicyState("full"), config).rung == "economy"
    # going up waits for the dwell time, then goes straight to what the readings allow
    assert decide(ok, PolicyState("economy", 10), config) == Decision("economy", "dwell")
    assert decide(ok, PolicyState("economy", 30), config) == Decision("full", "recovered")
    # unknown readings are conservative: one rung down
    unknown_battery = Readings(None, None, 40)
    assert decide(unknown_battery, PolicyState("full"), config).reason == "battery_unknown"
    partial = Readings(80, False, 40, thermal_complete=False)
    assert decide(partial, PolicyState("full"), config) == Decision("balanced", "thermal_unknown")
    # override holds, except against a critical temperature
    assert decide(Readings(5, False, 85), PolicyState("full", 0, "full"), config).rung == "full"
    assert decide(Readings(80, False, 95), PolicyState("full", 0, "full"), config).urgent
