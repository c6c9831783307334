"""The supervisor: runs the configured stages, restarts failed ones, shuts down cleanly.

Lifecycle of :meth:`Supervisor.run`:

1. Start-up steps run in order (create the state directory, open the outbox
   and start the embedded broker, load the model while sending
   EXTEND_TIMEOUT_USEC). A failing step is fatal: nothing else starts, exit
   status 1.
2. The heartbeat and every configured stage start as named tasks; READY=1.
3. A stage that raises is restarted after a delay that doubles from
   ``daemon.restart_backoff_initial_s`` up to ``restart_backoff_max_s`` (reset
   to the initial value once a stage has run that long without failing). Every
   restart is logged and counted; the heartbeat reports the counts in STATUS=.
4. SIGTERM or SIGINT (handlers only set an event): STOPPING=1, intake stages
   are cancelled, the others get ``shutdown_timeout_s`` to drain, whatever is
   left is cancelled and named in the log; then the late stages (the
   publisher) get ``shutdown_timeout_s`` to flush; exit status 0. A second
   signal forces exit at once with status 128 + signal number.
5. Clean-up steps (close the outbox, stop the embedded broker) run last, in
   order, whatever happened before; their errors are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from edgeagent.errors import ConfigError, DaemonError, EdgeAgentError
from edgeagent.governor.stage import Governor, GovernorService
from edgeagent.pipeline.assistant import Assistant
from edgeagent.pipeline.service import AssistantService
from edgeagent.pipeline.vision import Vision
from edgeagent.pipeline.voice import Voice
from edgeagent.publish.mqtt import MqttPublisher
from edgeagent.publish.service import PublishService
from edgeagent.sdnotify import Notifier, watchdog_interval
from edgeagent.settings import Settings
from edgeagent.stages import Stage, StageContext, StageFactory, stage_factory

_LOGGER = logging.getLogger(__name__)

StartupStep = Callable[[StageContext], Awaitable[None]]
CleanupStep = Callable[[], Awaitable[None]]
HEARTBEAT = "heartbeat"
_CANCEL_GRACE_S = 5.0


@dataclass
class StageState:
    """What the supervisor knows about one stage."""

    name: str
    factory: StageFactory
    phase: str = "starting"  # starting | running | backoff | finished | stopped
    restarts: int = 0
    next_delay_s: float = 0.0
    intake: bool = False
    late: bool = False


class Heartbeat(Stage):
    """Sends WATCHDOG=1 (when systemd asked for it) and the STATUS= line, periodically."""

    def __init__(self, supervisor: Supervisor, interval_s: float, watchdog: bool) -> None:
        self._supervisor = supervisor
        self._interval_s = interval_s
        self._watchdog = watchdog

    async def run(self) -> None:
        notifier = self._supervisor.notifier
        while True:
            status = self._supervisor.status_line()
            if self._watchdog:
                notifier.send(WATCHDOG=1, STATUS=status)
            else:
                notifier.status(status)
            await asyncio.sleep(self._interval_s)


class Supervisor:
    """Owns the stage tasks and their lifecycle; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        notifier: Notifier,
        stages: Sequence[tuple[str, StageFactory]],
        startup: Sequence[StartupStep] = (),
        watchdog_s: float | None = None,
        cleanup: Sequence[CleanupStep] = (),
        services: Mapping[str, object] | None = None,
        status: Sequence[Callable[[], str]] = (),
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.context = StageContext(settings, notifier)
        self._startup = tuple(startup)
        self._cleanup = tuple(cleanup)
        self._status = tuple(status)
        self.services: Mapping[str, object] = dict(services or {})
        """Long-lived objects the stages share (publish, assistant), by name; for inspection."""
        self._phase = "starting"
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._forced_by: int | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        interval = settings.daemon.heartbeat_s
        if watchdog_s is not None:
            interval = min(interval, watchdog_s)
        beat = Heartbeat(self, interval, watchdog=watchdog_s is not None)
        self._states = {HEARTBEAT: StageState(HEARTBEAT, lambda _ctx: beat)}
        for name, factory in stages:
            if name in self._states:
                raise DaemonError(f"stage {name!r} is configured twice")
            self._states[name] = StageState(name, factory)

    @property
    def states(self) -> dict[str, StageState]:
        return dict(self._states)

    @property
    def forced(self) -> bool:
        """True if a second signal cut the shutdown short."""
        return self._force.is_set()

    def unfinished(self) -> list[str]:
        """Names of tasks still alive after :meth:`run` returned (they ignored cancellation)."""
        return [t.get_name() for t in self._tasks.values() if not t.done()]

    def request_stop(self, signum: int | None = None) -> None:
        """Begin shutdown; a second request forces exit. Safe to call from a signal handler."""
        if self._stop.is_set():
            self._forced_by = signum or signal.SIGTERM
            self._force.set()
        else:
            self._stop.set()

    def status_line(self) -> str:
        """One line for STATUS=: phase, stages up, restart counts."""
        states = self._states.values()
        up = sum(1 for s in states if s.phase == "running")
        restarts = ", ".join(_restart_summary(s) for s in states if s.restarts)
        line = f"{self._phase}; {up}/{len(self._states)} stages up; restarts: {restarts or 'none'}"
        return "; ".join([line, *(part() for part in self._status)])

    async def run(self, install_signal_handlers: bool = True) -> int:
        """Run until stopped; the exit status (0 after a clean shutdown)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
        for signum in signals:
            loop.add_signal_handler(signum, self.request_stop, signum)
        try:
            if not await self._run_startup():
                return await self._shutdown_or_force()
            return await self._run_stages()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self._run_cleanup()

    async def _run_stages(self) -> int:
        """Start every stage, report READY=1, run until stopped."""
        for state in self._states.values():
            self._tasks[state.name] = asyncio.create_task(
                self._supervise(state), name=f"stage:{state.name}"
            )
        await asyncio.sleep(0)  # let every stage task begin before reporting
        self._phase = "running"
        self.notifier.ready(self.status_line())
        _LOGGER.info("ready: %s", ", ".join(self._states))
        await self._stop.wait()
        return await self._shutdown_or_force()

    async def _run_cleanup(self) -> None:
        for step in self._cleanup:
            try:
                await asyncio.wait_for(step(), _CANCEL_GRACE_S * 2)
            except Exception:
                _LOGGER.exception("clean-up step %s failed", _name(step))

    async def _run_startup(self) -> bool:
        """Run the start-up steps; False if a stop was requested meanwhile."""
        for step in self._startup:
            task = asyncio.create_task(
                _awaitable(step(self.context)), name=f"startup:{_name(step)}"
            )
            stop = asyncio.create_task(self._stop.wait(), name="startup:stop-wait")
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not task.done():
                _LOGGER.info("stop requested during start-up step %s", _name(step))
                await _cancel_all([task])
                return False
            if (exc := task.exception()) is not None:
                if isinstance(exc, EdgeAgentError):
                    raise exc
                raise DaemonError(f"start-up step {_name(step)} failed: {exc!r}") from exc
        return True

    async def _supervise(self, state: StageState) -> None:
        """Run one stage, restarting it with capped exponential backoff when it fails."""
        loop = asyncio.get_running_loop()
        daemon = self.settings.daemon
        delay = daemon.restart_backoff_initial_s
        while True:
            started = loop.time()
            try:
                stage = state.factory(self.context)
                state.intake, state.late, state.phase = stage.intake, stage.late, "running"
                await stage.run()
            except asyncio.CancelledError:
                state.phase = "stopped"
                raise
            except Exception:
                state.restarts += 1
                if loop.time() - started >= daemon.restart_backoff_max_s:
                    delay = daemon.restart_backoff_initial_s
                if self._stop.is_set():
                    _LOGGER.exception("stage %s failed during shutdown; not restarted", state.name)
                    state.phase = "stopped"
                    return
                state.phase, state.next_delay_s = "backoff", delay
                _LOGGER.exception(
                    "stage %s failed (restart %d in %.2fs)", state.name, state.restarts, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    state.phase = "stopped"
                    return
                delay = min(delay * 2, daemon.restart_backoff_max_s)
            else:
                _LOGGER.info("stage %s finished", state.name)
                state.phase = "finished"
                return

    async def _shutdown_or_force(self) -> int:
        shutdown = asyncio.create_task(self._shutdown(), name="supervisor:shutdown")
        force = asyncio.create_task(self._force.wait(), name="supervisor:force-wait")
        await asyncio.wait({shutdown, force}, return_when=asyncio.FIRST_COMPLETED)
        if shutdown.done():
            force.cancel()
            return shutdown.result()
        status = 128 + int(self._forced_by or signal.SIGTERM)
        _LOGGER.warning("second signal: forcing exit (status %d)", status)
        await _cancel_all([shutdown, *self._tasks.values()], grace_s=1.0)
        return status

    async def _shutdown(self) -> int:
        self._phase = "stopping"
        self.notifier.stopping(self.status_line())
        _LOGGER.info("shutting down")
        others = {n: t for n, t in self._tasks.items() if n != HEARTBEAT}
        intake = [t for n, t in others.items() if self._states[n].intake]
        await _cancel_all(intake)
        self.context.draining.set()
        await self._drain([t for n, t in others.items() if not self._states[n].late])
        self.context.upstream_done.set()
        await self._drain([t for n, t in others.items() if self._states[n].late])
        if heartbeat := self._tasks.get(HEARTBEAT):
            await _cancel_all([heartbeat])
        _LOGGER.info("stopped; %s", self.status_line())
        return 0

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        """Give ``tasks`` shutdown_timeout_s to return, then cancel the rest."""
        draining = [t for t in tasks if not t.done()]
        if not draining:
            return
        timeout = self.settings.daemon.shutdown_timeout_s
        _done, pending = await asyncio.wait(draining, timeout=timeout)
        for task in pending:
            _LOGGER.warning("%s did not drain within %.1fs; cancelling", task.get_name(), timeout)
        await _cancel_all(list(pending))


def build_supervisor(settings: Settings, notifier: Notifier | None = None) -> Supervisor:
    """A supervisor for the configured stages; unknown stage names are a ConfigError.

    With ``mqtt.enabled`` (the default) it also runs the core stages: ``mqtt``
    (the publisher; its outbox opens and the embedded broker starts before
    READY=1), ``assistant`` (commands and the conversation; the model loads
    before READY=1) and, with ``governor.enabled``, ``governor`` (sensors and
    the tier policy) and, with ``audio.enabled`` and a ``model.path``, ``voice``
    (capture, voice activity, the speech tasks), with ``camera.enabled`` and a
    ``model.path``, ``vision`` (camera, frame gate, vision encoder, describe).
    """
    stages = [(name, stage_factory(name)) for name in settings.daemon.stages]
    startup: list[StartupStep] = [ensure_state_dir]
    cleanup: list[CleanupStep] = []
    services: dict[str, object] = {}
    status: list[Callable[[], str]] = []
    if settings.mqtt.enabled:
        publish = PublishService(settings)
        governor = GovernorService(settings) if settings.governor.enabled else None
        assistant = AssistantService(settings, governor)
        startup += [publish.open, assistant.load_model]
        cleanup += [assistant.close, publish.close]
        core: list[tuple[str, StageFactory]] = [
            ("mqtt", lambda ctx: MqttPublisher(ctx, publish)),
            ("assistant", lambda ctx: Assistant(ctx, assistant)),
        ]
        if governor is not None:
            core.append(("governor", lambda ctx: Governor(ctx, governor)))
        if settings.audio.enabled and settings.model.path is not None:
            core.append(("voice", lambda ctx: Voice(ctx, assistant)))
        if settings.camera.enabled and settings.model.path is not None:
            core.append(("vision", lambda ctx: Vision(ctx, assistant)))
        taken = {name for name, _ in core} & set(settings.daemon.stages)
        if taken:
            raise ConfigError(f"daemon.stages: {', '.join(sorted(taken))} always runs; remove it")
        stages = core + stages
        services = {"publish": publish, "assistant": assistant}
        if governor is not None:
            services["governor"] = governor
        status.append(publish.status)
    return Supervisor(
        settings,
        notifier or Notifier.from_env(),
        stages,
        startup=startup,
        watchdog_s=watchdog_interval(),
        cleanup=cleanup,
        services=services,
        status=status,
    )


async def ensure_state_dir(ctx: StageContext) -> None:
    """Create ``daemon.state_dir`` (0700) if systemd's StateDirectory= has not."""
    path = ctx.settings.daemon.state_dir
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DaemonError(f"daemon.state_dir {path}: cannot create: {exc.strerror}") from exc


async def _cancel_all(
    tasks: Sequence[asyncio.Task[object]], grace_s: float = _CANCEL_GRACE_S
) -> None:
    live = [t for t in tasks if not t.done()]
    for task in live:
        task.cancel()
    if not live:
        return
    _done, stuck = await asyncio.wait(live, timeout=grace_s)
    for task in stuck:
        _LOGGER.error("%s ignored cancellation for %.1fs", task.get_name(), grace_s)


def _restart_summary(state: StageState) -> str:
    text = f"{state.name}={state.restarts}"
    if state.phase == "backoff":
        text += f" (retry in {state.next_delay_s:.2f}s)"
    return text


async def _awaitable(awaitable: Awaitable[None]) -> None:
    await awaitable


def _name(step: StartupStep | CleanupStep) -> str:
    return getattr(step, "__name__", type(step).__name__)
