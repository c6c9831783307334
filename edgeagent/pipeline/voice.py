"""The voice stage: capture → activation → utterances, on the event loop, never blocked.

Audio blocks come from the configured source (:mod:`edgeagent.capture`); the
capture loop only routes them, so model work never holds it up:

- ``always`` and ``wake_phrase``: voice activity (:class:`VoiceActivity`)
  opens and closes utterances; ``speech_start`` and ``speech_end`` events carry
  the utterance's id, as do all its results;
- ``push_to_talk``: an utterance runs from ``cmd/listen`` start (or the
  ``voice.push_to_talk_key`` going down) to stop (the key going up); no audio
  is processed otherwise.

Each utterance is handed to an :class:`UtteranceRunner` task at its start,
so its audio is encoded and prefilled while the person is still speaking.
Speech that starts while an answer is being decoded cancels that answer
(``voice.barge_in = "cancel"``) or waits for it (``"queue"``). Muted, or on the
governor's ``suspend`` rung, audio is dropped and an open utterance abandoned.
Source trouble (``audio_source_lost`` / ``_reopened`` / ``_ended``) is
published as events. When a finite source (a file without loop) ends, the
stage finishes the utterances in flight, sets
:attr:`AssistantService.voice_done` and returns; at shutdown it does the same
without setting it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edgeagent.capture.base import RATE, AudioBlock, SourceEvent
from edgeagent.capture.factory import open_capture
from edgeagent.dsp.endpoint import SpeechAudio, SpeechEnd, SpeechStart, VadOutput, VoiceActivity
from edgeagent.events import Event, Result, new_id
from edgeagent.pipeline.keys import PushToTalkKey
from edgeagent.pipeline.service import AssistantService
from edgeagent.pipeline.speak import Speaker
from edgeagent.pipeline.utterance import Utterance, UtteranceRunner
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)


class Voice(Stage):
    """See the module docstring.

    Not an intake stage: at shutdown (``ctx.draining``) it stops capture itself,
    closes the utterance in progress and lets the ones in flight be answered
    within ``daemon.shutdown_timeout_s``.
    """

    def __init__(self, ctx: StageContext, service: AssistantService) -> None:
        self.ctx = ctx
        self.service = service
        self.settings = ctx.settings
        self.runner = UtteranceRunner(ctx, service)
        self.current: Utterance | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._vad: VoiceActivity | None = None
        self._vad_ids: dict[int, Utterance] = {}

    async def run(self) -> None:
        service = self.service
        if service.model is None or service.audio is None:
            why = "no model (model.path)" if service.model is None else "no audio encoder"
            _LOGGER.warning("voice stage idle: %s", why)
            return
        voice = self.settings.voice
        speaker = Speaker(voice.speak_command, voice.speak, self._emit_later)
        if voice.speak_command:
            self.runner.on_final = speaker.offer
            self._spawn(speaker.run(), "speaker")
        if voice.activation != "push_to_talk":
            self._vad = VoiceActivity.from_settings(self.settings.audio)
        elif voice.push_to_talk_device is not None:
            key = PushToTalkKey(voice.push_to_talk_device, voice.push_to_talk_key, self._key)
            self._spawn(key.run(), "push-to-talk-key")
        capture = open_capture(self.settings.audio, self._source_event)
        try:
            listening = asyncio.create_task(self._listen(capture), name="voice:capture")
            draining = asyncio.create_task(self.ctx.draining.wait(), name="voice:drain-wait")
            await asyncio.wait({listening, draining}, return_when=asyncio.FIRST_COMPLETED)
            reason = "stream_end"
            if not listening.done():  # shutting down: stop capture, answer what was heard
                reason = "shutdown"
                listening.cancel()
            draining.cancel()
            await asyncio.gather(listening, draining, return_exceptions=True)
            if not listening.cancelled():
                listening.result()  # a capture failure fails the stage, which is restarted
            if self._vad is not None:
                self._vad_outputs(self._vad.flush(), end_reason=reason)
            if self.current is not None:
                self._finish(self.current, capture.position / RATE, reason)
            utterances = [t for t in self._tasks if t.get_name().startswith("utterance")]
            await asyncio.gather(*utterances, return_exceptions=True)
            await speaker.drain()
            if reason == "stream_end":
                service.voice_done.set()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self, capture: Any) -> None:
        async for block in capture.blocks():
            self._route(block)

    # -- routing (on the loop, per block) --------------------------------------------------
    def _route(self, block: AudioBlock) -> None:
        service = self.service
        rung = service.rung_limits()
        if service.muted or (rung is not None and not rung.encoders):
            if self.current is not None:
                self.current.cancelled = True
                self._finish(self.current, block.start_s, "muted")
            if self._vad is not None:
                self._vad = VoiceActivity.from_settings(self.settings.audio)
                self._vad_ids.clear()
            return
        if self._vad is None:  # push to talk
            self._push_to_talk(block)
            return
        self._vad_outputs(self._vad.push(block.pcm, block.start))

    def _vad_outputs(self, outputs: list[VadOutput], end_reason: str | None = None) -> None:
        for out in outputs:
            if isinstance(out, SpeechStart):
                extra = {"utterance": out.utterance}
                self._vad_ids[out.utterance] = self._start(out.start_s, extra)
            elif isinstance(out, SpeechAudio):
                utt = self._vad_ids.get(out.utterance)
                if utt is not None:
                    utt.add(out.pcm)
            elif isinstance(out, SpeechEnd):
                utt = self._vad_ids.pop(out.utterance, None)
                if utt is not None:
                    extra = {"hangover_ms": self.settings.audio.vad_hangover_ms}
                    self._finish(utt, out.end_s, end_reason or out.reason, extra)

    def _push_to_talk(self, block: AudioBlock) -> None:
        listening = self.service.listening
        if listening and self.current is None:
            self._start(block.start_s, {})
        elif not listening and self.current is not None:
            self._finish(self.current, block.start_s, "released")
        if self.current is None:
            return
        self.current.add(block.pcm)
        if block.end_s - self.current.start_s >= self.settings.audio.vad_max_utterance_s:
            self._finish(self.current, block.end_s, "max_length")

    # -- utterances ------------------------------------------------------------------------
    def _start(self, start_s: float, extra: dict[str, Any]) -> Utterance:
        service, voice = self.service, self.settings.voice
        if voice.barge_in == "cancel" and service.generating:
            service.cancel_answer.set()
        utt = Utterance(
            id=new_id(),
            start_s=start_s,
            task=service.task,
            target_language=service.target_language or voice.target_language,
            wake=voice.activation == "wake_phrase",
        )
        self.current = utt
        data = {"utterance_id": utt.id, **extra, "start_s": round(start_s, 3)}
        self._emit_later(Event(event_type="speech_start", data=data))
        self._spawn(self.runner.run(utt), f"utterance:{utt.id[:8]}")
        return utt

    def _finish(
        self, utt: Utterance, end_s: float, reason: str, extra: dict[str, Any] | None = None
    ) -> None:
        utt.finish(end_s)
        if self.current is utt:
            self.current = None
        data = {"utterance_id": utt.id, "start_s": round(utt.start_s, 3),
                "end_s": round(end_s, 3), "reason": reason, **(extra or {})}  # fmt: skip
        self._emit_later(Event(event_type="speech_end", data=data))

    def _key(self, down: bool) -> None:
        """The push-to-talk key went down or up: the same as ``cmd/listen``."""
        service = self.service
        if service.muted or service.listening == down:
            return
        service.listening = down
        self._emit_later(Event(event_type="listening_changed", data={"listening": down}))

    # -- plumbing --------------------------------------------------------------------------
    def _source_event(self, event: SourceEvent) -> None:
        self._emit_later(Event(event_type=event.event_type, data=event.data()))

    def _emit_later(self, item: Result) -> None:
        """Queue a result without blocking the capture loop (order kept)."""
        self._spawn(self.ctx.channels.results.put(item), "voice:emit")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _LOGGER.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
