"""One long-lived conversation over one KV cache.

Each turn prefills only its own tokens. The canonical history — token ids,
and for soft tokens the embeddings an encoder produced — is kept beside the
cache, so the cache can be rebuilt: under another tier (different hidden
states), after a restart, or when the context is full (old turns dropped,
system prompt kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from edgeagent.engine import chat
from edgeagent.engine.generate import DEFAULT_CHUNK, TokenCallback, decode, prefill_runs
from edgeagent.engine.model import RunState, TextModel
from edgeagent.engine.sampling import GREEDY, Sampler, SamplingParams
from edgeagent.engine.tiers import TierPlan
from edgeagent.errors import EngineError, TokenizerError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """A run of history: token ids ``[T]`` and, for soft tokens, their embeddings ``[T, H]``."""

    ids: np.ndarray
    embeds: np.ndarray | None = None
    turn: int = 0  # 0: the preamble (BOS, system prompt); 1, 2, …: conversation turns

    def __len__(self) -> int:
        return len(self.ids)


class Conversation:
    """A chat with the model that keeps its KV cache between turns."""

    def __init__(
        self,
        model: TextModel,
        tier: str | TierPlan | None = None,
        max_context: int | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.model = model
        self.chunk = chunk
        self.max_context = max_context or model.max_context
        self.state: RunState = model.new_state(tier, self.max_context)
        self.history: list[Segment] = []
        self._unfed: list[Segment] = []  # history not yet in the cache
        self._logits: np.ndarray | None = None  # after the cache's last token, if not yet answered
        self._turn = 0
        self.max_images: int | None = None  # images kept when the cache is rebuilt; None: all
        bos = model.config.bos_token_id
        if bos is not None:
            self._append(Segment(np.array([bos], dtype=np.int64)))

    # -- history -------------------------------------------------------------

    @property
    def length(self) -> int:
        """Tokens in the history, fed or not."""
        return sum(len(s) for s in self.history)

    def ids(self) -> np.ndarray:
        """The whole history as token ids ``[T]``."""
        return (
            np.concatenate([s.ids for s in self.history]) if self.history else np.zeros(0, np.int64)
        )

    @property
    def turn(self) -> int:
        """The number of the current (last opened) turn; 0 before the first."""
        return self._turn

    def turns(self) -> list[int]:
        """Numbers of the turns in the history, oldest first (the preamble, 0, excluded)."""
        return sorted({s.turn for s in self.history if s.turn > 0})

    def forget_turns(self, turns: Collection[int]) -> None:
        """Drop whole turns from the history; the cache is rebuilt at the next feed."""
        gone = set(turns) - {0}
        if not gone:
            return
        self.history = [s for s in self.history if s.turn not in gone]
        self._reset_cache()

    def restore(self, segments: Sequence[Segment]) -> None:
        """Replace the history with ``segments`` (e.g. read back after a restart).

        Nothing is prefilled yet: the next feed (or :meth:`rebuild`) does it.
        """
        hidden = self.model.config.hidden_size
        for segment in segments:
            if segment.embeds is not None and segment.embeds.shape != (len(segment), hidden):
                raise EngineError(
                    f"restored soft tokens must be [{len(segment)}, {hidden}], "
                    f"got {segment.embeds.shape}"
                )
        self.history = list(segments)
        self._turn = max((s.turn for s in self.history), default=0)
        self._reset_cache()

    def _reset_cache(self, plan: TierPlan | None = None) -> None:
        """A fresh cache (under ``plan``, else the running tier) with the whole history unfed."""
        self._prune_images()
        self.state = self.model.new_state(plan or self.state.tier, self.max_context)
        self._unfed = list(self.history)
        self._logits = None

    def _append(self, segment: Segment) -> None:
        self.history.append(segment)
        self._unfed.append(segment)

    def _encode(self, text: str) -> np.ndarray:
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            raise TokenizerError(
                f"{self.model.checkpoint.path} has no tokenizer.json; pass token ids"
            )
        return np.asarray(tokenizer.encode(text), dtype=np.int64)

    def add_text(self, text: str) -> None:
        """Append raw text (chat markers allowed) to the history without feeding it yet."""
        self.add_ids(self._encode(text))

    def add_ids(self, ids: Sequence[int] | np.ndarray, embeds: np.ndarray | None = None) -> None:
        """Append tokens (and soft-token embeddings ``[T, H]``) to the current turn."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if embeds is not None and embeds.shape != (len(ids), self.model.config.hidden_size):
            raise EngineError(
                f"embeds must be [{len(ids)}, {self.model.config.hidden_size}], got {embeds.shape}"
            )
        if len(ids):
            self._append(Segment(ids, embeds, self._turn))

    def begin_turn(self) -> None:
        """Start a turn: what follows is dropped as one unit when the context fills."""
        self._turn += 1

    def user_turn(self, text: str) -> None:
        """Open a user turn with ``text``, close it, and open the model's turn."""
        self.begin_turn()
        self.add_text(chat.turn("user", text) + chat.generation_prompt())

    # -- feeding and answering ----------------------------------------------

    def feed(self) -> tuple[np.ndarray | None, int]:
        """Prefill whatever history the cache has not seen; return (last logits, tokens fed)."""
        needed = self.state.position + sum(len(s) for s in self._unfed)
        if needed > self.max_context:
            self._make_room(needed)
        if not self._unfed:
            return self._logits, 0
        # One prefill for all of it: e.g. a spoken turn's last soft tokens and its closing template
        # cost one read of the weights, not two.
        runs = [(s.ids, s.embeds) for s in self._unfed]
        self._logits = prefill_runs(self.model, self.state, runs, self.chunk)
        fed = sum(len(s) for s in self._unfed)
        self._unfed = []
        return self._logits, fed

    def reply(
        self,
        params: SamplingParams = GREEDY,
        max_new_tokens: int = 256,
        on_token: TokenCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[list[int], str]:
        """Answer the open model turn; the answer and its closing marker join the history.

        Returns the new token ids (a final stop token included) and the stop
        reason: ``eos``, ``length``, or ``cancelled`` when ``should_stop`` said so
        (the answer so far stays in the history, closed like any other).
        """
        logits, _ = self.feed()
        if logits is None:
            raise EngineError("nothing to answer: add a user turn first")
        room = self.max_context - self.state.position - 2
        limit = min(max_new_tokens, room)
        sampler = Sampler(params)
        ids, reason = decode(
            self.model, self.state, logits, sampler, limit, on_token, should_stop=should_stop
        )
        self._logits = None
        answer = ids[:-1] if reason == "eos" else ids  # the stop token is replaced by the closing
        # the cache holds every sampled token but the last one
        fed = answer if reason == "eos" else answer[:-1]
        self.history.append(Segment(np.asarray(fed, dtype=np.int64), None, self._turn))
        closing = answer[len(fed) :] + self._closing_ids()
        self._append(Segment(np.asarray(closing, dtype=np.int64), None, self._turn))
        return ids, reason

    def _closing_ids(self) -> list[int]:
        if self.model.tokenizer is None:
            end = self.model.config.eos_token_ids[-1]
            return [end]
        return [int(t) for t in self._encode(chat.END + "\n")]

    # -- rebuilding ------------------------------------------------------------

    def rebuild(self, tier: str | TierPlan | None = None) -> int:
        """Re-prefill the whole history into a fresh cache (optionally under another tier).

        Returns how many tokens were prefilled.
        """
        self._reset_cache(self.model.tier(tier) if tier is not None else None)
        _, fed = self.feed()
        return fed

    def _make_room(self, needed: int) -> None:
        """Drop the oldest turns (the preamble stays) until the history fits; rebuild."""
        turns = sorted({s.turn for s in self.history if s.turn > 0})
        total = self.length
        dropped = []
        while total > self.max_context - self.max_context // 4 and len(turns) > 1:
            oldest = turns.pop(0)
            total -= sum(len(s) for s in self.history if s.turn == oldest)
            dropped.append(oldest)
        if total > self.max_context:
            raise EngineError(
                f"the current turn needs {total} tokens, more than max_context {self.max_context}"
            )
        _LOGGER.info("context full (%d tokens): dropped turns %s, rebuilding", needed, dropped)
        self.history = [s for s in self.history if s.turn not in dropped]
        self._reset_cache()

    # -- images (Gemma 3n: <start_of_image>, 256 soft tokens, <end_of_image>) ------------

    def _image_markers(self) -> tuple[int, int, int]:
        """``(boi, image, eoi)`` token ids of the checkpoint's config."""
        tokens = self.model.checkpoint.multimodal_tokens
        boi, soft, eoi = tokens.boi_token_id, tokens.image_token_id, tokens.eoi_token_id
        if boi is None or soft is None or eoi is None:
            raise EngineError(
                f"{self.model.checkpoint.path}: config.json names no image tokens "
                "(boi_token_id, image_token_id, eoi_token_id): it cannot take images"
            )
        return boi, soft, eoi

    def add_image(self, embeds: np.ndarray) -> None:
        """Append an image to the current turn: ``<start_of_image>``, its soft tokens
        ``[k, H]`` (the vision encoder's output), ``<end_of_image>``; not fed yet."""
        boi, soft, eoi = self._image_markers()
        self.add_ids([boi])
        self.add_ids(np.full(len(embeds), soft, np.int64), embeds)  # [k], [k, H]
        self.add_ids([eoi])

    def _image_runs(self) -> list[int]:
        """Indices in the history of the soft-token segments of images, oldest first."""
        soft = self.model.checkpoint.multimodal_tokens.image_token_id
        if soft is None:
            return []
        return [
            i
            for i, s in enumerate(self.history)
            if s.embeds is not None and len(s) and bool(np.all(s.ids == soft))
        ]

    def images(self) -> int:
        """Images in the history (fed or not)."""
        return len(self._image_runs())

    def image_tokens(self) -> int:
        """Image soft tokens in the history (fed or not): what the next answer's prompt holds."""
        return sum(len(self.history[i]) for i in self._image_runs())

    def _prune_images(self) -> None:
        """Before a rebuild: drop all but the newest ``max_images`` images (soft tokens and
        their ``<start_of_image>`` / ``<end_of_image>`` markers); the turns' words stay."""
        if self.max_images is None:
            return
        runs = self._image_runs()
        excess = runs[: max(0, len(runs) - self.max_images)]
        if not excess:
            return
        boi, _, eoi = self._image_markers()
        gone: set[int] = set()
        for i in excess:
            gone.add(i)
            before, after = self.history[i - 1 : i], self.history[i + 1 : i + 2]
            if before and before[0].ids.tolist() == [boi]:
                gone.add(i - 1)
            if after and after[0].ids.tolist() == [eoi]:
                gone.add(i + 1)
        _LOGGER.info("dropping %d older images from the conversation (budget %d)",
                     len(excess), self.max_images)  # fmt: skip
        self.history = [s for i, s in enumerate(self.history) if i not in gone]
