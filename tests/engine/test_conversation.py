"""One KV cache across turns: each turn prefills only its own tokens."""

from __future__ import annotations

import numpy as np

from edgeagent.engine import GREEDY, Conversation, TextModel, TierPlan

from .conftest import TOLERANCE

TURN_1 = [105, 7, 8, 9, 10, 11, 106, 12, 105, 13]
TURN_2 = [105, 20, 21, 22, 23, 24, 25, 26, 27, 106, 12, 105, 13]


def test_second_turn_prefills_only_its_own_tokens(tiny_text: TextModel) -> None:
    conversation = Conversation(tiny_text, max_context=128)
    conversation.begin_turn()
    conversation.add_ids(TURN_1)
    _, fed_first = conversation.feed()
    assert fed_first == 1 + len(TURN_1)  # BOS + the turn
    answer, _ = conversation.reply(GREEDY, max_new_tokens=6)
    assert answer
    before = conversation.state.tokens_processed
    conversation.begin_turn()
    conversation.add_ids(TURN_2)
    logits, fed = conversation.feed()
    closing = len(conversation.history[-2])  # the end-of-turn marker of the reply, not yet fed
    assert fed == closing + len(TURN_2)
    assert conversation.state.tokens_processed - before == fed
    history = conversation.ids()
    assert conversation.state.position == len(history)
    whole = tiny_text.logits(history)[-1]
    assert np.max(np.abs(logits - whole)) <= TOLERANCE


def test_rebuild_under_another_tier_equals_a_fresh_prefill(
    tiny_text: TextModel, reference: dict
) -> None:
    plan = TierPlan(reference["tier_e2b_ffn_dims"], reference["tier_e2b_skip_layers"])
    conversation = Conversation(tiny_text, max_context=128)
    conversation.begin_turn()
    conversation.add_ids(TURN_1)
    conversation.reply(GREEDY, max_new_tokens=4)
    fed = conversation.rebuild(plan)
    assert fed == len(conversation.ids())
    conversation.begin_turn()
    conversation.add_ids(TURN_2)
    logits, _ = conversation.feed()
    expected = tiny_text.logits(conversation.ids(), tier=plan)[-1]
    assert np.max(np.abs(logits - expected)) <= TOLERANCE


def test_a_full_context_drops_old_turns_but_keeps_the_preamble(tiny_text: TextModel) -> None:
    conversation = Conversation(tiny_text, max_context=48)
    for _ in range(6):
        conversation.begin_turn()
        conversation.add_ids(TURN_2)
        conversation.reply(GREEDY, max_new_tokens=3)
        assert conversation.state.position <= 48
    history = conversation.ids()
    assert history[0] == tiny_text.config.bos_token_id
    assert len(history) <= 48
    logits, _ = conversation.feed()
    assert np.max(np.abs(logits - tiny_text.logits(history)[-1])) <= TOLERANCE


def test_a_cancelled_reply_keeps_the_history_consistent(tiny_text: TextModel) -> None:
    conversation = Conversation(tiny_text, max_context=128)
    conversation.begin_turn()
    conversation.add_ids(TURN_1)
    steps: list[int] = []
    ids, reason = conversation.reply(
        GREEDY, max_new_tokens=20, on_token=steps.append, should_stop=lambda: len(steps) >= 3
    )
    assert reason == "cancelled" and len(ids) == 3  # stopped at the next token, not at 20
    conversation.begin_turn()
    conversation.add_ids(TURN_2)
    logits, _ = conversation.feed()
    assert conversation.ids()[-len(TURN_2) - 1] == 106  # the cancelled turn was closed
    assert np.max(np.abs(logits - tiny_text.logits(conversation.ids())[-1])) <= TOLERANCE


def test_text_and_soft_tokens_fed_together_take_one_pass(tiny_text: TextModel) -> None:
    """Runs of text and soft tokens added before a feed are prefilled as one pass (a pass reads
    every weight): same logits as feeding them one at a time, one forward call instead of three."""
    hidden = tiny_text.config.hidden_size
    soft = np.random.default_rng(3).standard_normal((5, hidden)).astype(np.float32)  # [5, H]

    def conversation_fed(apart: bool) -> tuple[Conversation, np.ndarray | None, int]:
        conversation = Conversation(tiny_text, max_context=128)
        conversation.begin_turn()
        conversation.add_ids(TURN_1[:4])
        calls = 0
        forward = tiny_text.forward

        def counted(*args: object, **kwargs: object) -> np.ndarray:
            nonlocal calls
            calls += 1
            return forward(*args, **kwargs)  # type: ignore[arg-type]

        tiny_text.forward = counted  # type: ignore[method-assign]
        try:
            conversation.feed()
            calls = 0
            logits = None
            for ids, embeds in (([7] * 5, soft), (TURN_1[4:], None), ([9, 10], None)):
                conversation.add_ids(ids, embeds)
                if apart:
                    logits, _ = conversation.feed()
            if not apart:
                logits, _ = conversation.feed()
        finally:
            del tiny_text.forward
        return conversation, logits, calls

    apart, apart_logits, apart_calls = conversation_fed(apart=True)
    together, together_logits, together_calls = conversation_fed(apart=False)
    assert (apart_calls, together_calls) == (3, 1)
    assert together.state.position == apart.state.position == len(together.ids())
    assert apart_logits is not None and together_logits is not None
    assert np.max(np.abs(together_logits - apart_logits)) <= TOLERANCE
