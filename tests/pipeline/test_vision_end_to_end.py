"""Camera frames in through the video-file source, results out on a real mosquitto (issue 9).

Must-show 3: the daemon (a real ``edgeagent run`` subprocess) plays
``tests/fixtures/video/scene_cuts.avi`` (three cuts, at frames 30, 60 and 90,
steady shots with noise, flicker and shake between them) at its own pace; it
publishes one ``scene_change`` event for the first frame and one per cut, none
for the steady frames; ``cmd/ask`` with ``"look": true`` is answered from a
prompt holding 256 image soft tokens (``image_tokens``, counted in the
daemon's conversation: a second look holds 512).

The checkpoint is tiny and random, so the words are noise; what is checked is
the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.capture_video.conftest import VIDEO, video_truth
from tests.publish.conftest import daemon_settings, until
from tests.publish.mqtt_helpers import Mosquitto, Subscriber

BASE = "edgeagent/testdev"
TOPICS = [f"{BASE}/{t}" for t in ("event", "answer", "vision")]


def camera(**overrides: Any) -> dict[str, Any]:
    """The committed video as the camera, played at its own 10 frames/s, every frame offered."""
    truth = video_truth()
    return {"source": "file", "device": str(VIDEO), "file_realtime": True,
            "max_fps": float(truth["fps"]), **overrides}  # fmt: skip


def events(sub: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [p for p in sub.payloads(f"{BASE}/event") if p and p["event_type"] == kind]


def finals(sub: Subscriber, request_id: str) -> list[dict[str, Any]]:
    return [
        p
        for p in sub.payloads(f"{BASE}/answer")
        if p and p["final"] and p.get("request_id") == request_id
    ]


def errors(sub: Subscriber, request_id: str) -> list[dict[str, Any]]:
    return [p for p in events(sub, "error") if p.get("request_id") == request_id]


def ask(sub: Subscriber, request_id: str, **fields: Any) -> None:
    payload = {"text": "What do you see?", "max_new_tokens": 8, "request_id": request_id, **fields}
    sub.publish(f"{BASE}/cmd/ask", json.dumps(payload))


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def daemon_process(
    short_tmp: Path, clean_env: Any
) -> Iterator[list[subprocess.Popen[bytes]]]:  # fmt: skip
    """Daemon subprocesses a test starts; killed at the end if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_look_and_scene_changes_through_a_daemon_process(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], voice_model: Path,
    daemon_process: list[subprocess.Popen[bytes]], clean_env: Any,
) -> None:  # fmt: skip
    started = time.monotonic()
    config = write_config(short_tmp / "edgeagent.toml", {
        "daemon": {"state_dir": str(short_tmp / "state"), "shutdown_timeout_s": 5.0},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "device_id": "testdev",
                 "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5},
        "model": {"path": str(voice_model), "max_context": 2048},
        "audio": {"enabled": False},
        "voice": {"max_new_tokens": 8, "partial_interval_ms": 0},
        "camera": camera(),
    })  # fmt: skip
    sub = Subscriber(mosquitto.port, TOPICS)
    subscribers.append(sub)
    log = short_tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeagent", "run", "--config", str(config),
             "--log-format", "text"],
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    daemon_process.append(proc)

    def alive(what: str) -> None:
        assert proc.poll() is None, f"the daemon exited ({what}):\n{log.read_text()[-3000:]}"

    sub.wait(lambda s: bool(events(s, "scene_change")), 60, "the first frame's scene_change")
    alive("after the first frame")
    ask(sub, "look-1", look=True)
    sub.wait(lambda s: bool(finals(s, "look-1") or errors(s, "look-1")), 30, "the first look")
    assert not errors(sub, "look-1"), errors(sub, "look-1")
    first = finals(sub, "look-1")[0]
    assert first["image_tokens"] == 256  # <start_of_image> 256 soft tokens <end_of_image>
    assert first["tokens"] >= 1 and len(first["frame_id"]) == 32
    ask(sub, "look-2", look=True)
    sub.wait(lambda s: bool(finals(s, "look-2") or errors(s, "look-2")), 30, "the second look")
    second = finals(sub, "look-2")[0]
    assert second["image_tokens"] == 512, "both images are in the conversation (budget 3)"
    assert second["frame_id"] != first["frame_id"]
    ask(sub, "plain")  # a question without looking: the images are still in its prompt
    sub.wait(lambda s: bool(finals(s, "plain")), 30, "the plain answer")
    assert finals(sub, "plain")[0]["image_tokens"] == 512
    assert "frame_id" not in finals(sub, "plain")[0]

    sub.wait(lambda s: bool(events(s, "camera_source_ended")), 30, "the end of the video")
    alive("at the end of the video")
    changes = events(sub, "scene_change")
    truth = video_truth()
    assert [(e["frame_index"], e["reason"]) for e in changes] == [
        (0, "first"), *[(cut, "scene_change") for cut in truth["cuts"]]
    ]  # fmt: skip
    assert all(e["score"] >= 0.25 for e in changes[1:])
    assert [e["at_s"] for e in changes] == pytest.approx(
        [e["frame_index"] / truth["fps"] for e in changes], abs=1e-6
    )
    assert len({e["frame_id"] for e in changes}) == len(changes)

    # the video has ended: looking now fails at once with a clear error; the daemon carries on
    ask(sub, "late", look=True)
    sub.wait(lambda s: bool(errors(s, "late") or finals(s, "late")), 15, "the late look's error")
    late = errors(sub, "late")
    assert late and late[0]["code"] == "no_camera" and late[0]["command"] == "ask", late
    assert "ended" in late[0]["message"]
    alive("after the late look")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert not sub.invalid, sub.invalid
    print(f"vision end-to-end: {time.monotonic() - started:.1f} s")  # -s shows it


