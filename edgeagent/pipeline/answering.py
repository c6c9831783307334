"""Decoding one model turn with partial results: the worker-thread half of every answer.

:func:`generate` answers the conversation's open model turn. While it
decodes, ``on_partial(text, tokens)`` is called (on the worker thread) with
the full text so far: as soon as there is text, then at most every
``interval_s``; a partial's text is always a prefix of the final text.
The event-loop half (:class:`LoopSink`) turns those calls
into results on the publisher's queue, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeagent import engine
from edgeagent.errors import EngineError

SAMPLING = engine.SamplingParams()  # Gemma's defaults: temperature 1.0, top-k 64, top-p 0.95
PartialSink = Callable[[str, int], None]


@dataclass(frozen=True)
class Generated:
    """A finished model turn. Times in ms, speed in tokens/s."""

    text: str
    tokens: int
    ttft_ms: float
    decode_tokens_per_s: float | None
    stop_reason: str

    def fields(self) -> dict[str, Any]:
        """The :class:`~edgeagent.events.Answer` fields this fills."""
        return {
            "text": self.text,
            "tokens": self.tokens,
            "ttft_ms": self.ttft_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "stop_reason": self.stop_reason,
        }


def generate(
    conversation: engine.Conversation,
    limit: int,
    should_stop: Callable[[], bool] | None = None,
    on_partial: PartialSink | None = None,
    interval_s: float = 0.25,
    started: float | None = None,
) -> Generated:
    """Decode the open model turn (worker thread); ``started`` (perf_counter) times the TTFT."""
    model = conversation.model
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise EngineError(f"{model.checkpoint.path} has no tokenizer.json: cannot make text")
    stops = set(model.config.eos_token_ids)
    started = time.perf_counter() if started is None else started
    ids: list[int] = []
    first: list[float] = []
    last_partial = [0.0]
    published = [""]
    settled = [0]  # ids whose text no later token can change

    def on_token(token: int) -> None:
        now = time.perf_counter()
        if not first:
            first.append(now)
        if token in stops:
            return
        ids.append(token)
        if not _is_byte(tokenizer.id_to_token(token)):
            settled[0] = len(ids)
        if on_partial is None or (published[0] and now - last_partial[0] < interval_s):
            return  # the first text goes out at once, the rest at most every interval_s
        # a trailing run of byte tokens is held back: later bytes may still join it
        text = tokenizer.decode(ids[: settled[0]])
        if text != published[0]:
            last_partial[0], published[0] = now, text
            on_partial(text, len(ids))

    out, reason = conversation.reply(SAMPLING, limit, on_token, should_stop)
    ended = time.perf_counter()
    answer = [t for t in out if t not in stops]
    ttft = (first[0] if first else ended) - started
    decode_s = ended - (first[0] if first else ended)
    speed = round((len(out) - 1) / decode_s, 2) if len(out) > 1 and decode_s > 0 else None
    return Generated(
        text=tokenizer.decode(answer),
        tokens=len(out),
        ttft_ms=round(ttft * 1000, 1),
        decode_tokens_per_s=speed,
        stop_reason=reason,
    )


def _is_byte(piece: str | None) -> bool:
    """A byte-fallback token (``<0x41>``): the decoder joins runs of them into UTF-8."""
    return piece is not None and len(piece) == 6 and piece.startswith("<0x") and piece[-1] == ">"


class LoopSink:
    """Carries items made on the worker thread to an asyncio queue, in order."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue
        self.loop = asyncio.get_running_loop()

    def put(self, item: Any) -> None:
        """Thread-safe: queue ``item`` (waiting for room on the loop, never on the caller)."""
        asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
