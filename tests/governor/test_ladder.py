"""The ladder: rungs checked against the checkpoint's tiers at start-up."""

from __future__ import annotations

import logging

import pytest

from edgeagent.governor.ladder import build_ladder
from edgeagent.profiles import load_profile

PROFILE_TIERS = ("full", "balanced", "e2b", "economy")


def test_an_e4b_checkpoint_without_a_balanced_plan_drops_that_rung(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, "edgeagent.governor"):
        ladder = build_ladder(PROFILE_TIERS, {"full", "e2b"})
    assert ladder.names == ("full", "e2b", "economy", "suspend")
    assert ladder.running == ("full", "e2b", "economy")
    assert any("balanced dropped" in r.getMessage() for r in caplog.records)


def test_a_published_balanced_plan_is_kept() -> None:
    ladder = build_ladder(PROFILE_TIERS, {"full", "balanced", "e2b"})
    assert ladder.names == ("full", "balanced", "e2b", "economy", "suspend")


def test_an_e2b_checkpoint_has_no_e2b_below_full() -> None:
    ladder = build_ladder(PROFILE_TIERS, {"full"})
    assert ladder.names == ("full", "suspend")


def test_economy_and_suspend_carry_their_restrictions() -> None:
    ladder = build_ladder(
        ("full", "e2b", "economy"), {"full", "e2b"}, economy_max_fps=0.5, economy_max_new_tokens=32
    )
    economy, suspend = ladder.rung("economy"), ladder.rung("suspend")
    assert economy.engine_tier == "e2b" and not economy.vision
    assert (economy.max_fps, economy.max_new_tokens) == (0.5, 32)
    assert suspend.engine_tier == "e2b" and not suspend.encoders
    assert ladder.rung("full").vision and ladder.rung("full").max_new_tokens is None


def test_without_a_model_every_rung_is_kept() -> None:
    assert build_ladder(PROFILE_TIERS, None).names == (*PROFILE_TIERS, "suspend")


@pytest.mark.parametrize(
    "name",
    ["raspberry-pi-5", "glasses-reference", "earbuds-hub", "jetson-orin-nano", "x86-dev"],
)
def test_every_bundled_profile_gives_a_ladder(name: str) -> None:
    tiers = load_profile(name).model.tiers
    assert build_ladder(tiers, None).running == tiers
