"""The conversation on disk: saved after every turn, read back at start-up, wiped by a reset.

One ``conversation.npz`` in ``daemon.state_dir``, replaced atomically (written
beside, fsynced, renamed). It holds the token ids of every history segment,
the turn each belongs to, when each turn started (wall clock, s), and for
spoken turns the audio encoder's outputs, for looked-at camera frames the
vision encoder's (soft-token embeddings, stored as float16: never audio or
pixels; images beyond ``camera.max_images_in_context`` are dropped when the
conversation is rebuilt, e.g. after it is read back). A file that does not
match the loaded model (another hidden size or vocabulary) or cannot be read
is set aside as ``conversation.npz.unreadable`` with a warning and the
conversation starts empty: the daemon keeps running.

Retention: :func:`expired_turns` names the turns past ``voice.history_max_turns``
or older than ``voice.history_max_age_s``; the assistant forgets them before
each new turn, on disk too.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgeagent.engine.conversation import Conversation, Segment

_LOGGER = logging.getLogger(__name__)

FILE_NAME = "conversation.npz"
FORMAT = 1


def history_path(state_dir: Path) -> Path:
    """Where the conversation of ``state_dir`` is kept."""
    return state_dir / FILE_NAME


def save(conversation: Conversation, path: Path, turn_times: Mapping[int, float]) -> None:
    """Write the whole history of ``conversation`` to ``path``, atomically."""
    history = conversation.history
    config = conversation.model.config
    embeds = [s.embeds for s in history if s.embeds is not None]
    turns = sorted(turn_times)
    arrays: dict[str, np.ndarray] = {
        "ids": np.concatenate([s.ids for s in history]) if history else np.zeros(0, np.int64),
        "lengths": np.array([len(s) for s in history], np.int64),
        "turns": np.array([s.turn for s in history], np.int64),
        "soft": np.array([s.embeds is not None for s in history], bool),
        "embeds": (
            np.concatenate(embeds).astype(np.float16)  # [E, H]
            if embeds
            else np.zeros((0, config.hidden_size), np.float16)
        ),
        "turn_numbers": np.array(turns, np.int64),
        "turn_times": np.array([turn_times[t] for t in turns], np.float64),
        "meta": np.array(json.dumps(_meta(conversation))),
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load(conversation: Conversation, path: Path) -> dict[int, float]:
    """Restore the history saved at ``path`` into ``conversation`` (not yet prefilled).

    Returns the start time of each turn. A missing file is an empty history;
    an unreadable or mismatched one is set aside (see the module docstring).
    """
    if not path.exists():
        return {}
    try:
        segments, times = _read(conversation, path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        aside = path.with_name(path.name + ".unreadable")
        _LOGGER.warning("%s: %s; set aside as %s, starting a new conversation", path, exc, aside)
        os.replace(path, aside)
        return {}
    conversation.restore(segments)
    _LOGGER.info("conversation restored from %s: %d turns", path, len(times))
    return times


def wipe(path: Path) -> None:
    """Delete the saved conversation (and a set-aside unreadable one)."""
    for victim in (path, path.with_name(path.name + ".unreadable")):
        victim.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def expired_turns(
    turn_times: Mapping[int, float], now: float, max_turns: int, max_age_s: float
) -> list[int]:
    """Turns to forget: all but the newest ``max_turns``, and any older than ``max_age_s``."""
    ordered = sorted(turn_times)
    surplus = ordered[: max(0, len(ordered) - max_turns)]
    old = [t for t in ordered if now - turn_times[t] > max_age_s]
    return sorted({*surplus, *old})


def _meta(conversation: Conversation) -> dict[str, object]:
    config = conversation.model.config
    return {"format": FORMAT, "hidden_size": config.hidden_size, "vocab_size": config.vocab_size}


def _read(conversation: Conversation, path: Path) -> tuple[list[Segment], dict[int, float]]:
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta != _meta(conversation):
            raise ValueError(f"saved for another model ({meta}), not {_meta(conversation)}")
        ids, lengths, turns, soft = data["ids"], data["lengths"], data["turns"], data["soft"]
        embeds = data["embeds"]
        numbers, times = data["turn_numbers"], data["turn_times"]
    if not (len(lengths) == len(turns) == len(soft)) or int(lengths.sum()) != len(ids):
        raise ValueError("segment table does not match the token ids")
    if int(lengths[soft].sum()) != len(embeds) or len(numbers) != len(times):
        raise ValueError("soft-token table does not match the segments")
    if len(ids) and (ids.min() < 0 or ids.max() >= conversation.model.config.vocab_size):
        raise ValueError("token ids out of the vocabulary")
    segments, at, row = [], 0, 0
    for length, turn, is_soft in zip(lengths.tolist(), turns.tolist(), soft.tolist(), strict=True):
        rows = embeds[row : row + length].astype(np.float32) if is_soft else None
        segments.append(Segment(ids[at : at + length].astype(np.int64), rows, turn))
        at += length
        row += length if is_soft else 0
    return segments, dict(zip(numbers.tolist(), times.tolist(), strict=True))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