# -- in-process daemons: bad input, no camera, the describe task ---------------------------


async def test_a_malformed_look_is_rejected_and_changes_nothing(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
) -> None:  # fmt: skip
    daemon = daemons(daemon_settings(short_tmp / "state", mosquitto.port))
    sub = Subscriber(mosquitto.port, TOPICS)
    subscribers.append(sub)
    await daemon.start()
    bad = {
        "str": {"text": "hi", "look": "yes", "request_id": "str"},
        "int": {"text": "hi", "look": 1, "request_id": "int"},
        "null": {"text": "hi", "look": None, "request_id": "null"},
        "describe-str": {"task": "describe", "enabled": "on", "request_id": "describe-str"},
        "enabled-elsewhere": {"task": "assistant", "enabled": True,
                              "request_id": "enabled-elsewhere"},
    }  # fmt: skip
    for payload in bad.values():
        command = "task" if "task" in payload else "ask"
        await asyncio.to_thread(sub.publish, f"{BASE}/cmd/{command}", json.dumps(payload))
    await asyncio.to_thread(
        sub.wait, lambda s: all(errors(s, name) for name in bad), 30, "five errors"
    )
    for name in bad:
        (error,) = errors(sub, name)
        assert error["code"] == "invalid_payload", error
    assert "look" in errors(sub, "str")[0]["message"]
    assert "enabled" in errors(sub, "describe-str")[0]["message"]
    assert "enabled" in errors(sub, "enabled-elsewhere")[0]["message"]
    assert not events(sub, "task_changed")
    assert await daemon.stop() == 0


