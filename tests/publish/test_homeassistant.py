"""Home Assistant: device discovery, re-announcement, and the controls it drives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .conftest import daemon_settings, until
from .mqtt_helpers import Mosquitto, Subscriber

BASE = "edgeagent/testdev"
DISCOVERY = "homeassistant/device/testdev/config"
STATE = f"{BASE}/state"


def latest_state(sub: Subscriber) -> dict[str, Any]:
    payloads = sub.payloads(STATE)
    return payloads[-1] if payloads else {}


async def test_discovery_and_controls(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = daemon_settings(short_tmp / "state", mosquitto.port, model={"path": str(tiny_model)})
    daemon = daemons(settings)
    await daemon.start()
    ha = Subscriber(mosquitto.port, [DISCOVERY, STATE, f"{BASE}/event", f"{BASE}/availability"])
    subscribers.append(ha)
    await until(lambda: bool(ha.on(DISCOVERY)), 10, "the discovery config")

    config = ha.payloads(DISCOVERY)[0]
    late = Subscriber(mosquitto.port, [DISCOVERY])
    subscribers.append(late)
    await until(lambda: bool(late.on(DISCOVERY)), 10, "the retained discovery config")
    assert late.on(DISCOVERY)[0].retain and late.payloads(DISCOVERY)[0] == config
    assert config["device"]["identifiers"] == ["edgeagent_testdev"]
    assert config["origin"]["name"] == "edgeagent"
    assert config["availability"][0]["topic"] == f"{BASE}/availability"
    components = config["components"]
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    platforms = {key: c["platform"] for key, c in components.items()}
    assert platforms == {
        "battery": "sensor", "temperature": "sensor", "tier_running": "sensor",
        "decode_speed": "sensor", "memory": "sensor", "outbox": "sensor",
        "utterance": "event", "tier": "select", "mute": "switch", "reset": "button",
    }  # fmt: skip
    assert components["tier"]["options"] == ["auto", "full", "e2b"]
    await until(lambda: "online" in ha.payloads(f"{BASE}/availability"), 10, "online")

    # Home Assistant restarts: its birth message brings the discovery again.
    ha.publish("homeassistant/status", "online")
    await until(lambda: len(ha.on(DISCOVERY)) >= 2, 10, "discovery again")
    assert ha.payloads(DISCOVERY)[1] == config

    # The select sends its option.
    select = components["tier"]
    ha.publish(select["command_topic"], "e2b")
    await until(lambda: latest_state(ha).get("tier_setting") == "e2b", 10, "tier e2b")
    assert latest_state(ha)["tier"] == "e2b"
    ha.publish(select["command_topic"], "auto")
    await until(lambda: latest_state(ha).get("tier_setting") == "auto", 10, "tier auto")
    assert latest_state(ha)["tier"] == "full"

    # The switch sends its payload_on / payload_off.
    switch = components["mute"]
    ha.publish(switch["command_topic"], switch["payload_on"])
    await until(lambda: latest_state(ha).get("muted") is True, 10, "muted")
    ha.publish(switch["command_topic"], switch["payload_off"])
    await until(lambda: latest_state(ha).get("muted") is False, 10, "unmuted")

    # The button resets the conversation; ask first so there is something to reset.
    ha.publish(f"{BASE}/cmd/ask", json.dumps({"text": "hello", "max_new_tokens": 3}))
    await until(lambda: latest_state(ha).get("conversation_turns") == 1, 30, "one turn")
    button = components["reset"]
    ha.publish(button["command_topic"], button["payload_press"])
    await until(lambda: latest_state(ha).get("conversation_turns") == 0, 10, "reset")
    types = [e["event_type"] for e in ha.payloads(f"{BASE}/event")]
    assert types == [
        "tier_changed", "tier_changed", "mute_changed", "mute_changed", "conversation_reset"
    ]  # fmt: skip
    assert await daemon.stop() == 0
    await until(lambda: ha.payloads(f"{BASE}/availability")[-1] == "offline", 10, "offline")


async def test_ask_v5_response_topic_and_311_request_id(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = daemon_settings(short_tmp / "state", mosquitto.port, model={"path": str(tiny_model)})
    daemon = daemons(settings)
    await daemon.start()
    v5 = Subscriber(mosquitto.port, ["replies/me", f"{BASE}/answer"])
    v311 = Subscriber(mosquitto.port, [f"{BASE}/answer", f"{BASE}/event"], protocol=paho.MQTTv311)
    subscribers += [v5, v311]

    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/me"
    props.CorrelationData = b"\x00corr-1"
    v5.publish(f"{BASE}/cmd/ask", json.dumps({"text": "hi", "max_new_tokens": 4}), properties=props)
    await until(lambda: bool(v5.on("replies/me")), 30, "the answer on the response topic")
    reply = v5.on("replies/me")[0]
    assert reply.correlation == b"\x00corr-1"
    assert reply.payload["text"] == v5.payloads(f"{BASE}/answer")[0]["text"]
    assert 1 <= reply.payload["tokens"] <= 4 and reply.payload["tier"] == "full"

    v311.publish(f"{BASE}/cmd/ask", json.dumps({"text": "hey", "request_id": "r-42"}))
    await until(
        lambda: any(a.get("request_id") == "r-42" for a in v311.payloads(f"{BASE}/answer")),
        30,
        "the answer echoing request_id",
    )
    v311.publish(f"{BASE}/cmd/tier", json.dumps({"tier": "e9b", "request_id": "r-43"}))
    await until(lambda: bool(v311.payloads(f"{BASE}/event")), 10, "the error event")
    error = v311.payloads(f"{BASE}/event")[0]
    assert error["event_type"] == "error" and error["code"] == "invalid_tier"
    assert error["request_id"] == "r-43" and "e2b" in error["message"]
    assert await daemon.stop() == 0


async def test_ask_without_a_model_is_an_error(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons
) -> None:  # type: ignore[no-untyped-def]
    daemon = daemons(daemon_settings(short_tmp / "state", mosquitto.port))
    await daemon.start()
    sub = Subscriber(mosquitto.port, [f"{BASE}/event"])
    subscribers.append(sub)
    sub.publish(f"{BASE}/cmd/ask", json.dumps({"text": "hi", "request_id": "q1"}))
    await until(lambda: bool(sub.payloads(f"{BASE}/event")), 10, "the error")
    error = sub.payloads(f"{BASE}/event")[0]
    assert (error["code"], error["command"], error["request_id"]) == ("no_model", "ask", "q1")
    assert await daemon.stop() == 0
