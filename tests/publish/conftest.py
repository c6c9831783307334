"""Fixtures of the MQTT tests: mosquitto on an ephemeral loopback port, the daemon in process."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.config import deep_merge
from edgeagent.daemon import Supervisor, build_supervisor
from edgeagent.events import Result, StateUpdate
from edgeagent.publish.service import PublishService
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings

from .mqtt_helpers import Mosquitto, Subscriber


@pytest.fixture(autouse=True)
def _isolated(no_ambient_settings: None) -> None:
    """No ambient EDGEAGENT_* or systemd variables."""


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory (mosquitto and Unix sockets dislike pytest's long paths)."""
    with tempfile.TemporaryDirectory(prefix="ea-mq-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
def mosquitto(short_tmp: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(short_tmp / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    """Subscribers a test opens; closed at the end, and none may have seen an invalid payload."""
    opened: list[Subscriber] = []
    yield opened
    for sub in opened:
        sub.close()
    for sub in opened:
        assert not sub.invalid, sub.invalid[:3]


async def until(predicate: Callable[[], bool], limit_s: float, what: str) -> None:
    """Poll ``predicate`` on the event loop (the daemon keeps running) for ``limit_s``."""
    try:
        async with asyncio.timeout(limit_s):
            while not predicate():  # noqa: ASYNC110 - paho's thread fills what we wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit_s}s waiting for {what}") from None


def daemon_settings(state_dir: Path, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "daemon": {"state_dir": str(state_dir), "shutdown_timeout_s": 5.0},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "device_id": "testdev",
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.5,
            "connect_timeout_s": 5.0,
        },
    }
    return Settings.model_validate(deep_merge(values, overrides))


class Daemon:
    """The supervisor with the MQTT stages, running in this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.supervisor: Supervisor = build_supervisor(settings, Notifier(None))
        self.task: asyncio.Task[int] | None = None

    @property
    def publish(self) -> PublishService:
        service = self.supervisor.services["publish"]
        assert isinstance(service, PublishService)
        return service

    async def start(self, connected: bool = True) -> None:
        """Run it; with ``connected``, until it is subscribed to its commands and online."""
        self.task = asyncio.create_task(
            self.supervisor.run(install_signal_handlers=False), name="test:daemon"
        )
        await until(
            lambda: self.supervisor.states["mqtt"].phase == "running" or self.task.done(),  # type: ignore[union-attr]
            30,
            "the mqtt stage",
        )
        assert not self.task.done(), self.task.result()
        if connected:
            await until(self.publish.connected.is_set, 30, "the broker connection")

    async def put(self, item: Result | StateUpdate) -> None:
        async with asyncio.timeout(30):
            await self.supervisor.context.channels.results.put(item)

    async def stop(self) -> int:
        assert self.task is not None
        self.supervisor.request_stop()
        async with asyncio.timeout(60):
            return await self.task


@pytest.fixture
async def daemons() -> AsyncIterator[Callable[[Settings], Daemon]]:
    """``daemons(settings)``: a :class:`Daemon`, stopped at the end if the test did not."""
    made: list[Daemon] = []

    def make(settings: Settings) -> Daemon:
        daemon = Daemon(settings)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.task is not None and not daemon.task.done():
            await daemon.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3n checkpoint with a tokenizer (tiers: full, e2b)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run(
        [sys.executable, "-m", "edgeagent", "model", "init", "--preset", "tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out
