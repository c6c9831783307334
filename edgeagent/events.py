"""The typed events that flow between stages, and the bounded queues they flow through.

Everything here is a frozen dataclass. Three families:

- **Results** (:class:`Transcript`, :class:`Translation`, :class:`Answer`,
  :class:`VisionResult`, :class:`Event`) leave the device: the publisher writes
  each one to the durable outbox, then sends it to ``<base>/<topic>`` with QoS 1.
  ``body()`` is the JSON object of the MQTT payload without the envelope
  (``msg_id``, ``seq``, ``ts``), which the outbox adds.
- **State updates** (:class:`StateUpdate`) change fields of the retained
  ``<base>/state`` message.
- **Commands** (:class:`Ask`, :class:`Listen`, :class:`SetTier`, :class:`Mute`,
  :class:`Reset`, :class:`SetTask`) arrive validated from ``<base>/cmd/<name>``
  and go to the assistant stage.

A command's :class:`ReplyTo` travels with the results it causes, so an answer
reaches the MQTT v5 response topic (with the correlation data) and echoes the
request's ``request_id``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

JsonObject = Mapping[str, Any]
"""A JSON object: str keys, values of JSON types."""

RESULTS_QUEUE_SIZE = 1024
COMMANDS_QUEUE_SIZE = 64
TIER_REQUESTS_QUEUE_SIZE = 16


def new_id() -> str:
    """A fresh random id (UUID 4, 32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ReplyTo:
    """Who asked: an echoed ``request_id`` and, under MQTT v5, where to send the answer."""

    request_id: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None


NO_REPLY = ReplyTo()


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Result:
    """Something the device learned; published once, at least once, in order."""

    topic: ClassVar[str]
    """Topic under the device's base topic: "answer", "event", ..."""

    ts: float = field(default_factory=time.time)
    """When it happened, seconds since the epoch."""
    reply: ReplyTo = NO_REPLY

    def body(self) -> dict[str, Any]:
        """The JSON payload without the envelope (msg_id, seq, ts); each result type defines it."""
        raise NotImplementedError(f"{type(self).__name__} defines no payload")

    def _with_request(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.reply.request_id is not None:
            body["request_id"] = self.reply.request_id
        return body


@dataclass(frozen=True, kw_only=True)
class Transcript(Result):
    topic: ClassVar[str] = "transcript"
    utterance_id: str
    text: str
    final: bool
    language: str | None = None
    start_s: float | None = None
    end_s: float | None = None

    def body(self) -> dict[str, Any]:
        return self._with_request(
            {
                "utterance_id": self.utterance_id,
                "text": self.text,
                "final": self.final,
                "language": self.language,
                "start_s": self.start_s,
                "end_s": self.end_s,
            }
        )


@dataclass(frozen=True, kw_only=True)
class Translation(Result):
    topic: ClassVar[str] = "translation"
    utterance_id: str
    text: str
    final: bool
    source_language: str | None
    target_language: str

    def body(self) -> dict[str, Any]:
        return self._with_request(
            {
                "utterance_id": self.utterance_id,
                "text": self.text,
                "final": self.final,
                "source_language": self.source_language,
                "target_language": self.target_language,
            }
        )


@dataclass(frozen=True, kw_only=True)
class Answer(Result):
    topic: ClassVar[str] = "answer"
    utterance_id: str
    text: str
    final: bool
    tokens: int
    ttft_ms: float
    tier: str
    decode_tokens_per_s: float | None = None
    stop_reason: str | None = None
    image_tokens: int | None = None
    """cmd/ask: image soft tokens in the prompt the answer was decoded from (counted in the
    conversation); None: not counted (spoken turns)."""
    frame_id: str | None = None
    """cmd/ask with look: the camera frame the question was asked about."""

    def body(self) -> dict[str, Any]:
        body = {
            "utterance_id": self.utterance_id,
            "text": self.text,
            "final": self.final,
            "tokens": self.tokens,
            "ttft_ms": self.ttft_ms,
            "tier": self.tier,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "stop_reason": self.stop_reason,
        }
        if self.image_tokens is not None:
            body["image_tokens"] = self.image_tokens
        if self.frame_id is not None:
            body["frame_id"] = self.frame_id
        return self._with_request(body)


@dataclass(frozen=True, kw_only=True)
class VisionResult(Result):
    topic: ClassVar[str] = "vision"
    frame_id: str
    description: str | None = None
    tags: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        return self._with_request(
            {"frame_id": self.frame_id, "description": self.description, "tags": list(self.tags)}
        )


@dataclass(frozen=True, kw_only=True)
class Event(Result):
    """``{"event_type": ..., **data}`` on ``<base>/event``: speech_start, tier_changed, error, …

    Capture sources report their health as ``audio_source_*`` / ``camera_source_*``
    (:class:`edgeagent.capture.SourceEvent`), the frame gate a new scene as
    ``scene_change`` (:meth:`edgeagent.dsp.frame_gate.GateDecision.data`); docs/mqtt.md
    lists every type and its fields.
    """

    topic: ClassVar[str] = "event"
    event_type: str
    data: JsonObject = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return self._with_request({"event_type": self.event_type, **self.data})


def error_event(
    code: str,
    message: str,
    command: str | None = None,
    reply: ReplyTo = NO_REPLY,
) -> Event:
    """An ``error`` event: ``code`` is machine-readable, ``message`` for people."""
    return Event(
        event_type="error",
        data={"code": code, "message": message, "command": command},
        reply=reply,
    )


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateUpdate:
    """New values for fields of the retained state message (see docs/mqtt.md)."""

    changes: JsonObject


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Command:
    """A validated request from ``<base>/cmd/<name>``."""

    name: ClassVar[str]
    reply: ReplyTo = NO_REPLY


@dataclass(frozen=True, kw_only=True)
class Ask(Command):
    name: ClassVar[str] = "ask"
    text: str
    max_new_tokens: int | None = None
    look: bool = False  # ask about the next camera frame sent on


@dataclass(frozen=True, kw_only=True)
class Listen(Command):
    """Push-to-talk: start or stop listening."""

    name: ClassVar[str] = "listen"
    start: bool


@dataclass(frozen=True, kw_only=True)
class SetTier(Command):
    name: ClassVar[str] = "tier"
    tier: str  # "auto" or a tier name


@dataclass(frozen=True, kw_only=True)
class Mute(Command):
    name: ClassVar[str] = "mute"
    muted: bool


@dataclass(frozen=True, kw_only=True)
class Reset(Command):
    name: ClassVar[str] = "reset"


Task = Literal["assistant", "transcribe", "translate", "describe"]


@dataclass(frozen=True, kw_only=True)
class SetTask(Command):
    name: ClassVar[str] = "task"
    task: Task
    target_language: str | None = None
    enabled: bool = True  # describe: on or off (the speech task is not changed by it)


# -- governor ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TierRequest:
    """The governor's decision, to the assistant: run ``rung`` from the next utterance on.

    ``urgent`` (a critical temperature): apply before anything queued. ``cause``
    is the policy's reason (battery_low, thermal_hot, recovered, ...).
    """

    rung: str
    cause: str
    urgent: bool = False
    readings: JsonObject = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


# -- channels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Channels:
    """The bounded queues between stages; created once per daemon, shared by every stage.

    ``results``: producers → publisher (results and state updates; the publisher
    moves them into the outbox at once, so it is rarely full). ``commands``:
    publisher (from ``<base>/cmd/...``) → assistant. ``tier_requests``: governor →
    assistant.
    """

    results: asyncio.Queue[Result | StateUpdate] = field(
        default_factory=lambda: asyncio.Queue(RESULTS_QUEUE_SIZE)
    )
    commands: asyncio.Queue[Command] = field(
        default_factory=lambda: asyncio.Queue(COMMANDS_QUEUE_SIZE)
    )
    tier_requests: asyncio.Queue[TierRequest] = field(
        default_factory=lambda: asyncio.Queue(TIER_REQUESTS_QUEUE_SIZE)
    )
    # Set with an urgent tier request (a critical temperature): the answer being
    # decoded stops at its next token. Cleared when the request is applied.
    interrupt: threading.Event = field(default_factory=threading.Event)
