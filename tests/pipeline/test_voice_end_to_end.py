"""Speech in through the file source, results out on a real mosquitto (issue 8, must-show 2).

The checkpoint is tiny and random, so the words are noise; what is checked is
the pipeline: which messages come out, in which order, tied to which utterance,
valid against the published schemas.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.publish.conftest import daemon_settings, until
from tests.publish.mqtt_helpers import Mosquitto, Subscriber

from .conftest import CLIPS

BASE = "edgeagent/testdev"
TOPICS = [f"{BASE}/{t}" for t in ("event", "answer", "transcript", "translation")]


def voice_settings(state: Path, port: int, model: Path, clip: str, **voice: Any) -> Any:
    return daemon_settings(
        state,
        port,
        model={"path": str(model), "max_context": 1024},
        audio={"source": "file", "file": str(CLIPS / clip), "file_realtime": False},
        # the clip plays faster than real time, so the next utterance may start while an
        # answer decodes: queue it (barge-in has its own test)
        voice={"max_new_tokens": 8, "partial_interval_ms": 0, "barge_in": "queue", **voice},
    )


def ordered(sub: Subscriber) -> list[tuple[str, dict[str, Any]]]:
    """Every message of the voice topics, in arrival order: (topic suffix, payload)."""
    return [
        (m.topic.rsplit("/", 1)[1], m.payload)
        for m in list(sub.received)
        if m.topic in TOPICS and m.payload is not None
    ]


def kinds(messages: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = []
    for topic, body in messages:
        if topic == "event":
            if body["event_type"] in ("speech_start", "speech_end"):
                out.append(body["event_type"])
        else:
            out.append(f"{topic}:{'final' if body.get('final') else 'partial'}")
    return out


async def run_clip(daemons: Any, mosquitto: Mosquitto, subscribers: list[Subscriber],
                   settings: Any) -> Subscriber:  # fmt: skip
    daemon = daemons(settings)
    sub = Subscriber(mosquitto.port, TOPICS)
    subscribers.append(sub)
    await daemon.start()
    service = daemon.supervisor.services["assistant"]
    await until(service.voice_done.is_set, 120, "the clip to be processed")
    assert await daemon.stop() == 0
    return sub


async def test_a_clip_yields_speech_events_an_answer_and_a_transcript(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    settings = voice_settings(short_tmp / "state", mosquitto.port, voice_model, "two_clean.wav",
                              transcript=True)  # fmt: skip
    sub = await run_clip(daemons, mosquitto, subscribers, settings)
    await asyncio.to_thread(sub.wait, lambda s: len(kinds(ordered(s))) >= 2 * 6, 30, "results")
    assert not sub.invalid, sub.invalid
    messages = ordered(sub)
    # two utterances in the clip; each: start, end, answer (partials then final), transcript
    starts = [b for t, b in messages if t == "event" and b["event_type"] == "speech_start"]
    ids = [b["utterance_id"] for b in starts]
    assert len(ids) == 2
    for utterance_id in ids:
        mine = [(t, b) for t, b in messages if b.get("utterance_id") == utterance_id]
        sequence = [k for k in kinds(mine) if not k.endswith(":partial")]
        assert sequence == ["speech_start", "speech_end", "answer:final", "transcript:final"]
        partials = [b for t, b in mine if t == "answer" and not b["final"]]
        final = next(b for t, b in mine if t == "answer" and b["final"])
        assert partials, "the first partial answer is published at the first token"
        assert all(final["text"].startswith(p["text"]) for p in partials), (
            [p["text"] for p in partials],
            final["text"],
        )
    end = next(b for t, b in messages if t == "event" and b["event_type"] == "speech_end")
    assert end["hangover_ms"] == 300


async def test_translate_task_yields_a_translation(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    settings = voice_settings(
        short_tmp / "state", mosquitto.port, voice_model, "one_white_5db.wav",
        task="translate", target_language="fr",
    )  # fmt: skip
    sub = await run_clip(daemons, mosquitto, subscribers, settings)
    await asyncio.to_thread(
        sub.wait, lambda s: any(t == "translation" and b["final"] for t, b in ordered(s)), 30,
        "the translation",
    )  # fmt: skip
    assert not sub.invalid, sub.invalid
    messages = ordered(sub)
    start = next(b for t, b in messages if t == "event" and b["event_type"] == "speech_start")
    final = next(b for t, b in messages if t == "translation" and b["final"])
    assert final["utterance_id"] == start["utterance_id"]
    assert final["target_language"] == "fr"
    assert not [t for t, _ in messages if t == "answer"]


async def test_push_to_talk_processes_nothing_until_cmd_listen(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    settings = voice_settings(short_tmp / "state", mosquitto.port, voice_model, "two_clean.wav",
                              activation="push_to_talk")  # fmt: skip
    settings = settings.model_copy(
        update={"audio": settings.audio.model_copy(update={"file_realtime": True,
                                                            "file_loop": True})}
    )  # fmt: skip
    daemon = daemons(settings)
    sub = Subscriber(mosquitto.port, [*TOPICS, f"{BASE}/state"])
    subscribers.append(sub)
    await daemon.start()
    await asyncio.sleep(3.0)  # the clip's first utterance plays: nothing may happen
    assert kinds(ordered(sub)) == []
    await asyncio.to_thread(sub.publish, f"{BASE}/cmd/listen", json.dumps({"action": "start"}))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(sub.publish, f"{BASE}/cmd/listen", json.dumps({"action": "stop"}))
    await asyncio.to_thread(
        sub.wait, lambda s: "answer:final" in kinds(ordered(s)), 60, "the answer"
    )
    assert await daemon.stop() == 0
    assert not sub.invalid, sub.invalid
    sequence = [k for k in kinds(ordered(sub)) if not k.endswith(":partial")]
    assert sequence == ["speech_start", "speech_end", "answer:final"]
    end = next(b for t, b in ordered(sub) if t == "event" and b["event_type"] == "speech_end")
    assert end["reason"] == "released"
    assert 1.0 <= end["end_s"] - end["start_s"] <= 3.0


async def test_wake_phrase_mode_ignores_speech_without_the_phrase(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    # random weights never transcribe "hey gemma": every utterance is heard and then ignored
    settings = voice_settings(short_tmp / "state", mosquitto.port, voice_model, "two_clean.wav",
                              activation="wake_phrase")  # fmt: skip
    sub = await run_clip(daemons, mosquitto, subscribers, settings)
    await asyncio.to_thread(
        sub.wait,
        lambda s: sum(b["event_type"] == "utterance_ignored" for t, b in ordered(s)
                      if t == "event") >= 2,
        30, "two ignored utterances",
    )  # fmt: skip
    assert not sub.invalid, sub.invalid
    messages = ordered(sub)
    ignored = [b for t, b in messages if t == "event" and b["event_type"] == "utterance_ignored"]
    starts = [b for t, b in messages if t == "event" and b["event_type"] == "speech_start"]
    assert [b["utterance_id"] for b in ignored] == [b["utterance_id"] for b in starts]
    assert all(b["reason"] == "no_wake_phrase" for b in ignored)
    assert not [t for t, _ in messages if t in ("answer", "transcript", "translation")]


async def test_shutdown_answers_the_utterance_in_progress(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    settings = voice_settings(short_tmp / "state", mosquitto.port, voice_model, "two_clean.wav")
    settings = settings.model_copy(
        update={"audio": settings.audio.model_copy(update={"file_realtime": True})}
    )
    daemon = daemons(settings)
    sub = Subscriber(mosquitto.port, TOPICS)
    subscribers.append(sub)
    await daemon.start()
    await asyncio.to_thread(sub.wait, lambda s: "speech_start" in kinds(ordered(s)), 30, "speech")
    await asyncio.sleep(0.3)  # mid-sentence: SIGTERM
    assert await daemon.stop() == 0
    sequence = [k for k in kinds(ordered(sub)) if not k.endswith(":partial")]
    assert sequence == ["speech_start", "speech_end", "answer:final"]
    end = next(b for t, b in ordered(sub) if t == "event" and b["event_type"] == "speech_end")
    assert end["reason"] == "shutdown"
