"""The supervisor in process: restarts with backoff, drain and cancel, start-up steps."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from edgeagent.daemon import Supervisor, build_supervisor
from edgeagent.errors import ConfigError, DaemonError
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings
from edgeagent.stages import Stage, StageContext, stage_factory

from .fake_stages import CrashingStage, SlowDrainStage
from .notify import NotifySocket


def make_settings(tmp_path: Path, **daemon: object) -> Settings:
    return Settings.model_validate(
        {"daemon": {"state_dir": str(tmp_path / "state"), **daemon}, "mqtt": {"enabled": False}}
    )


async def wait_until(predicate: Callable[[], bool], limit_s: float = 10) -> None:
    """Poll ``predicate`` (supervisor state has no events to wait on) for ``limit_s``."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), limit_s)


async def test_crashing_stage_restarts_with_growing_delays(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    settings = make_settings(
        tmp_path, heartbeat_s=0.05, restart_backoff_initial_s=0.05, restart_backoff_max_s=0.4
    )
    CrashingStage.starts = []
    with Notifier(notify_socket.address) as notifier:
        supervisor = Supervisor(settings, notifier, [("flaky", CrashingStage)])
        run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
        await wait_until(lambda: len(CrashingStage.starts) >= 6)
        assert not run.done(), "the daemon stays up while a stage keeps failing"
        assert supervisor.states["heartbeat"].phase == "running"
        assert supervisor.states["flaky"].restarts >= 5
        # The heartbeat's STATUS line carries the count.
        status = ""
        for _ in range(200):
            message = await asyncio.to_thread(notify_socket.expect, "STATUS", None, 5)
            status = message["STATUS"]
            if re.search(r"flaky=[5-9]", status):
                break
        assert re.search(r"restarts: flaky=[5-9]", status), status
        supervisor.request_stop()
        assert await asyncio.wait_for(run, 10) == 0

    gaps = [b - a for a, b in zip(CrashingStage.starts, CrashingStage.starts[1:], strict=False)]
    # Each start is ~10 ms of work plus the delay: 0.05, 0.1, 0.2, 0.4, 0.4 (capped).
    expected = [0.05, 0.1, 0.2, 0.4, 0.4]
    for gap, delay in zip(gaps, expected, strict=False):
        assert delay <= gap < delay + 0.25, (gaps, expected)
    assert gaps[1] > gaps[0] and gaps[2] > gaps[1] and gaps[3] > gaps[2]


async def test_ready_after_startup_and_stopping_on_stop(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    order: list[str] = []

    async def step(ctx: StageContext) -> None:
        order.append("startup")
        ctx.notifier.extend_timeout(60)

    with Notifier(notify_socket.address) as notifier:
        supervisor = Supervisor(make_settings(tmp_path), notifier, [], startup=[step])
        run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
        assert await asyncio.to_thread(notify_socket.expect, "EXTEND_TIMEOUT_USEC", None, 5)
        ready = await asyncio.to_thread(notify_socket.expect, "READY", "1", 5)
        assert ready["STATUS"].startswith("running; 1/1 stages up")
        supervisor.request_stop()
        assert await asyncio.wait_for(run, 10) == 0
    stopping = notify_socket.expect("STOPPING", "1", timeout=5)
    assert stopping["STATUS"].startswith("stopping")
    assert order == ["startup"]


async def test_failed_startup_is_fatal_and_sends_no_ready(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async def broken(_ctx: StageContext) -> None:
        raise OSError("model file missing")

    with Notifier(notify_socket.address) as notifier:
        supervisor = Supervisor(make_settings(tmp_path), notifier, [], startup=[broken])
        with pytest.raises(DaemonError, match="start-up step broken failed"):
            await asyncio.wait_for(supervisor.run(install_signal_handlers=False), 10)
    assert all("READY" not in m for m in notify_socket.collect(0.1))


async def test_stop_during_startup(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def slow(_ctx: StageContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    supervisor = Supervisor(make_settings(tmp_path), Notifier(None), [], startup=[slow])
    run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
    await asyncio.wait_for(started.wait(), 5)
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 0


class Intake(Stage):
    intake = True
    events: ClassVar[list[str]] = []

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            Intake.events.append(f"intake cancelled, draining={self.ctx.draining.is_set()}")
            raise


class Worker(Stage):
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        await self.ctx.draining.wait()
        await asyncio.sleep(0.05)  # the queued work
        Intake.events.append("worker drained")


async def test_shutdown_stops_intake_then_drains(tmp_path: Path) -> None:
    Intake.events = []
    stages = [("mic", Intake), ("worker", Worker)]
    supervisor = Supervisor(make_settings(tmp_path), Notifier(None), stages)
    run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
    await wait_until(lambda: supervisor.states["worker"].phase == "running")
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 0
    assert Intake.events == ["intake cancelled, draining=False", "worker drained"]
    assert supervisor.states["worker"].phase == "finished"
    assert supervisor.unfinished() == []


async def test_stage_that_does_not_drain_is_cancelled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, shutdown_timeout_s=0.2)
    supervisor = Supervisor(settings, Notifier(None), [("slow", SlowDrainStage)])
    run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
    await wait_until(lambda: supervisor.states["slow"].phase == "running")
    loop = asyncio.get_running_loop()
    begun = loop.time()
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 0
    assert 0.2 <= loop.time() - begun < 3
    assert "stage:slow did not drain within 0.2s; cancelling" in caplog.text
    assert supervisor.states["slow"].phase == "stopped"


async def test_second_stop_forces_exit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, shutdown_timeout_s=600)
    supervisor = Supervisor(settings, Notifier(None), [("slow", SlowDrainStage)])
    run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
    await wait_until(lambda: supervisor.states["slow"].phase == "running")
    supervisor.request_stop()
    await asyncio.sleep(0.1)
    assert not run.done()
    supervisor.request_stop(2)
    assert await asyncio.wait_for(run, 10) == 130
    assert supervisor.forced


class Once(Stage):
    runs = 0

    def __init__(self, _ctx: StageContext) -> None:
        pass

    async def run(self) -> None:
        Once.runs += 1


async def test_finished_stage_is_not_restarted(tmp_path: Path) -> None:
    Once.runs = 0
    supervisor = Supervisor(make_settings(tmp_path), Notifier(None), [("once", Once)])
    run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
    await wait_until(lambda: supervisor.states["once"].phase == "finished")
    await asyncio.sleep(0.1)
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 0
    assert Once.runs == 1 and supervisor.states["once"].restarts == 0


def test_build_supervisor_rejects_unknown_stage(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, stages=["nope"])
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        build_supervisor(settings, Notifier(None))
    with pytest.raises(ConfigError):
        stage_factory("nope")


async def test_state_dir_is_created(tmp_path: Path) -> None:
    supervisor = build_supervisor(make_settings(tmp_path), Notifier(None))
    run = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="test:run")
    await wait_until((tmp_path / "state").is_dir)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    supervisor.request_stop()
    assert await asyncio.wait_for(run, 10) == 0