async def test_look_without_a_camera_is_an_error_and_the_daemon_answers_on(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    settings = daemon_settings(
        short_tmp / "state", mosquitto.port,
        model={"path": str(voice_model), "max_context": 1024},
        audio={"enabled": False}, camera={"enabled": False},
        voice={"max_new_tokens": 6, "partial_interval_ms": 0},
    )  # fmt: skip
    daemon = daemons(settings)
    sub = Subscriber(mosquitto.port, TOPICS)
    subscribers.append(sub)
    await daemon.start()
    assert "vision" not in daemon.supervisor.states  # camera.enabled = false: no stage
    await asyncio.to_thread(ask, sub, "look", look=True)
    await asyncio.to_thread(sub.wait, lambda s: bool(errors(s, "look")), 15, "the error")
    (error,) = errors(sub, "look")
    assert error["code"] == "no_camera" and error["command"] == "ask"
    assert "camera.enabled" in error["message"]
    await asyncio.to_thread(ask, sub, "after")
    await asyncio.to_thread(sub.wait, lambda s: bool(finals(s, "after")), 30, "an answer")
    answer = finals(sub, "after")[0]
    assert answer["image_tokens"] == 0 and answer["tokens"] >= 1
    assert not finals(sub, "look"), "a failed look opens no turn"
    assert daemon.supervisor.services["assistant"].turns == 1  # type: ignore[attr-defined]
    assert await daemon.stop() == 0


async def test_look_with_a_text_only_checkpoint_is_an_error_naming_the_encoder(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    tiny_model: Path,
) -> None:  # fmt: skip
    settings = daemon_settings(
        short_tmp / "state", mosquitto.port, model={"path": str(tiny_model)},
        audio={"enabled": False}, camera=camera(),
    )  # fmt: skip
    daemon = daemons(settings)
    sub = Subscriber(mosquitto.port, TOPICS)
    subscribers.append(sub)
    await daemon.start()
    vision = daemon.supervisor.states["vision"]
    await until(lambda: vision.phase == "finished", 15, "the idle vision stage")
    await asyncio.to_thread(ask, sub, "look", look=True)
    await asyncio.to_thread(sub.wait, lambda s: bool(errors(s, "look")), 15, "the error")
    (error,) = errors(sub, "look")
    assert error["code"] == "no_camera" and "no vision encoder" in error["message"]
    assert not events(sub, "scene_change"), "the camera is not even opened"
    assert await daemon.stop() == 0


async def test_describe_task_publishes_a_description_per_frame_sent_on(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons: Any,
    voice_model: Path,
) -> None:  # fmt: skip
    settings = daemon_settings(
        short_tmp / "state", mosquitto.port,
        model={"path": str(voice_model), "max_context": 1024},
        audio={"enabled": False}, camera=camera(describe_max_tokens=12),
    )  # fmt: skip
    daemon = daemons(settings)
    sub = Subscriber(mosquitto.port, [*TOPICS, f"{BASE}/state"])
    subscribers.append(sub)
    await daemon.start()
    await asyncio.to_thread(sub.wait, lambda s: bool(events(s, "scene_change")), 30, "frame 0")
    service = daemon.supervisor.services["assistant"]
    await until(lambda: service.sight.latest is not None, 15, "frame 0 encoded")  # type: ignore[attr-defined]
    assert not sub.payloads(f"{BASE}/vision"), "describe is off until asked for"
    task = {"task": "describe", "request_id": "describe-on"}
    await asyncio.to_thread(sub.publish, f"{BASE}/cmd/task", json.dumps(task))
    await asyncio.to_thread(sub.wait, lambda s: bool(events(s, "task_changed")), 15, "task_changed")
    (changed,) = events(sub, "task_changed")
    assert changed["task"] == "describe" and changed["enabled"] is True
    assert changed["request_id"] == "describe-on"
    await asyncio.to_thread(
        sub.wait, lambda s: bool(events(s, "camera_source_ended")), 30, "the end of the video"
    )
    vision = daemon.supervisor.states["vision"]
    await until(lambda: vision.phase == "finished", 30, "the vision stage's last description")
    cuts = [e for e in events(sub, "scene_change") if e["reason"] == "scene_change"]
    assert [e["frame_index"] for e in cuts] == video_truth()["cuts"]
    await asyncio.to_thread(
        sub.wait, lambda s: len(s.payloads(f"{BASE}/vision")) >= len(cuts), 15, "descriptions"
    )
    described = sub.payloads(f"{BASE}/vision")
    # every cut after the task was switched on is described, once, under its event's frame_id
    assert [d["frame_id"] for d in described] == [e["frame_id"] for e in cuts]
    assert all(isinstance(d["description"], str) and d["description"] for d in described)
    assert all(isinstance(d["tags"], list) for d in described)
    states = [p for p in sub.payloads(f"{BASE}/state") if p]
    assert states[-1]["describing"] is True and service.describing is True  # type: ignore[attr-defined]
    assert service.conversation.turns() == []  # type: ignore[attr-defined]  # descriptions stay out
    assert await daemon.stop() == 0
    assert not sub.invalid, sub.invalid
