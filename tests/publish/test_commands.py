"""Command payloads: what each accepts (JSON and Home Assistant's plain words), and the schemas."""

from __future__ import annotations

import json

import pytest

from edgeagent.events import Ask, Event, Listen, Mute, Reset, SetTask, SetTier
from edgeagent.publish.commands import parse_command
from edgeagent.publish.topics import Topics, default_device_id
from edgeagent.settings import MqttSettings

from .mqtt_helpers import VALIDATORS

VALID = [
    ("ask", {"text": "hi"}, Ask(text="hi")),
    ("ask", {"text": "hi", "max_new_tokens": 8, "request_id": "r"}, None),
    ("listen", {"action": "start"}, Listen(start=True)),
    ("tier", {"tier": "e2b"}, SetTier(tier="e2b")),
    ("mute", {"muted": False}, Mute(muted=False)),
    ("reset", {}, Reset()),
    ("task", {"task": "translate", "target_language": "pt-BR"}, None),
    ("task", {"task": "transcribe"}, SetTask(task="transcribe")),
]


@pytest.mark.parametrize(("name", "fields", "expected"), VALID)
def test_valid_json_commands_match_their_schema(name: str, fields: dict, expected: object) -> None:  # type: ignore[type-arg]
    assert not list(VALIDATORS[f"cmd-{name}"].iter_errors(fields))
    command = parse_command(name, json.dumps(fields).encode(), 4096)
    assert not isinstance(command, Event), command
    if expected is not None:
        assert command == expected
    assert command.reply.request_id == fields.get("request_id")


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("mute", b"ON", Mute(muted=True)),
        ("mute", b"OFF", Mute(muted=False)),
        ("reset", b"PRESS", Reset()),
        ("tier", b"auto", SetTier(tier="auto")),
        ("tier", b" e2b\n", SetTier(tier="e2b")),
        ("listen", b"stop", Listen(start=False)),
    ],
)
def test_plain_words(name: str, payload: bytes, expected: object) -> None:
    assert parse_command(name, payload, 4096) == expected


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("ask", b"what time is it", "invalid_payload"),
        ("ask", b'{"text": ""}', "invalid_payload"),
        ("mute", b'{"muted": "yes"}', "invalid_payload"),
        ("mute", b"on", "invalid_payload"),
        ("reset", b"", "invalid_payload"),
        ("tier", b'"e2b"', "invalid_payload"),
        ("task", b'{"task": "translate"}', "invalid_payload"),
        ("ask", b"\xff\xfe", "invalid_payload"),
        ("ask", b'{"text": "' + b"x" * 5000 + b'"}', "payload_too_large"),
        ("reboot", b"{}", "unknown_command"),
    ],
)
def test_malformed(name: str, payload: bytes, code: str) -> None:
    error = parse_command(name, payload, 4096)
    assert isinstance(error, Event) and error.event_type == "error"
    assert error.data["code"] == code
    assert error.data["command"] == (name if code != "unknown_command" else None)
    body = {"msg_id": "0" * 32, "seq": 1, "ts": "2025-01-01T00:00:00.000Z", **error.body()}
    assert not list(VALIDATORS["event"].iter_errors(body))


def test_response_topic_with_wildcards_is_refused() -> None:
    error = parse_command("mute", b"ON", 4096, response_topic="replies/#")
    assert isinstance(error, Event) and error.data["code"] == "invalid_response_topic"
    assert error.reply.response_topic is None  # nowhere to send it but <base>/event


def test_topics_and_device_id() -> None:
    assert default_device_id("Kitchen Hub.local") == "kitchen-hub"
    assert default_device_id("...") == "edgeagent"
    topics = Topics.from_settings(MqttSettings(device_id="d1", base_topic="home"))
    assert topics.command_name("home/d1/cmd/ask") == "ask"
    assert topics.command_name("home/d2/cmd/ask") is None
    assert topics.command_name("home/d1/cmd/ask/x") is None
    assert topics.client_id == "edgeagent-d1"
    assert topics.discovery == "homeassistant/device/d1/config"
