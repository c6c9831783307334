"""The conversation survives a restart, obeys its retention bounds, and a reset wipes it
(issue 8, must-show 4; the privacy rules of DESIGN §6)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.pipeline.history import history_path
from edgeagent.pipeline.service import AssistantService
from tests.publish.conftest import daemon_settings
from tests.publish.mqtt_helpers import Mosquitto, Subscriber

BASE = "edgeagent/testdev"


def settings_for(state: Path, port: int, model: Path, **voice: Any) -> Any:
    return daemon_settings(
        state, port,
        model={"path": str(model), "max_context": 1024},
        audio={"enabled": False},
        voice={"max_new_tokens": 6, **voice},
    )  # fmt: skip


async def ask(sub: Subscriber, text: str, n: int) -> dict[str, Any]:
    """Send cmd/ask; wait for its final answer (matched by ``request_id``: delivery is at least
    once, so a restarted daemon may send the previous final again)."""
    request = f"ask-{n}"
    payload = json.dumps({"text": text, "request_id": request})
    await asyncio.to_thread(sub.publish, f"{BASE}/cmd/ask", payload)

    def finals(s: Subscriber) -> list[Any]:
        return [
            p
            for p in s.payloads(f"{BASE}/answer")
            if p and p["final"] and p.get("request_id") == request
        ]

    await asyncio.to_thread(sub.wait, lambda s: bool(finals(s)), 60, f"answer {n}")
    return finals(sub)[0]  # type: ignore[no-any-return]


def saved_ids(state: Path) -> np.ndarray:
    with np.load(history_path(state)) as data:
        return data["ids"].copy()


def service_of(daemon: Any) -> AssistantService:
    service = daemon.supervisor.services["assistant"]
    assert isinstance(service, AssistantService)
    return service


async def test_a_restart_keeps_the_conversation(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    state = short_tmp / "state"
    settings = settings_for(state, mosquitto.port, voice_model)
    sub = Subscriber(mosquitto.port, [f"{BASE}/answer"])
    subscribers.append(sub)
    first = daemons(settings)
    await first.start()
    await ask(sub, "Turn on the lights.", 1)
    before = service_of(first).conversation.ids().copy()  # type: ignore[union-attr]
    assert await first.stop() == 0
    assert np.array_equal(saved_ids(state), before)

    second = daemons(settings)
    await second.start()
    service = service_of(second)
    assert service.turns == 1
    assert np.array_equal(service.conversation.ids(), before)  # type: ignore[union-attr]
    await ask(sub, "What time is it?", 2)
    after = service.conversation.ids()  # type: ignore[union-attr]
    # the second answer's prompt is the first exchange followed by the new turn
    assert np.array_equal(after[: len(before)], before)
    tokenizer = service.model.tokenizer  # type: ignore[union-attr]
    assert "What time is it?" in tokenizer.decode(after[len(before) :])
    assert await second.stop() == 0
    assert np.array_equal(saved_ids(state), after)


async def test_reset_wipes_the_conversation_on_disk(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    state = short_tmp / "state"
    sub = Subscriber(mosquitto.port, [f"{BASE}/answer", f"{BASE}/event"])
    subscribers.append(sub)
    daemon = daemons(settings_for(state, mosquitto.port, voice_model))
    await daemon.start()
    await ask(sub, "Remember the number seven.", 1)
    assert history_path(state).exists()
    await asyncio.to_thread(sub.publish, f"{BASE}/cmd/reset", "{}")
    await asyncio.to_thread(
        sub.wait,
        lambda s: any(p and p["event_type"] == "conversation_reset"
                      for p in s.payloads(f"{BASE}/event")),
        30, "the reset",
    )  # fmt: skip
    assert not history_path(state).exists()
    assert service_of(daemon).turns == 0
    assert await daemon.stop() == 0


async def test_retention_keeps_the_newest_turns(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    state = short_tmp / "state"
    sub = Subscriber(mosquitto.port, [f"{BASE}/answer"])
    subscribers.append(sub)
    daemon = daemons(settings_for(state, mosquitto.port, voice_model, history_max_turns=4))
    await daemon.start()
    questions = ["One apple.", "Two pears.", "Three plums.", "Four figs.", "Five limes."]
    for n, question in enumerate(questions, start=1):
        await ask(sub, question, n)
    service = service_of(daemon)
    text = service.model.tokenizer.decode(saved_ids(state))  # type: ignore[union-attr]
    # at the fifth turn the limit (4) was passed: forgotten down to three quarters of it,
    # so that the cache is rebuilt once every few turns rather than before every turn
    assert "One apple." not in text and "Two pears." not in text
    assert all(q in text for q in questions[2:])
    assert service.turns == 3
    assert await daemon.stop() == 0


async def test_an_unreadable_saved_conversation_is_set_aside(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    state = short_tmp / "state"
    state.mkdir(mode=0o700)
    history_path(state).write_bytes(b"PK\x03\x04 this is not a conversation")
    sub = Subscriber(mosquitto.port, [f"{BASE}/answer"])
    subscribers.append(sub)
    daemon = daemons(settings_for(state, mosquitto.port, voice_model))
    await daemon.start()
    assert (state / "conversation.npz.unreadable").exists()
    answer = await ask(sub, "Are you there?", 1)
    assert answer["final"] is True
    assert await daemon.stop() == 0
