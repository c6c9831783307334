"""End to end (must-show 2): fake sysfs, real mosquitto, the daemon in process.

The battery drops below the threshold; ``tier_changed`` and the new state
arrive on MQTT within 2 s, and the next answer is produced by the new tier.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgeagent.pipeline.service import AssistantService
from tests.governor.fake_sysfs import CAPACITY, STATUS, FakeSysfs, zone
from tests.publish.conftest import daemon_settings, until
from tests.publish.mqtt_helpers import Mosquitto, Subscriber

BASE = "edgeagent/testdev"


def governed(state_dir: Path, port: int, root: Path, model: Path) -> dict[str, object]:
    return {
        "mqtt": {"state_interval_s": 1},  # readings ride on the periodic refresh
        "model": {
            "path": str(model),
            "allowed_tiers": ["full", "balanced", "e2b", "economy"],
        },
        "governor": {
            "sysfs_root": str(root),
            "poll_s": 0.1,
            "min_dwell_s": 0.0,
            "battery_capacity_path": str(CAPACITY),
            "battery_status_path": str(STATUS),
            "thermal_zone_paths": [str(zone(0))],
            "battery_low_percent": 30,
            "battery_critical_percent": 15,
        },
    }


async def test_battery_low_switches_the_tier_and_the_next_answer(
    short_tmp: Path,
    mosquitto: Mosquitto,
    subscribers: list[Subscriber],
    daemons,  # type: ignore[no-untyped-def]
    tiny_model: Path,
) -> None:
    sysfs = FakeSysfs(short_tmp / "sysfs")
    sysfs.battery(80)
    sysfs.temperature(45.0)
    overrides = governed(short_tmp / "state", mosquitto.port, sysfs.root, tiny_model)
    settings = daemon_settings(short_tmp / "state", mosquitto.port, **overrides)
    daemon = daemons(settings)
    await daemon.start()
    sub = Subscriber(mosquitto.port, [f"{BASE}/event", f"{BASE}/state", f"{BASE}/answer"])
    subscribers.append(sub)
    assistant = daemon.supervisor.services["assistant"]
    assert isinstance(assistant, AssistantService)
    # the tiny checkpoint offers no published "balanced" plan: that rung is dropped
    assert assistant.ladder is not None
    assert assistant.ladder.names == ("full", "e2b", "economy", "suspend")

    def state() -> dict[str, object]:
        payloads = sub.payloads(f"{BASE}/state")
        return payloads[-1] if payloads else {}

    await until(lambda: state().get("battery_percent") == 80, 10, "the first readings")
    assert state()["tier"] == "full" and state()["tiers"] == ["auto", "full", "e2b", "economy"]
    assert state()["temperature_c"] == 45.0 and state()["charging"] is False

    sysfs.battery(22)
    crossed = time.monotonic()
    await until(
        lambda: any(p["event_type"] == "tier_changed" for p in sub.payloads(f"{BASE}/event")),
        2.0,
        "tier_changed within 2 s",
    )
    await until(lambda: state().get("tier") == "e2b", 2.0 - (time.monotonic() - crossed), "state")
    event = next(p for p in sub.payloads(f"{BASE}/event") if p["event_type"] == "tier_changed")
    assert event["tier"] == "e2b" and event["previous"] == "full"
    assert event["reason"] == "governor" and event["cause"] == "battery_low"
    assert event["readings"]["battery_percent"] == 22
    assert state()["battery_percent"] == 22

    sub.publish(f"{BASE}/cmd/ask", json.dumps({"text": "Hello", "max_new_tokens": 4}))
    await until(lambda: bool(sub.payloads(f"{BASE}/answer")), 30, "the answer")
    assert sub.payloads(f"{BASE}/answer")[0]["tier"] == "e2b"
    assert assistant.model is not None and assistant.conversation is not None
    assert assistant.conversation.state.tier == assistant.model.tier("e2b")

    # a manual override holds against the battery; "auto" gives control back
    sub.publish(f"{BASE}/cmd/tier", "full")
    await until(lambda: state().get("tier") == "full", 10, "the override")
    sysfs.battery(10)
    await until(lambda: state().get("battery_percent") == 10, 10, "readings under override")
    assert state()["tier"] == "full"
    sub.publish(f"{BASE}/cmd/tier", "auto")
    await until(lambda: state().get("tier") == "economy", 10, "the governor again")

    # a critical temperature beats everything, at once
    sysfs.temperature(95.0)
    await until(lambda: state().get("tier") == "suspend", 2, "suspend")
    assert state()["tiers"] == ["auto", "full", "e2b", "economy"]


async def test_without_a_model_the_governor_still_publishes_readings(
    short_tmp: Path,
    mosquitto: Mosquitto,
    subscribers: list[Subscriber],
    daemons,  # type: ignore[no-untyped-def]
) -> None:
    sysfs = FakeSysfs(short_tmp / "sysfs")
    sysfs.battery(64, "Charging")
    sysfs.temperature(51.5)
    overrides = governed(short_tmp / "state", mosquitto.port, sysfs.root, Path("unused"))
    overrides["model"] = {}
    daemon = daemons(daemon_settings(short_tmp / "state", mosquitto.port, **overrides))
    await daemon.start()
    sub = Subscriber(mosquitto.port, [f"{BASE}/state"])
    subscribers.append(sub)
    await until(
        lambda: any(p.get("battery_percent") == 64 for p in sub.payloads(f"{BASE}/state")),
        10,
        "the readings",
    )
    state = sub.payloads(f"{BASE}/state")[-1]
    assert state["charging"] is True and state["temperature_c"] == 51.5
    assert state["tier"] is None and state["tiers"] == ["auto"]
