"""A conversation survives full → e2b → full (must-show 3).

After each switch (``Conversation.rebuild``, what the assistant runs in the
background), the logits of the next step equal those of a fresh prefill of
the same history under the new tier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeagent import engine
from edgeagent.engine.conversation import Segment

TOLERANCE = 3e-4  # one pass vs chunked prefill: float32 summation order, logits of order 1


def next_step(conversation: engine.Conversation, text: str) -> np.ndarray:
    conversation.user_turn(text)
    logits, _ = conversation.feed()
    assert logits is not None
    return logits


def fresh(model: engine.TextModel, history: list[Segment], tier: str, text: str) -> np.ndarray:
    """The same history prefilled into a new cache under ``tier``, then the same next step."""
    conversation = engine.Conversation(model, tier)
    conversation.history.clear()
    conversation._unfed.clear()  # start without the BOS it adds: the history has one
    for segment in history:
        conversation.add_ids(segment.ids, segment.embeds)
    conversation.feed()
    return next_step(conversation, text)


def test_full_e2b_full_round_trip(tiny_model: Path) -> None:
    model = engine.load(tiny_model, max_context=1024)
    assert {"full", "e2b"} <= set(model.tiers)
    rng = np.random.default_rng(7)
    chat = engine.Conversation(model, "full")
    while chat.length < 300:  # a few hundred tokens of turns, answered greedily
        chat.user_turn(" ".join(f"word{int(n)}" for n in rng.integers(0, 500, 12)))
        chat.reply(engine.GREEDY, 24)
    before = chat.length
    assert before >= 300

    for tier, text in (("e2b", "Now smaller."), ("full", "And back.")):
        fed = chat.rebuild(tier)
        assert fed == before
        assert chat.state.tier == model.tier(tier)
        history = list(chat.history)
        logits = next_step(chat, text)
        np.testing.assert_array_equal(logits, fresh(model, history, tier, text))  # bit for bit
        one_pass = model.logits(chat.ids(), tier=tier)[-1]
        assert np.max(np.abs(logits - one_pass)) <= TOLERANCE
        other = model.logits(chat.ids(), tier="full" if tier == "e2b" else "e2b")[-1]
        assert np.max(np.abs(logits - other)) > 100 * TOLERANCE  # the tiers do differ
        chat.reply(engine.GREEDY, 16)
        before = chat.length
