"""The tier ladder: rungs from largest to smallest, checked against the checkpoint.

A rung is an engine tier plus daemon-level restrictions, as data:

- ``full``, ``balanced``, ``e2b``: the engine tier of the same name. ``balanced``
  exists only if the checkpoint offers a published Mix-n-Match plan under that
  name; otherwise the rung is dropped (plans are never invented).
- ``economy``: the ``e2b`` tier with vision off, a lower frame rate and a token cap.
- ``suspend``: always last; encoders stopped, MQTT and the conversation kept
  (the conversation stays on the engine tier of the rung above it).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)

SUSPEND = "suspend"
ECONOMY = "economy"
_ENGINE_TIER = {"economy": "e2b"}


@dataclass(frozen=True)
class Rung:
    """One step of the ladder."""

    name: str
    engine_tier: str
    vision: bool = True
    encoders: bool = True
    max_fps: float | None = None
    """Cap on camera frames per second; None: the camera setting."""
    max_new_tokens: int | None = None
    """Cap on answer length, tokens; None: the request's own."""


@dataclass(frozen=True)
class Ladder:
    """Rungs, largest first; the last is always ``suspend``."""

    rungs: tuple[Rung, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rungs)

    @property
    def running(self) -> tuple[str, ...]:
        """Names of the rungs that run the encoders (every rung but suspend)."""
        return tuple(r.name for r in self.rungs if r.name != SUSPEND)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def rung(self, name: str) -> Rung:
        return self.rungs[self.index(name)]


def build_ladder(
    names: Sequence[str],
    model_tiers: Collection[str] | None,
    *,
    economy_max_fps: float = 0.2,
    economy_max_new_tokens: int = 64,
) -> Ladder:
    """The ladder for ``names`` (the profile's tiers, largest first).

    ``model_tiers``: the engine tiers the loaded checkpoint offers
    (``TextModel.tiers``); a rung whose engine tier is not among them is dropped
    with a log line. None (no model loaded): every rung is kept, and tier changes
    are bookkeeping only.
    """
    rungs: list[Rung] = []
    for name in dict.fromkeys(names):
        if name == SUSPEND:
            continue
        engine_tier = _ENGINE_TIER.get(name, name)
        if model_tiers is not None and engine_tier not in model_tiers:
            offered = ", ".join(sorted(model_tiers))
            _LOGGER.info(
                "governor: rung %s dropped: the checkpoint offers no %r tier (offers: %s)",
                name,
                engine_tier,
                offered,
            )
            continue
        if name == ECONOMY:
            rungs.append(
                Rung(
                    name,
                    engine_tier,
                    vision=False,
                    max_fps=economy_max_fps,
                    max_new_tokens=economy_max_new_tokens,
                )
            )
        else:
            rungs.append(Rung(name, engine_tier))
    if rungs:
        last = rungs[-1]
        rungs.append(
            Rung(
                SUSPEND,
                last.engine_tier,
                vision=False,
                encoders=False,
                max_fps=last.max_fps,
                max_new_tokens=last.max_new_tokens,
            )
        )
    return Ladder(tuple(rungs))
