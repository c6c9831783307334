"""Named tiers: published plans by checkpoint shape, and plans a checkpoint declares."""

from __future__ import annotations

import pytest

from edgeagent.engine.config import TextConfig
from edgeagent.engine.tiers import TierPlan, named_tiers
from edgeagent.errors import TierError


def real_config(layers: int, width: int, shared: int) -> TextConfig:
    return TextConfig.from_dict(
        {
            "num_hidden_layers": layers,
            "intermediate_size": width,
            "num_kv_shared_layers": shared,
            "activation_sparsity_pattern": [0.95] * 10 + [0.0] * (layers - 10),
        },
        "test",
    )


def test_e4b_offers_the_official_e2b_slicing() -> None:
    tiers = named_tiers(real_config(35, 16384, 15), {})
    assert set(tiers) == {"full", "e2b"}
    assert tiers["e2b"] == TierPlan([8192] * 35, range(20, 25))


def test_the_e2b_checkpoint_is_its_own_e2b_tier() -> None:
    cfg = real_config(30, 8192, 10)
    tiers = named_tiers(cfg, {})
    assert set(tiers) == {"full", "e2b"}
    assert tiers["e2b"] == tiers["full"] == TierPlan.full(cfg)


def test_declared_tiers_are_validated() -> None:
    cfg = real_config(30, 8192, 10)
    with pytest.raises(TierError, match="declared tier 'odd' is malformed"):
        named_tiers(cfg, {"odd": {"skip_layers": [3]}})
    with pytest.raises(TierError, match="tier 'wide'"):
        named_tiers(cfg, {"wide": {"ffn_dims": [9000] * 30}})
