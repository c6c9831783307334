"""``edgeagent demo``: the whole voice pipeline on a bundled clip, nothing to install or download.

What it does, in order:

1. creates (once, in the user cache) a tiny Gemma 3n checkpoint in the
   released multimodal layout — random weights, real structure, a tokenizer;
2. starts the daemon in this process with the embedded broker (mosquitto if
   installed, else the pure-Python amqtt) on a free loopback port, the file
   source playing ``speech.wav`` (two spoken requests, synthesised with
   espeak-ng over light pink noise) and a fresh state directory;
3. subscribes to ``edgeagent/demo/#`` like any MQTT consumer and prints every
   message as it arrives;
4. when the clip has been heard and answered, shuts the daemon down the way
   SIGTERM does and exits 0 — 1 if a stage failed or an utterance got no
   answer.

The weights are random, so the answers are noise; the demo shows the
pipeline (voice activity, streaming audio encoder, the conversation, partial
and final results, the MQTT contract), and says how to point edgeagent at
real Gemma 3n weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from edgeagent.daemon import build_supervisor
from edgeagent.engine.presets import get_preset, write_checkpoint
from edgeagent.pipeline.service import AssistantService
from edgeagent.publish.service import PublishService
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings

_LOGGER = logging.getLogger(__name__)

CLIP = Path(__file__).with_name("speech.wav")
DEVICE = "demo"
BASE = f"edgeagent/{DEVICE}"
PRINTER_ID = f"edgeagent-demo-printer-{os.getpid()}"  # not the daemon's own client id
PRINTER_GRACE_S = 10.0
"""Seconds the printer may take, after the daemon sent its last message, to see it."""
MODEL_DIR = "tiny-multimodal-v1"  # bump when the preset's layout changes


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/edgeagent/demo`` (``~/.cache/edgeagent/demo``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "edgeagent" / "demo"


@dataclass
class DemoOptions:
    """``edgeagent demo`` flags."""

    cache: Path = field(default_factory=default_cache)
    task: str = "assistant"
    target_language: str = "fr"
    realtime: bool = False
    timeout_s: float = 300.0
    kernels: str = "reference"


def demo_model(cache: Path, out: TextIO) -> Path:
    """The demo checkpoint, created on first use (a few seconds)."""
    path = cache / MODEL_DIR
    if (path / "config.json").exists():
        return path
    print(f"creating the tiny demo checkpoint in {path} (once) ...", file=out, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    if path.exists():  # left half-written by an interrupted run
        shutil.rmtree(path)
    write_checkpoint(get_preset("tiny"), path, layout="multimodal", dtype="float32")
    return path


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_settings(options: DemoOptions, model: Path, state_dir: Path, port: int) -> Settings:
    """The daemon's settings for the demo: everything local, the clip as the microphone."""
    return Settings.model_validate(
        {
            "model": {"path": str(model), "kernels": options.kernels, "max_context": 1024},
            "audio": {"source": "file", "file": str(CLIP), "file_realtime": options.realtime},
            "camera": {"enabled": False},  # voice only: never open the machine's webcam
            "voice": {
                "task": options.task,
                "target_language": options.target_language,
                "transcript": True,
                "max_new_tokens": 12,
                "partial_interval_ms": 100,
                "persist_history": False,
                # played faster than real time, the next request may start during an answer
                "barge_in": "cancel" if options.realtime else "queue",
            },
            "mqtt": {"port": port, "device_id": DEVICE, "homeassistant_discovery": False},
            "governor": {"enabled": False},
            "daemon": {"state_dir": str(state_dir), "shutdown_timeout_s": 10.0},
            "logging": {"level": "WARNING"},
        }
    )


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """The whole demo; returns the exit status."""
    return asyncio.run(_demo(options, out))


