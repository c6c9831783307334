"""The assistant stage: carries out commands against the conversation, in one worker thread.

The model (``model.path``) is loaded by a start-up step, before READY=1. All
model work — prefill, decode, a tier switch's rebuild, a reset — runs on the
single worker thread of :class:`AssistantService`, so the event loop never
blocks and the conversation is never touched by two threads.

Commands and what they cause (every command also updates the state message):

- ``ask``: the answer on ``<base>/answer`` (and the response topic); without
  a model, an ``error`` event ``no_model``.
- ``tier``: ``auto`` or a tier the checkpoint offers and the device allows;
  the conversation is rebuilt under it; a ``tier_changed`` event.
- ``mute`` / ``listen`` / ``task``: ``mute_changed``, ``listening_changed``,
  ``task_changed`` events (capture and the voice pipeline read the state).
- ``reset``: a new, empty conversation; a ``conversation_reset`` event.

The governor (when ``governor.enabled``) sends :class:`TierRequest` decisions;
they are applied between utterances, before any queued command: the
conversation is rebuilt under the new engine tier on the worker thread in the
background (the next answer is queued behind the rebuild, not behind the
event), and a ``tier_changed`` event with ``reason: "governor"``, the policy's
``cause`` and the ``readings`` is published. Tiers are then the ladder's rungs
(:mod:`edgeagent.governor.ladder`): ``economy`` runs the ``e2b`` engine tier with
a token cap, ``suspend`` (governor only) stops the encoders.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from edgeagent import engine
from edgeagent.errors import EngineError
from edgeagent.events import (
    Answer,
    Ask,
    Command,
    Event,
    Listen,
    Mute,
    Reset,
    Result,
    SetTask,
    SetTier,
    StateUpdate,
    TierRequest,
    error_event,
    new_id,
)
from edgeagent.governor.ladder import Ladder, Rung, build_ladder
from edgeagent.governor.stage import GovernorService
from edgeagent.settings import Settings
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

AUTO = "auto"
DEFAULT_MAX_NEW_TOKENS = 256
SAMPLING = engine.SamplingParams()  # Gemma's defaults: temperature 1.0, top-k 64, top-p 0.95


class AssistantService:
    """The model, the conversation and the controls; outlives assistant stage restarts."""

    def __init__(self, settings: Settings, governor: GovernorService | None = None) -> None:
        self.settings = settings
        self.governor = governor
        self.ladder: Ladder | None = None
        self.rung: str | None = None  # the governor's choice while tier_setting is "auto"
        self.rebuilding: Future[int] | None = None
        self.model: engine.TextModel | None = None
        self.conversation: engine.Conversation | None = None
        self.tiers: list[str] = []  # tiers this device may run, largest first
        self.tier_setting = settings.model.tier
        self.muted = False
        self.listening = False
        self.task = "assistant"
        self.target_language: str | None = None
        self.turns = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="edgeagent-worker")

    async def in_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def in_background(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Queue ``fn(*args)`` on the worker thread without waiting; failures are logged."""
        future = self._worker.submit(fn, *args)
        future.add_done_callback(_log_failure)
        return future

    async def load_model(self, ctx: StageContext) -> None:
        """Start-up step: load ``model.path`` (if set) and open the conversation."""
        path = self.settings.model.path
        if path is None:
            _LOGGER.info("no model configured (model.path): cmd/ask answers with an error")
            self._govern(None)
            return
        ctx.notifier.extend_timeout(120)
        started = time.monotonic()
        model = await self.in_worker(
            functools.partial(
                engine.load,
                path,
                self.settings.model.max_context,
                kernels=self.settings.model.kernels,
                threads=self.settings.model.threads,
            )
        )
        allowed = self.settings.model.allowed_tiers
        self.tiers = [t for t in (allowed or tuple(model.tiers)) if t in model.tiers]
        if not self.tiers:
            raise EngineError(
                f"none of model.allowed_tiers ({', '.join(allowed)}) is offered by {path} "
                f"({', '.join(model.tiers)})"
            )
        self._govern(model)
        if self.tier_setting != AUTO and self.tier_setting not in self.tiers:
            raise EngineError(f"model.tier {self.tier_setting!r} is not offered by {path}")
        self.model = model
        tier = self.engine_tier(self.running_tier())
        self.conversation = await self.in_worker(engine.Conversation, model, tier)
        _LOGGER.info("model %s loaded in %.1fs", path, time.monotonic() - started)

    def _govern(self, model: engine.TextModel | None) -> None:
        """With a governor: the ladder from the allowed tiers, checked against ``model``."""
        if self.governor is None:
            return
        governor = self.settings.governor
        allowed = self.settings.model.allowed_tiers
        names = allowed or (tuple(model.tiers) if model is not None else ("full",))
        ladder = build_ladder(
            names,
            None if model is None else tuple(model.tiers),
            economy_max_fps=governor.economy_max_fps,
            economy_max_new_tokens=governor.economy_max_new_tokens,
        )
        if not ladder.rungs:
            raise EngineError(
                f"none of the tiers {', '.join(names)} can run on this checkpoint "
                f"(it offers {', '.join(model.tiers) if model else 'nothing'})"
            )
        self.ladder = ladder
        if model is not None:  # without a model, cmd/tier accepts only auto
            self.tiers = list(ladder.running)
        start = self.tier_setting if self.tier_setting in ladder.names else None
        self.rung = ladder.names[0]
        self.governor.set_ladder(ladder, start)
        if start is not None:
            self.governor.set_override(start)

    def running_tier(self) -> str | None:
        """The tier the conversation runs: the setting, or for "auto" the governor's rung
        (without a governor, the largest allowed)."""
        if self.model is None:
            return None
        if self.tier_setting != AUTO:
            return self.tier_setting
        return self.rung or self.tiers[0]

    def rung_limits(self) -> Rung | None:
        """The running rung's restrictions (token cap, vision, encoders), with a governor."""
        tier = self.running_tier()
        if self.ladder is None or tier is None or tier not in self.ladder.names:
            return None
        return self.ladder.rung(tier)

    def engine_tier(self, tier: str | None) -> str | None:
        """The engine tier a rung runs (``economy``: ``e2b``); without a ladder, ``tier``."""
        if tier is None or self.ladder is None or tier not in self.ladder.names:
            return tier
        return self.ladder.rung(tier).engine_tier

    def state(self) -> dict[str, Any]:
        path = self.settings.model.path
        return {
            "model": path.name if self.model is not None and path is not None else None,
            "tier": self.running_tier(),
            "tier_setting": self.tier_setting,
            "tiers": [AUTO, *self.tiers],
            "muted": self.muted,
            "listening": self.listening,
            "task": self.task,
            "target_language": self.target_language,
            "conversation_turns": self.turns,
        }

    async def close(self) -> None:
        """Clean-up step: stop the worker thread (after the current job)."""
        self._worker.shutdown(wait=True, cancel_futures=True)


