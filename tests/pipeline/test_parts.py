"""The voice pipeline's small parts: wake-phrase matching, the push-to-talk key reader (real
``input_event`` records through a FIFO), the speak command (a real subprocess), retention."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from edgeagent.errors import ConfigError
from edgeagent.events import Answer, Result, Transcript, Translation
from edgeagent.pipeline.history import expired_turns
from edgeagent.pipeline.keys import EV_KEY, KEY_CODES, PushToTalkKey, key_code
from edgeagent.pipeline.prompts import after_wake_phrase, language_name, spoken_turn_opening
from edgeagent.pipeline.service import AssistantService
from edgeagent.pipeline.speak import Speaker
from edgeagent.pipeline.voice import Voice
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings
from edgeagent.stages import StageContext

EV_SYN = 0


@pytest.mark.parametrize(
    ("transcript", "request_text"),
    [
        ("Hey Gemma, turn on the lights.", "turn on the lights."),
        ("hey, gemma! What time is it?", "What time is it?"),
        ("  HEY GEMMA what's up", "what's up"),
        ("Hey Gemma", ""),
        ("Hey Gemmas are nice", None),
        ("Hello Gemma, lights on", None),
        ("", None),
    ],
)
def test_wake_phrase_opens_the_transcript(transcript: str, request_text: str | None) -> None:
    assert after_wake_phrase(transcript, "hey gemma") == request_text


def test_task_prompts_name_the_language_and_precede_the_audio() -> None:
    opening = spoken_turn_opening("translate", "pt-BR")
    assert opening.startswith("<start_of_turn>user\n") and "Portuguese" in opening
    assert language_name("xx") == "xx"


def event(code: int, value: int) -> bytes:
    """One ``struct input_event`` as the kernel writes it (native longs)."""
    return struct.pack("@llHHi", int(time.time()), 0, EV_KEY, code, value)


async def test_push_to_talk_key_reads_kernel_input_events(tmp_path: Path) -> None:
    fifo = tmp_path / "event0"
    os.mkfifo(fifo)
    changes: list[bool] = []
    key = PushToTalkKey(fifo, "KEY_F13", changes.append)
    task = asyncio.create_task(key.run())
    writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
    other = KEY_CODES["KEY_SPACE"]
    syn = struct.pack("@llHHi", 0, 0, EV_SYN, 0, 0)
    record = event(183, 1)
    # a press split across writes, another key, auto-repeat, then the release
    os.write(writer, record[:10])
    os.write(writer, record[10:] + syn + event(other, 1) + event(183, 2) + syn)
    os.write(writer, event(183, 0) + syn)
    for _ in range(100):
        if len(changes) >= 2:
            break
        await asyncio.sleep(0.02)
    os.close(writer)  # the device goes away: a released key
    for _ in range(100):
        if len(changes) >= 3:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert changes[:3] == [True, False, False]


def test_unknown_key_names_are_config_errors() -> None:
    assert key_code("0x39") == 57 and key_code("key_space") == 57
    with pytest.raises(ConfigError, match="unknown key 'KEY_NOPE'"):
        key_code("KEY_NOPE")


async def test_speaker_reads_chosen_results_through_the_command(tmp_path: Path) -> None:
    spoken = tmp_path / "spoken.txt"
    errors: list[Result] = []
    speaker = Speaker(["sh", "-c", f"cat >> {spoken}"], ["translation"], errors.append)
    runner = asyncio.create_task(speaker.run())
    speaker.offer(Translation(utterance_id="u", text="Bonjour.", final=True,
                              source_language=None, target_language="fr"))  # fmt: skip
    speaker.offer(Answer(utterance_id="u", text="not spoken", final=True, tokens=2,
                         ttft_ms=1.0, tier="full"))  # fmt: skip
    speaker.offer(Transcript(utterance_id="u", text="not spoken either", final=True))
    async with asyncio.timeout(10):
        await speaker.drain()
    runner.cancel()
    assert spoken.read_text() == "Bonjour.\n"
    assert errors == []


async def test_a_failing_speak_command_is_an_error_event() -> None:
    errors: list[Result] = []
    speaker = Speaker(["sh", "-c", "echo no audio device >&2; exit 3"], ["answer"], errors.append)
    await speaker.say("hello")
    missing = Speaker(["/nonexistent/espeak"], ["answer"], errors.append)
    await missing.say("hello")
    bodies = [e.body() for e in errors]
    assert [b["code"] for b in bodies] == ["speak_failed", "speak_failed"]
    assert "exited with 3: no audio device" in bodies[0]["message"]
    assert "/nonexistent/espeak" in bodies[1]["message"]


def test_retention_forgets_surplus_and_old_turns() -> None:
    now = 10_000.0
    times = {1: now - 7200, 2: now - 60, 3: now - 30, 4: now - 10}
    assert expired_turns(times, now, max_turns=10, max_age_s=3600) == [1]
    assert expired_turns(times, now, max_turns=2, max_age_s=3600) == [1, 2]
    assert expired_turns({}, now, max_turns=1, max_age_s=1) == []


def voice_stage(barge_in: str) -> tuple[Any, AssistantService]:
    settings = Settings.model_validate({"voice": {"barge_in": barge_in}})
    service = AssistantService(settings)
    ctx = StageContext(settings, Notifier(None))
    return Voice(ctx, service), service


@pytest.mark.parametrize(("barge_in", "cancelled"), [("cancel", True), ("queue", False)])
async def test_speech_during_an_answer_cancels_or_queues_it(barge_in: str, cancelled: bool) -> None:
    stage, service = voice_stage(barge_in)
    service.generating = True  # an answer is being decoded on the worker thread
    stage._start(1.0, {})
    assert service.cancel_answer.is_set() is cancelled
    assert service.should_stop() is cancelled
    for task in list(stage._tasks):
        task.cancel()
    await asyncio.gather(*stage._tasks, return_exceptions=True)