async def _demo(options: DemoOptions, out: TextIO) -> int:
    said = _truth()
    print("edgeagent demo: the voice pipeline on a bundled clip, with a tiny RANDOM model.",
          file=out)  # fmt: skip
    model = await asyncio.to_thread(demo_model, options.cache, out)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="edgeagent-demo-") as state:
        settings = demo_settings(options, model, Path(state), port)
        supervisor = build_supervisor(settings, Notifier(None))
        publish = supervisor.services["publish"]
        service = supervisor.services["assistant"]
        assert isinstance(publish, PublishService) and isinstance(service, AssistantService)
        print(f"  model:  {model}", file=out)
        print(f"  broker: embedded ({settings.mqtt.embedded_broker}) on 127.0.0.1:{port}", file=out)
        print(f"  clip:   {CLIP.name} says " + " / ".join(f'"{s}"' for s in said), file=out)
        print(
            f"  task:   {options.task}; printing every message on {BASE}/#\n", file=out, flush=True
        )
        started = time.monotonic()
        daemon = asyncio.create_task(supervisor.run(install_signal_handlers=False))
        heard = _Heard()
        printer = asyncio.create_task(_print_messages(port, out, heard))
        try:
            async with asyncio.timeout(options.timeout_s):
                await _wait(daemon, publish.connected.is_set)
                await _wait(daemon, service.voice_done.is_set)
                await _wait(daemon, lambda: publish.outbox.stats.depth == 0)
            # the broker hands the last messages to the printer: on a busy machine that can take
            # longer than the daemon took to send them
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRINTER_GRACE_S):
                    await _wait(daemon, lambda: heard.complete(len(said), options.task))
            await asyncio.sleep(0.2)  # and whatever followed the last result
        except TimeoutError:
            print(f"\ndemo: no result within {options.timeout_s:.0f}s", file=out)
        finally:
            printer.cancel()
            await printer
            supervisor.request_stop()
            status = await daemon
    elapsed = time.monotonic() - started
    ok = status == 0 and heard.complete(len(said), options.task)
    print(f"\n{heard.count} messages in {elapsed:.1f}s; daemon exit status {status}.", file=out)
    print(
        "The weights are random, so the words are noise: the demo shows the pipeline.\n"
        "For real answers, download Gemma 3n (e.g. google/gemma-3n-E2B-it, Hugging Face "
        "layout) onto the device and run\n"
        "    edgeagent run --set model.path=/path/to/gemma-3n-E2B-it\n"
        "or set model.path in /etc/edgeagent/edgeagent.toml (see README: Running on a device).",
        file=out,
    )
    if not ok:
        print(f"demo FAILED: expected speech_start, speech_end and a final {options.task} "
              f"result for each of {len(said)} utterances", file=out)  # fmt: skip
    return 0 if ok else 1


async def _wait(daemon: asyncio.Task[int], predicate: Any) -> None:
    while not predicate():
        if daemon.done():
            raise RuntimeError(f"the daemon stopped early (status {daemon.result()})")
        await asyncio.sleep(0.05)


@dataclass
class _Heard:
    count: int = 0
    kinds: list[str] = field(default_factory=list)

    def show(self, topic: str, raw: bytes, out: TextIO) -> None:
        self.count += 1
        self.kinds.append(_kind(topic, raw))
        print(f"{topic[len(BASE) + 1 :]:<12} {raw.decode(errors='replace')}", file=out, flush=True)

    def complete(self, utterances: int, task: str) -> bool:
        topic = {"assistant": "answer", "transcribe": "transcript", "translate": "translation"}
        return (
            self.kinds.count("speech_start") >= utterances
            and self.kinds.count("speech_end") >= utterances
            and self.kinds.count(f"{topic[task]}:final") >= utterances
        )


async def _print_messages(port: int, out: TextIO, heard: _Heard) -> None:
    """Print every message under ``BASE`` into ``heard`` until cancelled (retrying while the
    broker starts)."""
    try:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", port, identifier=PRINTER_ID) as client:
                    await client.subscribe(f"{BASE}/#", qos=1)
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes) else str(payload).encode()
                        heard.show(str(message.topic), raw, out)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        return


def _kind(topic: str, raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return topic
    leaf = topic.rsplit("/", 1)[-1]
    if leaf == "event" and isinstance(body, dict):
        return str(body.get("event_type"))
    if isinstance(body, dict) and "final" in body:
        return f"{leaf}:{'final' if body['final'] else 'partial'}"
    return leaf


def _truth() -> list[str]:
    meta = json.loads(CLIP.with_suffix(".json").read_text(encoding="utf-8"))
    return [str(u["text"]) for u in meta["utterances"]]
