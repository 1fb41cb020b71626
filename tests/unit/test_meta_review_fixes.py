"""Meta-agent defects found by review (2026-11-29): each test fails on the code before its fix."""

from __future__ import annotations

import math

import pytest

from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.meta_agent import MAX_HALFLIFE, MAX_RAMP_BARS, MetaAgentConfig, MetaAgentStep

from test_meta_agent import path, run


# ---- 1. half-lives and ramp_bars beyond float64's reach are refused when the config is built -----


@pytest.mark.parametrize(("option", "value"), [
    ("vol_halflife", 1e17), ("vol_target_halflife", 1e17), ("vol_target_long_halflife", 1e17),
    ("vol_target_halflife", MAX_HALFLIFE * 1.5), pytest.param("ramp_bars", 10**400, id="ramp_bars-10**400"), ("ramp_bars", MAX_RAMP_BARS + 1),
])
def test_half_lives_and_ramps_too_long_for_float64_are_refused_by_name(option: str, value: float) -> None:
    with pytest.raises(InvalidMessageError, match=rf"{option}=.*: Input should be less than or equal to"):
        MetaAgentConfig.create(**{option: value})


@pytest.mark.parametrize("option", ["vol_halflife", "vol_target_halflife", "vol_target_long_halflife"])
def test_the_longest_half_life_allowed_still_gives_finite_targets(option: str) -> None:
    """At the bound the decay is still below 1, so the bias correction never divides 0 by 0."""
    step = MetaAgentStep(MetaAgentConfig.create(**{option: MAX_HALFLIFE}))
    prices, regimes, targets = path(60)
    state, decisions = run(step, prices, regimes, targets)
    assert all(math.isfinite(d.intent.target_position) for d in decisions)
    assert state.vol_scale is None or math.isfinite(state.vol_scale)


def test_the_longest_ramp_allowed_runs_through_changes_of_leader() -> None:
    step = MetaAgentStep(MetaAgentConfig.create(ramp_bars=MAX_RAMP_BARS, policy="ucb", mode="select",
                                                context="global"))
    prices, regimes, targets = path(200, seed=2)
    _, decisions = run(step, prices, regimes, targets)
    assert sum(len(d.events) for d in decisions) > 0  # the leader changed, and the ramp was entered
    assert all(math.isfinite(d.intent.target_position) for d in decisions)

