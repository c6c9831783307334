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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    error_event,
    new_id,
)
from edgeagent.settings import Settings
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

AUTO = "auto"
DEFAULT_MAX_NEW_TOKENS = 256
SAMPLING = engine.SamplingParams()  # Gemma's defaults: temperature 1.0, top-k 64, top-p 0.95


class AssistantService:
    """The model, the conversation and the controls; outlives assistant stage restarts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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

    async def load_model(self, ctx: StageContext) -> None:
        """Start-up step: load ``model.path`` (if set) and open the conversation."""
        path = self.settings.model.path
        if path is None:
            _LOGGER.info("no model configured (model.path): cmd/ask answers with an error")
            return
        ctx.notifier.extend_timeout(120)
        started = time.monotonic()
        model = await self.in_worker(engine.load, path, self.settings.model.max_context)
        allowed = self.settings.model.allowed_tiers
        self.tiers = [t for t in (allowed or tuple(model.tiers)) if t in model.tiers]
        if not self.tiers:
            raise EngineError(
                f"none of model.allowed_tiers ({', '.join(allowed)}) is offered by {path} "
                f"({', '.join(model.tiers)})"
            )
        if self.tier_setting != AUTO and self.tier_setting not in self.tiers:
            raise EngineError(f"model.tier {self.tier_setting!r} is not offered by {path}")
        self.model = model
        self.conversation = await self.in_worker(engine.Conversation, model, self.running_tier())
        _LOGGER.info("model %s loaded in %.1fs", path, time.monotonic() - started)

    def running_tier(self) -> str | None:
        """The tier the conversation runs: the setting, or for "auto" the largest allowed."""
        if self.model is None:
            return None
        return self.tiers[0] if self.tier_setting == AUTO else self.tier_setting

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
        while True:
            if commands.empty() and self.ctx.draining.is_set():
                return
            command = await self._next()
            if command is None:
                continue
            try:
                await self._handle(command)
            except EngineError as exc:
                _LOGGER.exception("command %s failed", command.name)
                await self._emit(error_event("engine_error", str(exc), command.name, command.reply))

    async def _next(self) -> Command | None:
        get = asyncio.create_task(self.ctx.channels.commands.get(), name="assistant:get")
        drain = asyncio.create_task(self.ctx.draining.wait(), name="assistant:drain-wait")
        try:
            await asyncio.wait({get, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
            if not get.done():
                get.cancel()
        return get.result() if get.done() and not get.cancelled() else None

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
        answer = await service.in_worker(_answer, service.conversation, command.text, limit)
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
        if service.conversation is not None and tier != previous:
            await service.in_worker(service.conversation.rebuild, tier)
        data = {"tier": tier, "previous": previous, "setting": name, "reason": "command"}
        await self._emit(Event(event_type="tier_changed", data=data, reply=command.reply))

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
                engine.Conversation, service.model, service.running_tier()
            )
        service.turns = 0
        await self._emit(Event(event_type="conversation_reset", reply=command.reply))

    async def _task(self, command: SetTask) -> None:
        self.service.task = command.task
        self.service.target_language = command.target_language
        data = {"task": command.task, "target_language": command.target_language}
        await self._emit(Event(event_type="task_changed", data=data, reply=command.reply))


def _answer(conversation: engine.Conversation, text: str, limit: int) -> dict[str, Any]:
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
    ids, reason = conversation.reply(SAMPLING, limit, on_token)
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
