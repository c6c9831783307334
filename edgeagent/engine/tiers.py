"""MatFormer Mix-n-Match tiers: plans that run on views of one set of weights.

A tier keeps the first ``ffn_dims[i]`` rows of layer ``i``'s gate/up
projections and the same columns of its down projection, and skips whole
layers. This is exactly what Google's MatFormer Lab slices into a separate
checkpoint; here it is a choice of views, so switching tiers allocates no
weight memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeagent.engine.config import TextConfig
from edgeagent.errors import TierError

FULL = "full"

# Published Mix-n-Match plans, keyed by the checkpoint shape they slice.
# E4B: 35 layers of FFN width 16384, 15 KV-shared. E2B is the official
# slicing (all 8192, layers 20–24 skipped). Google's pre-sliced E2B
# checkpoint *is* that model, so there ``e2b`` names the whole checkpoint:
# a hardware profile that allows only ``e2b`` runs either checkpoint.
_E4B_SHAPE = (35, 16384, 15, 2048)
_E2B_SHAPE = (30, 8192, 10, 2048)
_PUBLISHED: dict[tuple[int, int, int, int], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    _E4B_SHAPE: {"e2b": ((8192,) * 35, (20, 21, 22, 23, 24))},
    _E2B_SHAPE: {"e2b": ((8192,) * 30, ())},
}


@dataclass(frozen=True)
class TierPlan:
    """A submodel: the FFN width each layer runs and the layers it skips.

    ``ffn_dims`` has one entry per layer of the full checkpoint (skipped
    layers included; their width is ignored).
    """

    ffn_dims: tuple[int, ...]
    skip_layers: frozenset[int] = frozenset()

    def __init__(self, ffn_dims: Iterable[int], skip_layers: Iterable[int] = ()) -> None:
        object.__setattr__(self, "ffn_dims", tuple(int(d) for d in ffn_dims))
        object.__setattr__(self, "skip_layers", frozenset(int(i) for i in skip_layers))

    @classmethod
    def full(cls, config: TextConfig) -> TierPlan:
        """The whole checkpoint: every layer at its full width."""
        return cls(config.intermediate_sizes)

    def layers(self) -> tuple[int, ...]:
        """Indices of the layers this tier runs, in order."""
        return tuple(i for i in range(len(self.ffn_dims)) if i not in self.skip_layers)

    def validate(self, config: TextConfig) -> TierPlan:
        """Refuse a plan the checkpoint cannot run; return the plan itself."""
        n = config.num_hidden_layers
        if len(self.ffn_dims) != n:
            raise TierError(
                f"tier plan has {len(self.ffn_dims)} ffn_dims, the model has {n} layers"
            )
        bad = sorted(i for i in self.skip_layers if not 0 <= i < n)
        if bad:
            raise TierError(f"tier plan skips layers {bad}, which do not exist (0…{n - 1})")
        producers = sorted({config.kv_source(i) for i in range(n) if config.kv_source(i) != i})
        skipped_producers = [i for i in producers if i in self.skip_layers]
        if skipped_producers:
            raise TierError(
                f"tier plan skips layers {skipped_producers}, which produce the KV cache "
                f"that KV-shared layers read (producers: {producers})"
            )
        if len(self.skip_layers) >= n:
            raise TierError("tier plan skips every layer")
        for i in self.layers():
            width, full = self.ffn_dims[i], config.intermediate_sizes[i]
            if not 0 < width <= full:
                raise TierError(f"tier plan gives layer {i} FFN width {width}; it must be 1…{full}")
        return self


def named_tiers(config: TextConfig, declared: Mapping[str, Any]) -> dict[str, TierPlan]:
    """The named tiers a checkpoint offers: ``full``, published plans, and declared ones.

    ``declared`` comes from ``config.json`` (``edgeagent_tiers``, written by
    ``edgeagent model init`` for the scaled-down presets).
    """
    tiers = {FULL: TierPlan.full(config)}
    shape = (
        config.num_hidden_layers,
        max(config.intermediate_sizes),
        config.num_kv_shared_layers,
        config.hidden_size,
    )
    uniform = len(set(config.intermediate_sizes)) == 1
    for name, (dims, skip) in _PUBLISHED.get(shape, {}).items():
        if uniform:
            tiers[name] = TierPlan(dims, skip)
    for name, spec in declared.items():
        try:
            tiers[name] = TierPlan(spec["ffn_dims"], spec.get("skip_layers", ()))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise TierError(f"declared tier {name!r} is malformed: {err}") from err
    for name, plan in tiers.items():
        try:
            plan.validate(config)
        except TierError as err:
            raise TierError(f"tier {name!r}: {err}") from err
    return tiers
