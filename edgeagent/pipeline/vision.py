"""The vision stage: camera → frame gate → vision encoder, never in the way of audio.

Frames come from the configured camera source (:mod:`edgeagent.capture.camera`:
read in a thread of its own, only the newest kept). Three coroutines, so
that none waits on another's slow work:

- **gate** (on the loop; the comparison itself in a thread): offers every
  frame to :attr:`Sight.gate <edgeagent.pipeline.sight.Sight.gate>`. A frame
  sent on for a new scene (the first frame, or a change score of at least
  ``camera.gate_threshold``) is published at once as a ``scene_change`` event
  with its ``frame_id``; every frame sent on (also for a request or the
  heartbeat) goes to the encoder's one-frame mailbox, where a newer frame
  replaces one not yet taken.
- **encode** (the vision encoder's thread): encodes the mailbox's frame into
  256 soft tokens and hands them to :class:`~edgeagent.pipeline.sight.Sight`,
  which keeps the newest for ``cmd/ask`` with ``"look": true``.
- **describe** (the model's worker thread), while the ``describe`` task is
  on: for the newest encoded frame, a description decoded in a scratch
  conversation (the image, then :data:`~edgeagent.pipeline.prompts.DESCRIBE`)
  is published on ``<base>/vision`` with the frame's id, the tags read from
  its ``Tags:`` line. Descriptions never enter the conversation.

Governor: the rung's ``max_fps`` caps the camera (``CameraCapture.set_max_fps``);
on a rung with vision off (``economy``) frames are still gated, so scene
changes are still published, but nothing is encoded; on ``suspend`` (encoders
off) frames are dropped unseen. A camera that cannot be used at all (no
OpenCV, no vision tower in the checkpoint) leaves the stage idle with a log
line; a finite source (a file without ``camera.file_loop``) ending finishes
the stage. Either way ``look`` then fails at once with a ``no_camera`` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from edgeagent import engine
from edgeagent.capture.base import SourceEvent
from edgeagent.capture.camera import CameraCapture, Frame
from edgeagent.dsp.frame_gate import GateDecision
from edgeagent.errors import CameraError, EngineError
from edgeagent.events import Event, Result, VisionResult, error_event, new_id
from edgeagent.pipeline import prompts
from edgeagent.pipeline.answering import generate
from edgeagent.pipeline.service import AssistantService
from edgeagent.pipeline.sight import SeenFrame
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)

SCRATCH_CONTEXT = 512  # a description's conversation: one image (256), the prompt, the answer


@dataclass(frozen=True)
class _Sent:
    """A frame the gate sent on, waiting for the encoder."""

    frame: Frame
    frame_id: str
    decision: GateDecision
    sent: int


class Vision(Stage):
    """See the module docstring. An intake stage: cancelled first at shutdown."""

    intake = True

    def __init__(self, ctx: StageContext, service: AssistantService) -> None:
        self.ctx = ctx
        self.service = service
        self.settings = ctx.settings.camera
        self._to_encode: _Sent | None = None  # the encoder's mailbox (newest kept)
        self._to_describe: SeenFrame | None = None  # the describer's mailbox (newest kept)
        self._encode_wake = asyncio.Event()
        self._describe_wake = asyncio.Event()
        self._ended = False  # the camera source ended: no more frames to encode
        self._encoded_all = False  # ... and the encoder has finished: nothing more to describe
        self._tasks: set[asyncio.Task[Any]] = set()
        self.max_fps = self.settings.max_fps

    async def run(self) -> None:
        service, sight = self.service, self.service.sight
        if service.model is None or service.vision is None:
            why = "no model (model.path)" if service.model is None else "no vision encoder"
            _LOGGER.warning("vision stage idle: %s", why)
            sight.unavailable(f"{why}: camera frames are not encoded")
            return
        try:
            capture = self._open()
        except CameraError as exc:
            _LOGGER.warning("vision stage idle: %s", exc)
            sight.unavailable(str(exc))
            return
        sight.capturing()
        encoder = self._spawn(self._encode_loop(), "vision:encode")
        describer = self._spawn(self._describe_loop(), "vision:describe")
        try:
            async with contextlib.aclosing(capture.frames()) as frames:
                async for frame in frames:
                    for helper in (encoder, describer):
                        if helper.done():  # failed: so does the stage, which is restarted
                            helper.result()
                            raise EngineError(f"{helper.get_name()} stopped")
                    await self._offer(capture, frame)
            sight.unavailable("the camera source ended (camera.file_loop is off)")
            self._ended = True
            self._encode_wake.set()
            await encoder  # the last frame sent on is encoded, and described
            await describer
        finally:
            if not self._ended:  # failed (restarted after a backoff) or shut down
                sight.unavailable("the vision stage is not running")
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _open(self) -> CameraCapture:
        from edgeagent.capture.camera_factory import open_camera  # noqa: PLC0415 - OpenCV

        self.max_fps = self._rung_fps()
        return open_camera(self.settings, self._source_event, max_fps=self.max_fps)

    def _rung_fps(self) -> float:
        rung = self.service.rung_limits()
        if rung is not None and rung.max_fps is not None:
            return min(rung.max_fps, self.settings.max_fps)
        return self.settings.max_fps

    # -- gate (on the loop) ----------------------------------------------------------------
    async def _offer(self, capture: CameraCapture, frame: Frame) -> None:
        service, sight = self.service, self.service.sight
        fps = self._rung_fps()
        if fps != self.max_fps:
            _LOGGER.info("camera: %.3g frames/s (tier %s)", fps, service.running_tier())
            capture.set_max_fps(fps)
            self.max_fps = fps
        rung = service.rung_limits()
        if rung is not None and not rung.encoders:
            return  # suspend: nothing is looked at
        decision = await asyncio.to_thread(sight.gate.offer, frame.image, frame.at_s)
        if not decision.send:
            return
        sent = _Sent(frame, new_id(), decision, sight.sent())
        if decision.scene_changed:
            data = decision.data(frame.index, frame.at_s, sent.frame_id)
            await self._emit(Event(event_type="scene_change", data=data))
        if rung is None or rung.vision:
            self._to_encode = sent
            self._encode_wake.set()

    # -- encode (the vision thread) --------------------------------------------------------
    async def _encode_loop(self) -> None:
        encoder = self.service.vision
        assert encoder is not None
        while True:
            if self._to_encode is None and self._ended:
                self._encoded_all = True
                self._describe_wake.set()
                return
            await self._encode_wake.wait()
            self._encode_wake.clear()
            sent, self._to_encode = self._to_encode, None
            if sent is None:
                continue
            try:
                tokens = await self.service.in_vision_worker(encoder.encode, sent.frame.image)
            except (EngineError, CameraError, ValueError) as exc:
                _LOGGER.exception("frame %d could not be encoded", sent.frame.index)
                await self._emit(error_event("engine_error", f"vision encoder: {exc}", None))
                continue
            seen = SeenFrame(sent.frame_id, sent.frame.index, sent.frame.at_s,
                             str(sent.decision.reason), sent.sent, tokens)  # fmt: skip
            _LOGGER.debug("frame %d (%s) encoded: %s", seen.index, seen.reason, tokens.shape)
            self.service.sight.encoded(seen)
            if self.service.describing:
                self._to_describe = seen
                self._describe_wake.set()

    # -- describe (the model's worker) -----------------------------------------------------
    async def _describe_loop(self) -> None:
        while True:
            if self._to_describe is None and self._encoded_all:
                return
            await self._describe_wake.wait()
            self._describe_wake.clear()
            seen, self._to_describe = self._to_describe, None
            if seen is None:
                continue
            rung = self.service.rung_limits()
            if not self.service.describing or (rung is not None and not rung.vision):
                continue
            try:
                text = await self.service.in_worker(self._describe, seen)
            except EngineError as exc:
                _LOGGER.exception("frame %d could not be described", seen.index)
                await self._emit(error_event("engine_error", f"describe: {exc}", None))
                continue
            description, tags = prompts.split_description(text)
            await self._emit(VisionResult(frame_id=seen.frame_id, description=description,
                                          tags=tags))  # fmt: skip

    def _describe(self, seen: SeenFrame) -> str:
        """Worker thread: the image and the describe prompt in a scratch conversation."""
        service = self.service
        model = service.model
        assert model is not None
        scratch = engine.Conversation(
            model, service.engine_tier(service.running_tier()), SCRATCH_CONTEXT
        )
        scratch.add_text(prompts.image_turn_opening())
        scratch.add_image(seen.tokens)
        scratch.add_text(prompts.image_turn_closing(prompts.DESCRIBE))
        limit = service.token_limit(self.settings.describe_max_tokens)  # the rung's cap too

        def urgent() -> bool:  # a critical temperature stops it, as it stops answers
            return service.interrupt is not None and service.interrupt.is_set()

        return generate(scratch, limit, urgent).text

    # -- plumbing --------------------------------------------------------------------------
    def _source_event(self, event: SourceEvent) -> None:
        if event.kind in ("opened", "reopened"):
            self.service.sight.gate.reset()  # a (re)opened camera: its first frame is a scene
        self._spawn(self._emit(Event(event_type=event.event_type, data=event.data())),
                    "vision:emit")  # fmt: skip

    async def _emit(self, item: Result) -> None:
        await self.ctx.channels.results.put(item)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _LOGGER.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
