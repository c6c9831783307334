"""Gemma's chat format, as text the tokenizer turns into special tokens.

``<start_of_turn>user\\n … <end_of_turn>\\n<start_of_turn>model\\n``; the
model's turns are called ``model``, and a system prompt is folded into the
first user turn (Gemma has no system role).
"""

from __future__ import annotations

from collections.abc import Sequence

START, END = "<start_of_turn>", "<end_of_turn>"
ROLES = {"user": "user", "model": "model", "assistant": "model"}


def turn(role: str, content: str) -> str:
    """One closed turn: ``<start_of_turn>{role}\\n{content}<end_of_turn>\\n``."""
    return f"{START}{ROLES[role]}\n{content}{END}\n"


def generation_prompt() -> str:
    """What opens the model's reply."""
    return f"{START}model\n"


def render(messages: Sequence[tuple[str, str]], system: str | None = None) -> str:
    """A whole prompt (without BOS) ending where the model starts to answer.

    ``messages`` are ``(role, content)`` pairs, roles ``user`` and ``model``.
    """
    parts = []
    for index, (role, content) in enumerate(messages):
        text = f"{system}\n\n{content}" if index == 0 and system else content
        parts.append(turn(role, text))
    return "".join(parts) + generation_prompt()