class Assistant(Stage):
    """See the module docstring."""

    def __init__(self, ctx: StageContext, service: AssistantService) -> None:
        self.ctx = ctx
        self.service = service

    async def run(self) -> None:
        await self._state()
        commands = self.ctx.channels.commands
        requests = self.ctx.channels.tier_requests
        while True:
            if commands.empty() and self.ctx.draining.is_set():
                return
            if not requests.empty():  # between utterances, before anything queued
                await self._governed(requests.get_nowait())
                continue
            request, command = await self._next()
            if request is not None:
                await self._governed(request)
            if command is None:
                continue
            try:
                await self._handle(command)
            except EngineError as exc:
                _LOGGER.exception("command %s failed", command.name)
                await self._emit(error_event("engine_error", str(exc), command.name, command.reply))

    async def _next(self) -> tuple[TierRequest | None, Command | None]:
        """What arrives first: a tier request, a command (or both), or draining (neither)."""
        channels = self.ctx.channels
        get = asyncio.create_task(channels.commands.get(), name="assistant:get")
        tier = asyncio.create_task(channels.tier_requests.get(), name="assistant:tier-get")
        drain = asyncio.create_task(self.ctx.draining.wait(), name="assistant:drain-wait")
        try:
            await asyncio.wait({get, tier, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
            for task in (get, tier):
                if not task.done():
                    task.cancel()
        request = tier.result() if tier.done() and not tier.cancelled() else None
        command = get.result() if get.done() and not get.cancelled() else None
        return request, command

    async def _emit(self, item: Result) -> None:
        await self.ctx.channels.results.put(item)

    async def _state(self) -> None:
        await self.ctx.channels.results.put(StateUpdate(self.service.state()))

    async def _handle(self, command: Command) -> None:
        handlers: dict[type[Command], Callable[[Any], Any]] = {
            Ask: self._ask,
            SetTier: self._tier,
            Mute: self._mute,
            Listen: self._listen,
            Reset: self._reset,
            SetTask: self._task,
        }
        await handlers[type(command)](command)
        await self._state()

    async def _ask(self, command: Ask) -> None:
        service = self.service
        if service.model is None or service.conversation is None:
            await self._emit(
                error_event("no_model", "no model is loaded (model.path)", "ask", command.reply)
            )
            return
        limit = command.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if (rung := service.rung_limits()) is not None and rung.max_new_tokens is not None:
            limit = min(limit, rung.max_new_tokens)
        interrupt = self.ctx.channels.interrupt
        answer = await service.in_worker(
            _answer, service.conversation, command.text, limit, interrupt.is_set
        )
        service.turns += 1
        tier = service.running_tier() or "full"
        await self._emit(Answer(utterance_id=new_id(), tier=tier, reply=command.reply, **answer))
        await self.ctx.channels.results.put(
            StateUpdate({"decode_tokens_per_s": answer["decode_tokens_per_s"]})
        )

    async def _tier(self, command: SetTier) -> None:
        service = self.service
        name = command.tier
        if name != AUTO and service.model is None:
            await self._emit(
                error_event("no_model", "no model is loaded: only auto", "tier", command.reply)
            )
            return
        if name != AUTO and name not in service.tiers:
            offered = ", ".join([AUTO, *service.tiers])
            message = f"unknown tier {name!r}; this device offers: {offered}"
            await self._emit(error_event("invalid_tier", message, "tier", command.reply))
            return
        previous = service.running_tier()
        service.tier_setting = name
        tier = service.running_tier()
        if service.governor is not None:
            service.governor.set_override(None if name == AUTO else name)
        engine_tier = service.engine_tier(tier)
        if service.conversation is not None and engine_tier != service.engine_tier(previous):
            await service.in_worker(service.conversation.rebuild, engine_tier)
        data = {"tier": tier, "previous": previous, "setting": name, "reason": "command"}
        await self._emit(Event(event_type="tier_changed", data=data, reply=command.reply))

    async def _governed(self, request: TierRequest) -> None:
        """Apply the governor's decision (between utterances); rebuild in the background."""
        self.ctx.channels.interrupt.clear()
        service = self.service
        if service.tier_setting != AUTO and request.cause != "thermal_critical":
            return  # a manual choice holds; the governor's state already says so
        previous = service.rung if service.tier_setting == AUTO else service.tier_setting
        if request.cause == "thermal_critical" and service.tier_setting != AUTO:
            service.tier_setting = AUTO  # safety first: a critical temperature ends an override
            if service.governor is not None:
                service.governor.set_override(None)
        if request.rung == previous:
            return
        old_engine = service.engine_tier(previous)
        service.rung = request.rung
        engine_tier = service.engine_tier(request.rung)
        conversation = service.conversation
        if conversation is not None and engine_tier != old_engine:
            service.rebuilding = service.in_background(conversation.rebuild, engine_tier)
        data = {
            "tier": request.rung,
            "previous": previous,
            "setting": service.tier_setting,
            "reason": "governor",
            "cause": request.cause,
            "urgent": request.urgent,
            "readings": dict(request.readings),
        }
        _LOGGER.info("tier %s -> %s (%s)", previous, request.rung, request.cause)
        await self._emit(Event(event_type="tier_changed", data=data))
        await self._state()

    async def _mute(self, command: Mute) -> None:
        self.service.muted = command.muted
        if command.muted:
            self.service.listening = False
        data = {"muted": command.muted}
        await self._emit(Event(event_type="mute_changed", data=data, reply=command.reply))

    async def _listen(self, command: Listen) -> None:
        if command.start and self.service.muted:
            message = "muted: unmute before listening"
            await self._emit(error_event("muted", message, "listen", command.reply))
            return
        self.service.listening = command.start
        data = {"listening": command.start}
        await self._emit(Event(event_type="listening_changed", data=data, reply=command.reply))

    async def _reset(self, command: Reset) -> None:
        service = self.service
        if service.model is not None:
            service.conversation = await service.in_worker(
                engine.Conversation, service.model, service.engine_tier(service.running_tier())
            )
        service.turns = 0
        await self._emit(Event(event_type="conversation_reset", reply=command.reply))

    async def _task(self, command: SetTask) -> None:
        self.service.task = command.task
        self.service.target_language = command.target_language
        data = {"task": command.task, "target_language": command.target_language}
        await self._emit(Event(event_type="task_changed", data=data, reply=command.reply))


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        _LOGGER.error("background model work failed: %r", exc, exc_info=exc)


def _answer(
    conversation: engine.Conversation,
    text: str,
    limit: int,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One user turn and the model's reply (worker thread)."""
    model = conversation.model
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise EngineError(f"{model.checkpoint.path} has no tokenizer.json: cannot take text")
    started = time.perf_counter()
    first: list[float] = []

    def on_token(_token: int) -> None:
        if not first:
            first.append(time.perf_counter())

    conversation.user_turn(text)
    ids, reason = conversation.reply(SAMPLING, limit, on_token, should_stop)
    ended = time.perf_counter()
    answer = [t for t in ids if t not in model.config.eos_token_ids]
    ttft = (first[0] if first else ended) - started
    decode_s = ended - (first[0] if first else ended)
    speed = round((len(ids) - 1) / decode_s, 2) if len(ids) > 1 and decode_s > 0 else None
    return {
        "text": tokenizer.decode(answer),
        "final": True,
        "tokens": len(ids),
        "ttft_ms": round(ttft * 1000, 1),
        "decode_tokens_per_s": speed,
        "stop_reason": reason,
    }
