"""Commands from ``<base>/cmd/<name>``: validated here, or answered with an ``error`` event.

A payload is a JSON object (schema: ``docs/mqtt/v1/cmd-<name>.schema.json``),
or, for the controls Home Assistant drives and for push-to-talk, a plain word:

=========  ============================================  =====================
command    JSON object                                   plain word
=========  ============================================  =====================
ask        ``{"text": "...", "max_new_tokens": 64,       —
           "look": false}``
listen     ``{"action": "start" | "stop"}``              ``start``, ``stop``
tier       ``{"tier": "auto" | "<tier name>"}``          the tier (select)
mute       ``{"muted": true | false}``                   ``ON``, ``OFF`` (switch)
reset      ``{}``                                        ``PRESS`` (button)
task       ``{"task": "translate", "target_language":    —
           "de"}``, ``{"task": "describe", "enabled":
           true}``
=========  ============================================  =====================

Every JSON form may carry ``request_id`` (a string, echoed in what the command
causes). Unknown fields, wrong types, invalid UTF-8, oversized payloads and
unknown command names are errors; an error changes nothing.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from edgeagent.events import (
    Ask,
    Command,
    Event,
    Listen,
    Mute,
    ReplyTo,
    Reset,
    SetTask,
    SetTier,
    error_event,
)
from edgeagent.publish.topics import COMMANDS
from edgeagent.settings import Name

LanguageTag = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", max_length=35)
]
"""A BCP 47 language tag such as ``de``, ``pt-BR`` or ``zh-Hans``."""

_MAX_RESPONSE_TOPIC = 1024


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    request_id: str | None = Field(None, min_length=1, max_length=128)


class AskPayload(_Payload):
    text: str = Field(min_length=1, max_length=8192)
    max_new_tokens: int | None = Field(None, ge=1, le=1024)
    look: bool = False


class ListenPayload(_Payload):
    action: Literal["start", "stop"]


class TierPayload(_Payload):
    tier: Name


class MutePayload(_Payload):
    muted: bool


class ResetPayload(_Payload):
    pass


class TaskPayload(_Payload):
    task: Literal["assistant", "transcribe", "translate", "describe"]
    target_language: LanguageTag | None = None
    enabled: bool = True  # describe only

    @model_validator(mode="after")
    def _target_only_for_translate(self) -> Self:
        if self.task == "translate" and self.target_language is None:
            raise ValueError("translate needs target_language")
        if self.task != "translate" and self.target_language is not None:
            raise ValueError(f"{self.task} takes no target_language")
        if self.task != "describe" and "enabled" in self.model_fields_set:
            raise ValueError(f"{self.task} takes no enabled (only describe does)")
        return self


PAYLOADS: dict[str, type[_Payload]] = {
    "ask": AskPayload,
    "listen": ListenPayload,
    "tier": TierPayload,
    "mute": MutePayload,
    "reset": ResetPayload,
    "task": TaskPayload,
}
assert tuple(PAYLOADS) == COMMANDS

_WORDS: dict[str, dict[str, dict[str, Any]]] = {
    "listen": {"start": {"action": "start"}, "stop": {"action": "stop"}},
    "mute": {"ON": {"muted": True}, "OFF": {"muted": False}},
    "reset": {"PRESS": {}},
}


def parse_command(
    name: str,
    payload: bytes,
    max_bytes: int,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
) -> Command | Event:
    """The command ``payload`` on ``<base>/cmd/<name>`` asks for, or the error event to send."""
    if response_topic is not None and not _valid_response_topic(response_topic):
        message = "response topic is empty, too long, starts with $ or has wildcards"
        return error_event("invalid_response_topic", message, name[:64])
    reply = ReplyTo(None, response_topic, correlation_data)
    fields = _decode(name, payload, max_bytes)
    if isinstance(fields, tuple):
        code, message = fields
        return error_event(code, message, name if name in PAYLOADS else None, reply)
    request_id = fields.get("request_id")
    if isinstance(request_id, str) and 0 < len(request_id) <= 128:
        reply = ReplyTo(request_id, response_topic, correlation_data)
    try:
        model = PAYLOADS[name].model_validate(fields)
    except ValidationError as exc:
        return error_event("invalid_payload", _summary(exc), name, reply)
    return _command(model, reply)


def _decode(name: str, payload: bytes, max_bytes: int) -> dict[str, Any] | tuple[str, str]:
    """The payload's fields, or (error code, message)."""
    if name not in PAYLOADS:
        return "unknown_command", f"unknown command {name[:64]!r}; known: {', '.join(COMMANDS)}"
    if len(payload) > max_bytes:
        return "payload_too_large", f"payload of {len(payload)} bytes exceeds {max_bytes}"
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "invalid_payload", "payload is not UTF-8"
    fields = _fields(name, text)
    return ("invalid_payload", fields) if isinstance(fields, str) else fields


def _fields(name: str, text: str) -> dict[str, Any] | str:
    """The payload as a JSON object's fields, or why it is not one."""
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return f"invalid JSON: {str(exc)[:120]}"
        if not isinstance(value, dict):
            return "payload must be a JSON object"
        return value
    if name == "tier" and text and not text.startswith(("[", '"')):
        return {"tier": text}
    if text in _WORDS.get(name, {}):
        return dict(_WORDS[name][text])
    words = ", ".join(_WORDS.get(name, {}))
    return f"payload must be a JSON object{f' or one of: {words}' if words else ''}"


def _command(model: _Payload, reply: ReplyTo) -> Command:
    if isinstance(model, AskPayload):
        return Ask(
            text=model.text, max_new_tokens=model.max_new_tokens, look=model.look, reply=reply
        )
    if isinstance(model, ListenPayload):
        return Listen(start=model.action == "start", reply=reply)
    if isinstance(model, TierPayload):
        return SetTier(tier=model.tier, reply=reply)
    if isinstance(model, MutePayload):
        return Mute(muted=model.muted, reply=reply)
    if isinstance(model, TaskPayload):
        return SetTask(task=model.task, target_language=model.target_language,
                       enabled=model.enabled, reply=reply)  # fmt: skip
    return Reset(reply=reply)


def _summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"[:300]


def _valid_response_topic(topic: str) -> bool:
    wildcards = any(c in topic for c in "+#\x00")
    return 0 < len(topic) <= _MAX_RESPONSE_TOPIC and not wildcards and not topic.startswith("$")
