"""The assistant's lasting state: model, audio encoder, conversation, controls, history.

:class:`AssistantService` outlives stage restarts. All model work — prefill,
decode, a tier switch's rebuild, a reset — runs on its single worker thread,
so the event loop never blocks and the conversation is never touched by two
threads; the audio encoder has a thread of its own, so speech is encoded
while an answer is being decoded, and so has the vision encoder (camera
frames are encoded while the model answers; :class:`~edgeagent.pipeline.sight.Sight`
keeps the newest encoded frame for ``cmd/ask`` with ``"look": true``).

A turn of the conversation (a typed ``ask`` or an utterance) holds
:attr:`AssistantService.turn_lock` from its first token to its answer, so
turns never interleave; the lock is fair, so they run in arrival order.
After each turn the history is saved (``voice.persist_history``); before each
turn, turns past ``voice.history_max_turns`` or ``voice.history_max_age_s``
are forgotten.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgeagent import engine
from edgeagent.errors import CheckpointError, EngineError
from edgeagent.governor.ladder import Ladder, Rung, build_ladder
from edgeagent.governor.stage import GovernorService
from edgeagent.pipeline import history
from edgeagent.pipeline.answering import Generated, PartialSink, generate
from edgeagent.pipeline.sight import Sight
from edgeagent.settings import Settings
from edgeagent.stages import StageContext

if TYPE_CHECKING:
    from edgeagent.engine.audio import AudioEncoder
    from edgeagent.engine.vision import VisionEncoder

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

AUTO = "auto"


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
        self.task: str = settings.voice.task
        self.target_language: str | None = (
            settings.voice.target_language if self.task == "translate" else None
        )
        self.turns = 0
        self.audio: AudioEncoder | None = None
        self.vision: VisionEncoder | None = None
        self.sight = Sight(settings.camera)
        self.describing = settings.camera.describe  # the describe task (cmd/task)
        self.turn_times: dict[int, float] = {}  # turn number -> wall-clock start, s
        self.generating = False  # an answer is being decoded
        self.cancel_answer = threading.Event()  # barge-in: stop that answer at its next token
        self.interrupt: threading.Event | None = None  # the governor's (Channels.interrupt)
        self._turn_lock: asyncio.Lock | None = None
        self.voice_done = asyncio.Event()  # a finite audio source ended and was answered
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="edgeagent-worker")
        self._audio_worker = ThreadPoolExecutor(1, thread_name_prefix="edgeagent-audio")
        self._vision_worker = ThreadPoolExecutor(1, thread_name_prefix="edgeagent-vision")

    @property
    def turn_lock(self) -> asyncio.Lock:
        """Held by a turn from its first token to its answer (created in the running loop)."""
        if self._turn_lock is None:
            self._turn_lock = asyncio.Lock()
        return self._turn_lock

    async def in_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def in_audio_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the audio encoder's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._audio_worker, fn, *args)

    async def in_vision_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the vision encoder's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._vision_worker, fn, *args)

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
        self.conversation = await self.in_worker(self._new_conversation)
        if self.settings.voice.persist_history:
            self.turn_times = history.load(self.conversation, self.history_file)
            self.turns = len(self.turn_times)
            if self.turn_times:
                await self.in_worker(self.conversation.rebuild, tier)
        if self.settings.audio.enabled:
            self.audio = await self.in_worker(self._load_audio, model)
        if self.settings.camera.enabled:
            self.vision = await self.in_worker(self._load_vision, model)
        _LOGGER.info("model %s loaded in %.1fs", path, time.monotonic() - started)

    def _load_audio(self, model: engine.TextModel) -> AudioEncoder | None:
        from edgeagent.engine.audio import load_audio  # noqa: PLC0415 - only with audio on

        try:
            return load_audio(
                model.checkpoint,
                self.settings.model.kernels,
                bits=self.settings.audio.encoder_bits,
                threads=self.settings.model.threads,  # one ONNX Runtime pool per process
            )
        except CheckpointError as exc:
            _LOGGER.warning("no audio encoder, speech is not processed: %s", exc)
            return None

    def _load_vision(self, model: engine.TextModel) -> VisionEncoder | None:
        from edgeagent.engine.vision import load_vision  # noqa: PLC0415 - only with a camera

        kernels = self.settings.model.kernels
        try:
            try:
                # one ONNX Runtime pool per process, as for the audio encoder
                return load_vision(model.checkpoint, kernels, threads=self.settings.model.threads)
            except EngineError as exc:
                if kernels == "reference" or isinstance(exc, CheckpointError):
                    raise
                _LOGGER.warning("vision encoder: %s kernels unavailable (%s); using reference",
                                kernels, exc)  # fmt: skip
                return load_vision(model.checkpoint, "reference")
        except CheckpointError as exc:
            _LOGGER.warning("no vision encoder, camera frames are not encoded: %s", exc)
            return None

    def _new_conversation(self) -> engine.Conversation:
        """A fresh conversation under the running tier, with the system prompt (worker)."""
        assert self.model is not None
        conversation = engine.Conversation(self.model, self.engine_tier(self.running_tier()))
        conversation.max_images = self.settings.camera.max_images_in_context
        if self.settings.voice.system_prompt:
            conversation.add_text(engine.chat.turn("user", self.settings.voice.system_prompt))
        return conversation

    # -- turns -------------------------------------------------------------------------
    @property
    def history_file(self) -> Path:
        """Where the conversation is saved (``daemon.state_dir``)."""
        return history.history_path(self.settings.daemon.state_dir)

    def should_stop(self) -> bool:
        """Stop the answer being decoded: a barge-in, or an urgent governor request."""
        urgent = self.interrupt is not None and self.interrupt.is_set()
        return urgent or self.cancel_answer.is_set()

    def token_limit(self, requested: int | None = None) -> int:
        """Longest answer: the request's (else ``voice.max_new_tokens``), capped by the rung."""
        limit = requested or self.settings.voice.max_new_tokens
        if (rung := self.rung_limits()) is not None and rung.max_new_tokens is not None:
            limit = min(limit, rung.max_new_tokens)
        return limit

    def answer(
        self,
        conversation: engine.Conversation,
        limit: int,
        on_partial: PartialSink | None,
        started: float | None = None,
    ) -> Generated:
        """Worker thread: decode the open model turn; speech that starts meanwhile may cancel it
        (``generating`` is what the voice stage's barge-in looks at)."""
        self.cancel_answer.clear()
        self.generating = True
        try:
            interval = self.settings.voice.partial_interval_ms / 1000
            return generate(conversation, limit, self.should_stop, on_partial, interval, started)
        finally:
            self.generating = False

    def start_turn(self) -> None:
        """Worker thread, turn lock held: forget expired turns, open a new one."""
        conversation = self.conversation
        assert conversation is not None
        voice = self.settings.voice
        now = time.time()
        age = voice.history_max_age_s
        expired = history.expired_turns(self.turn_times, now, voice.history_max_turns - 1, age)
        if expired:
            # forget down to three quarters of the limit: the cache is then rebuilt once every
            # few turns, not before every turn once the limit is reached
            keep = max(0, voice.history_max_turns * 3 // 4 - 1)
            expired = history.expired_turns(self.turn_times, now, keep, age)
            _LOGGER.info("forgetting turns %s (retention)", expired)
            conversation.forget_turns(expired)
            for turn in expired:
                self.turn_times.pop(turn, None)
        conversation.begin_turn()
        self.turn_times[conversation.turn] = now

    def end_turn(self) -> None:
        """Worker thread, turn lock held: the turn is answered; save the history."""
        conversation = self.conversation
        assert conversation is not None
        present = set(conversation.turns())
        self.turn_times = {t: s for t, s in self.turn_times.items() if t in present}
        self.turns = len(self.turn_times)
        if self.settings.voice.persist_history:
            try:
                history.save(conversation, self.history_file, self.turn_times)
            except OSError as exc:
                _LOGGER.error("cannot save the conversation to %s: %s", self.history_file, exc)

    def reset_conversation(self) -> None:
        """Worker thread: a new, empty conversation; the saved one is wiped."""
        self.conversation = self._new_conversation()
        self.turn_times = {}
        self.turns = 0
        history.wipe(self.history_file)

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
            "describing": self.describing,
        }

    async def close(self) -> None:
        """Clean-up step: stop the worker threads (after their current jobs)."""
        self._audio_worker.shutdown(wait=True, cancel_futures=True)
        self._vision_worker.shutdown(wait=True, cancel_futures=True)
        self._worker.shutdown(wait=True, cancel_futures=True)


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        _LOGGER.error("background model work failed: %r", exc, exc_info=exc)
