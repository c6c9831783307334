"""One utterance, from its first audio to its last result.

Two coroutines per utterance, joined by a queue of soft tokens:

- **encode** (audio thread): pushes the utterance's audio into a streaming
  audio encoder as it arrives — everything queued since the last push goes
  in one push, so an encoder that falls behind catches up with bigger, more
  efficient batches — and flushes it at the end of speech;
- **converse** (worker thread, turn lock held): opens the user turn with the
  task's instruction, prefills soft tokens into the conversation's KV cache
  while the person is still speaking (as they come; in batches of
  ``PREFILL_MIN_TOKENS`` while the encoder is behind), and at the end adds the
  closing template tokens (one forward pass) and decodes, streaming partial
  results.

Tasks (``voice.task`` or ``cmd/task``): ``assistant`` → ``<base>/answer`` (then,
with ``voice.transcript``, a transcript decoded as a second turn);
``transcribe`` → ``<base>/transcript``; ``translate`` → ``<base>/translation``.
In ``wake_phrase`` mode the utterance is first transcribed in a scratch
conversation; only when the transcript opens with the wake phrase does the
rest of it enter the conversation, as a typed request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent import engine
from edgeagent.errors import EngineError
from edgeagent.events import (
    Answer,
    Event,
    Result,
    StateUpdate,
    Transcript,
    Translation,
    error_event,
)
from edgeagent.pipeline import prompts
from edgeagent.pipeline.answering import Generated, LoopSink, generate
from edgeagent.pipeline.service import AssistantService
from edgeagent.stages import StageContext

_LOGGER = logging.getLogger(__name__)
F32 = np.float32
RATE = 16_000
WAKE_TRANSCRIPT_TOKENS = 48  # enough for a wake phrase and a short request
SCRATCH_CONTEXT = 512  # the wake-phrase check's conversation: one utterance of ≤ 30 s
# Soft tokens per prefill while the audio encoder is behind (4: 640 ms of speech). A forward
# pass costs far less per token in a batch (E2B: 4 tokens ~2.3x one), and the encoder shares
# the cores: when it falls behind, batching leaves them to it. When it keeps up, tokens are
# prefilled as they come, so that little is left for the end of speech.
PREFILL_MIN_TOKENS = 4
ENCODER_BEHIND_SAMPLES = RATE // 10  # more than 100 ms of audio waiting for one push
ResultMaker = Callable[[str, bool, dict[str, Any]], Result]  # (text, final, fields) -> result
Mark = tuple[float, float]  # (time.perf_counter(), time.process_time()): debug timing


def _now() -> Mark:
    return time.perf_counter(), time.process_time()


@dataclass
class Utterance:
    """An utterance in flight. Times: timeline seconds; ``ended_at``: ``time.perf_counter()``."""

    id: str
    start_s: float
    task: str
    target_language: str | None
    wake: bool = False  # wake_phrase mode: must open with the phrase
    audio: asyncio.Queue[np.ndarray | None] = field(default_factory=asyncio.Queue)
    end_s: float | None = None
    ended_at: float | None = None  # when the end of speech was decided
    cancelled: bool = False  # muted or reset before it was answered
    encoder_behind: bool = False  # the last push took more audio than arrives while it ran
    marks: dict[str, Mark] = field(default_factory=dict)  # the end and the steps after it

    @property
    def abandoned(self) -> bool:
        """Muted or reset before it was answered: nothing more is done with it."""
        return self.cancelled

    def add(self, pcm: np.ndarray) -> None:
        """More audio (16 kHz mono float32)."""
        self.audio.put_nowait(pcm)

    def finish(self, end_s: float) -> None:
        """The end of speech (decided now)."""
        self.end_s, self.ended_at = end_s, time.perf_counter()
        self.marks["end"] = _now()
        self.audio.put_nowait(None)


class UtteranceRunner:
    """Turns utterances into results; one instance per voice stage."""

    def __init__(self, ctx: StageContext, service: AssistantService) -> None:
        self.ctx = ctx
        self.service = service
        self.voice = ctx.settings.voice
        self.on_final: Callable[[Result], None] | None = None  # spoken output hooks in here

    # -- the two halves ------------------------------------------------------------------
    async def run(self, utt: Utterance) -> None:
        """Encode and answer ``utt``; failures become ``error`` events, never a dead stage."""
        soft: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        encoding = asyncio.create_task(self._encode(utt, soft), name=f"encode:{utt.id[:8]}")
        try:
            if utt.wake:
                await self._wake_phrase(utt, soft)
            else:
                await self._converse(utt, soft)
        except EngineError as exc:
            _LOGGER.exception("utterance %s failed", utt.id)
            await self._emit(error_event("engine_error", str(exc), None))
        finally:
            if not encoding.done():
                encoding.cancel()
            await asyncio.gather(encoding, return_exceptions=True)

    async def _encode(self, utt: Utterance, soft: asyncio.Queue[np.ndarray | None]) -> None:
        encoder = self.service.audio
        assert encoder is not None
        stream = encoder.stream()
        kept: list[np.ndarray] = []
        ended = False
        while not ended:
            chunks = [await utt.audio.get()]
            while not utt.audio.empty():
                chunks.append(utt.audio.get_nowait())
            ended = chunks[-1] is None
            pcm = [c for c in chunks if c is not None]
            utt.encoder_behind = sum(len(c) for c in pcm) > ENCODER_BEHIND_SAMPLES
            if self.voice.debug_keep_audio:
                kept += pcm
            if ended:
                utt.marks["seen"] = _now()
            if pcm:
                tokens = await self.service.in_audio_worker(stream.push, np.concatenate(pcm))
                if len(tokens):
                    soft.put_nowait(tokens)
        utt.marks["pushed"] = _now()
        tail = await self.service.in_audio_worker(stream.flush)
        utt.marks["flushed"] = _now()
        if len(tail):
            soft.put_nowait(tail)
        soft.put_nowait(None)
        if kept:
            self._keep_audio(utt, np.concatenate(kept))

    async def _converse(self, utt: Utterance, soft: asyncio.Queue[np.ndarray | None]) -> None:
        service = self.service
        async with service.turn_lock:
            conversation = service.conversation
            if utt.cancelled or conversation is None:
                return
            opening = prompts.spoken_turn_opening(utt.task, utt.target_language)
            await service.in_worker(self._open_turn, conversation, opening)
            try:
                await self._prefill_speech(conversation, soft, utt)
                if utt.abandoned:
                    await service.in_worker(conversation.forget_turns, [conversation.turn])
                    return
                generated = await self._decode(utt, conversation, utt.task)
                _log_timing(utt, generated)
                wanted = utt.task == "assistant" and self.voice.transcript
                if wanted and generated.stop_reason != "cancelled":
                    text = prompts.TRANSCRIBE_AFTER
                    await service.in_worker(self._open_text_turn, conversation, text)
                    await self._decode(utt, conversation, "transcribe")
            finally:
                await service.in_worker(service.end_turn)
                await self.ctx.channels.results.put(
                    StateUpdate({"conversation_turns": service.turns})
                )

    # -- worker-thread steps ---------------------------------------------------------------
    def _open_turn(self, conversation: engine.Conversation, opening: str) -> None:
        """The conversation's next turn: retention applied, then the spoken turn opened."""
        self.service.start_turn()
        self._open_spoken(conversation, opening)

    def _open_spoken(self, conversation: engine.Conversation, opening: str) -> None:
        """Add and prefill the spoken turn's opening (instruction, ``<start_of_audio>``)."""
        conversation.add_text(opening)
        conversation.add_ids([self._config_id("boa_token_id")])
        conversation.feed()

    def _open_text_turn(self, conversation: engine.Conversation, text: str) -> None:
        conversation.add_text(engine.chat.turn("user", text) + engine.chat.generation_prompt())

    def _add_soft(self, conversation: engine.Conversation, tokens: np.ndarray) -> None:
        audio_id = self._config_id("audio_token_id")
        conversation.add_ids(np.full(len(tokens), audio_id, np.int64), tokens)  # [k], [k, H]

    def _feed_soft(self, conversation: engine.Conversation, tokens: np.ndarray) -> None:
        self._add_soft(conversation, tokens)
        conversation.feed()

    def _close_turn(self, conversation: engine.Conversation, last: list[np.ndarray]) -> None:
        """The last soft tokens and the closing template, fed as one pass (a pass reads every
        weight whatever its length)."""
        tokenizer = conversation.model.tokenizer
        if tokenizer is None:
            raise EngineError("the checkpoint has no tokenizer.json: cannot close the turn")
        if last:
            self._add_soft(conversation, np.concatenate(last))
        closing = tokenizer.encode(prompts.spoken_turn_closing())
        conversation.add_ids([self._config_id("eoa_token_id"), *closing])
        conversation.feed()  # here rather than in reply(), so that the two can be timed apart

    def _config_id(self, name: str) -> int:
        model = self.service.model
        assert model is not None
        value = getattr(model.checkpoint.multimodal_tokens, name)
        if value is None:
            raise EngineError(f"the checkpoint's config has no {name}: it cannot take audio")
        return int(value)

    # -- steps on the loop -----------------------------------------------------------------
    async def _prefill_speech(
        self,
        conversation: engine.Conversation,
        soft: asyncio.Queue[np.ndarray | None],
        utt: Utterance,
    ) -> None:
        """Prefill soft tokens as they come (batched while the encoder is behind); from the end
        of speech on, hold them, and feed them with the closing template tokens in one pass."""
        marks = utt.marks
        held: list[np.ndarray] = []
        while True:
            batch = [await soft.get()]
            while not soft.empty():
                batch.append(soft.get_nowait())
            held += [b for b in batch if b is not None]
            if batch[-1] is None:
                break
            enough = sum(len(b) for b in held) >= PREFILL_MIN_TOKENS or not utt.encoder_behind
            # once the end is decided, the rest waits for the closing pass: one read of the weights
            if held and enough and utt.ended_at is None:
                await self.service.in_worker(self._feed_soft, conversation, np.concatenate(held))
                held = []
        marks["prefilled"] = _now()
        await self.service.in_worker(self._close_turn, conversation, held)
        marks["closed"] = _now()

    async def _decode(
        self, utt: Utterance, conversation: engine.Conversation, task: str
    ) -> Generated:
        """Decode the open model turn, publishing partials and the final result of ``task``."""
        service = self.service
        sink = LoopSink(self.ctx.channels.results)
        make = self._result_maker(utt, task)

        def partial(text: str, tokens: int) -> None:
            sink.put(make(text, False, {"tokens": tokens}))

        generated: Generated = await service.in_worker(
            service.answer, conversation, service.token_limit(), partial, utt.ended_at
        )
        final = make(generated.text, True, generated.fields())
        await self._emit(final)
        if self.on_final is not None:
            self.on_final(final)
        return generated

    def _result_maker(self, utt: Utterance, task: str) -> ResultMaker:
        tier = self.service.running_tier() or "full"

        def make(text: str, final: bool, fields: dict[str, Any]) -> Result:
            if task == "assistant":
                extra = {"ttft_ms": 0.0, **fields, "text": text}
                return Answer(utterance_id=utt.id, final=final, tier=tier, **extra)
            if task == "translate":
                return Translation(utterance_id=utt.id, text=text, final=final,
                                   source_language=None,
                                   target_language=utt.target_language or "en")  # fmt: skip
            return Transcript(utterance_id=utt.id, text=text, final=final,
                              start_s=round(utt.start_s, 3),
                              end_s=None if utt.end_s is None else round(utt.end_s, 3))  # fmt: skip

        return make

    # -- wake phrase -----------------------------------------------------------------------
    async def _wake_phrase(self, utt: Utterance, soft: asyncio.Queue[np.ndarray | None]) -> None:
        """Transcribe in a scratch conversation; on the phrase, the rest is a typed request."""
        service = self.service
        model = service.model
        assert model is not None
        scratch = await service.in_worker(
            engine.Conversation, model, service.engine_tier(service.running_tier()), SCRATCH_CONTEXT
        )
        opening = prompts.spoken_turn_opening("transcribe", None)
        await service.in_worker(self._open_spoken, scratch, opening)
        await self._prefill_speech(scratch, soft, utt)
        heard: Generated = await service.in_worker(
            generate, scratch, WAKE_TRANSCRIPT_TOKENS, None, None, 1.0, utt.ended_at
        )
        request = prompts.after_wake_phrase(heard.text, self.voice.wake_phrase)
        if request is None or not request.strip():
            data = {"utterance_id": utt.id, "reason": "no_wake_phrase" if request is None else
                    "empty_request", "heard": heard.text[:200]}  # fmt: skip
            await self._emit(Event(event_type="utterance_ignored", data=data))
            return
        if self.voice.transcript or utt.task == "transcribe":
            await self._emit(self._result_maker(utt, "transcribe")(request, True, {}))
        if utt.task == "transcribe":
            return
        async with service.turn_lock:
            conversation = service.conversation
            if utt.cancelled or conversation is None:
                return
            content = prompts.text_turn(utt.task, request, utt.target_language)
            await service.in_worker(self._open_typed_turn, conversation, content)
            try:
                await self._decode(utt, conversation, utt.task)
            finally:
                await service.in_worker(service.end_turn)

    def _open_typed_turn(self, conversation: engine.Conversation, content: str) -> None:
        self.service.start_turn()
        self._open_text_turn(conversation, content)

    # -- plumbing --------------------------------------------------------------------------
    async def _emit(self, item: Result) -> None:
        await self.ctx.channels.results.put(item)

    def _keep_audio(self, utt: Utterance, pcm: np.ndarray) -> None:
        """``voice.debug_keep_audio``: the utterance as 16-bit WAV in the state directory."""
        folder = Path(self.ctx.settings.daemon.state_dir) / "debug-audio"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{utt.id}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
        _LOGGER.info("debug: utterance audio kept in %s", path)


def _log_timing(utt: Utterance, generated: Generated) -> None:
    """Debug: where the time from the end of speech to the first token went, ms after the end:
    wall clock, and the process's CPU time (all threads; load-independent)."""
    end = utt.marks.get("end")
    if end is None or not _LOGGER.isEnabledFor(logging.DEBUG):
        return
    steps = [k for k in ("seen", "pushed", "flushed", "prefilled", "closed") if k in utt.marks]
    wall = " ".join(f"{k}={(utt.marks[k][0] - end[0]) * 1000:.1f}" for k in steps)
    cpu = " ".join(f"{k}={(utt.marks[k][1] - end[1]) * 1000:.1f}" for k in steps)
    _LOGGER.debug(
        "utterance %s timing after the end of speech, ms: %s first_token=%.1f; process CPU ms: %s",
        utt.id, wall, generated.ttft_ms, cpu,
    )  # fmt: skip
