"""The assistant stage: carries out commands against the conversation, in one worker thread.

The model (``model.path``) is loaded by a start-up step, before READY=1. All
model work — prefill, decode, a tier switch's rebuild, a reset — runs on the
single worker thread of :class:`AssistantService`, so the event loop never
blocks and the conversation is never touched by two threads.

Commands and what they cause (every command also updates the state message):

- ``ask``: the answer on ``<base>/answer`` (and the response topic), with
  ``image_tokens`` (image soft tokens in its prompt, counted in the
  conversation); without a model, an ``error`` event ``no_model``. With
  ``"look": true`` the gate is asked for the next camera frame, the ask waits
  up to ``camera.look_timeout_s`` for its soft tokens and the user turn is
  ``<start_of_image>`` + 256 soft tokens + ``<end_of_image>`` + the question
  (:mod:`~edgeagent.pipeline.prompts`); the answer names the ``frame_id``. No
  camera frame: an ``error`` event ``no_camera``; vision off on the governor's
  rung: ``vision_off``.
- ``tier``: ``auto`` or a tier the checkpoint offers and the device allows;
  the conversation is rebuilt under it; a ``tier_changed`` event.
- ``mute`` / ``listen`` / ``task``: ``mute_changed``, ``listening_changed``,
  ``task_changed`` events (capture and the voice pipeline read the state).
  ``task`` ``describe`` (``enabled`` true or false) switches scene descriptions
  on ``<base>/vision`` on or off and leaves the speech task as it is.
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
import logging
from collections.abc import Callable
from typing import Any

from edgeagent.engine import chat
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
from edgeagent.pipeline import prompts
from edgeagent.pipeline.answering import Generated, LoopSink, PartialSink
from edgeagent.pipeline.service import AUTO, AssistantService
from edgeagent.pipeline.sight import NoSight, SeenFrame
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)

__all__ = ["Assistant", "AssistantService"]


class Assistant(Stage):
    """See the module docstring."""

    def __init__(self, ctx: StageContext, service: AssistantService) -> None:
        self.ctx = ctx
        self.service = service

    async def run(self) -> None:
        self.service.interrupt = self.ctx.channels.interrupt
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
        seen: SeenFrame | None = None
        if command.look:
            try:
                seen = await self._look()
            except NoSight as exc:
                await self._emit(error_event(exc.code, str(exc), "ask", command.reply))
                return
        limit = service.token_limit(command.max_new_tokens)
        utterance_id = new_id()
        tier = service.running_tier() or "full"
        sink = LoopSink(self.ctx.channels.results)

        def partial(text: str, tokens: int) -> None:
            sink.put(Answer(utterance_id=utterance_id, text=text, final=False, tokens=tokens,
                            ttft_ms=0.0, tier=tier, reply=command.reply))  # fmt: skip

        async with service.turn_lock:
            answer, image_tokens = await service.in_worker(
                self._answer_text, command.text, limit, partial, seen
            )
        await self._emit(
            Answer(
                utterance_id=utterance_id,
                tier=tier,
                reply=command.reply,
                final=True,
                image_tokens=image_tokens,
                frame_id=None if seen is None else seen.frame_id,
                **answer.fields(),
            )
        )
        await self.ctx.channels.results.put(
            StateUpdate({"decode_tokens_per_s": answer.decode_tokens_per_s})
        )

    async def _look(self) -> SeenFrame:
        """The next camera frame sent on, encoded (``cmd/ask`` with ``"look": true``)."""
        service = self.service
        rung = service.rung_limits()
        if rung is not None and not rung.vision:
            message = f"cannot look: vision is off on the {rung.name} tier"
            raise NoSight("vision_off", message)
        return await service.sight.look(self.ctx.settings.camera.look_timeout_s)

    def _answer_text(
        self, text: str, limit: int, partial: PartialSink, seen: SeenFrame | None = None
    ) -> tuple[Generated, int]:
        """Worker thread, turn lock held: a typed user turn (with the frame ``seen``: the image,
        then the text) and its answer; and the image soft tokens in the answer's prompt."""
        service = self.service
        conversation = service.conversation
        assert conversation is not None
        service.start_turn()
        if seen is None:
            conversation.add_text(chat.turn("user", text) + chat.generation_prompt())
        else:
            conversation.add_text(prompts.image_turn_opening())
            conversation.add_image(seen.tokens)
            conversation.add_text(prompts.image_turn_closing(text))
        try:
            answer = service.answer(conversation, limit, partial)
            # counted after the prefill, which may have made room by dropping old turns
            return answer, conversation.image_tokens()
        finally:
            service.end_turn()

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
            async with service.turn_lock:
                await service.in_worker(service.reset_conversation)
        service.turns = 0
        await self._emit(Event(event_type="conversation_reset", reply=command.reply))

    async def _task(self, command: SetTask) -> None:
        if command.task == "describe":
            self.service.describing = command.enabled
            data = {"task": "describe", "target_language": None, "enabled": command.enabled}
            await self._emit(Event(event_type="task_changed", data=data, reply=command.reply))
            return
        self.service.task = command.task
        self.service.target_language = command.target_language
        data = {"task": command.task, "target_language": command.target_language}
        await self._emit(Event(event_type="task_changed", data=data, reply=command.reply))
