"""The volatility overlay's estimates are of one return stream (the market's, or the ensemble's):
a state resumed under another ``vol_target`` starts them afresh instead of reading one stream's
volatility as the other's (review 2026-11-29)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from ensemble_trader.adapters.memory import MemoryKeyValueStore
from ensemble_trader.adapters.memory.fakes import MemoryQueuePublisher
from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentState, MetaAgentStep
from ensemble_trader.domain.models import Regime
from ensemble_trader.runtime.meta_agent_stage import DecisionSink
from ensemble_trader.runtime.stage import QueueSink
from test_meta_agent import market
from test_meta_overlay import ewma_vols

N, SWITCH = 400, 300


def prices(n: int = N, seed: int = 3) -> np.ndarray:
    """1 % a bar, no trend."""
    rng = np.random.default_rng(seed)
    return 100.0 * np.cumprod(1.0 + 0.01 * rng.standard_normal(n))


TARGETS = np.full(4, 0.1)  # every agent at +0.1: the ensemble's returns are a tenth of the market's


def feed(step: MetaAgentStep, closes: np.ndarray, start: int, stop: int, state: MetaAgentState | None = None):
    decisions = []
    for i in range(start, stop):
        state, decision = step.decide(state, market(i, closes[i], Regime.BULL), TARGETS)
        decisions.append(decision)
    return state, decisions


def overlay(decision) -> dict:
    return decision.intent.explanation_detail["vol_target"]


def config(vol_target: str) -> MetaAgentConfig:
    return MetaAgentConfig.create(vol_target=vol_target, vol_target_max_scale=5.0)


def test_resuming_an_ensemble_state_under_the_market_overlay_starts_its_estimates_afresh() -> None:
    closes = prices()
    returns = closes[1:] / closes[:-1] - 1.0
    hl = (config("market").vol_target_halflife, config("market").vol_target_long_halflife)
    stored, before = feed(MetaAgentStep(config("ensemble")), closes, 0, SWITCH)
    assert stored.overlay_source == "ensemble"
    ensemble_vol = overlay(before[-1])["target_vol"]
    assert ensemble_vol == pytest.approx(0.1 * np.std(returns[:SWITCH]), rel=0.2)  # the scale of the defect

    stored = MetaAgentState.from_bytes(stored.to_bytes())  # as the stage resumes it
    market_step = MetaAgentStep(config("market"))
    resumed, after = feed(market_step, closes, SWITCH, N, stored)
    _, fresh = feed(MetaAgentStep(config("market")), closes, 0, N)

    first = after[0]
    assert overlay(first)["restarted"] == "the stored estimates were of the ensemble's returns"
    assert "started afresh" in first.intent.explanation
    assert overlay(after[1])["restarted"] is None  # said once, at the bar it happened
    for k in (0, 1, 50, N - SWITCH - 1):
        i = SWITCH + k  # the estimates hold the market's returns since the switch, and nothing older
        fast, slow = ewma_vols(returns[SWITCH - 1:i], hl)
        assert overlay(after[k])["forecast_vol"] == pytest.approx(fast)
        assert overlay(after[k])["target_vol"] == pytest.approx(slow)
        assert overlay(after[k])["bars"] == k + 1
    # the long-run level is the market's, as in a run that was "market" from the start (used as
    # if it were the market's, the ensemble's kept the target at half the fresh run's 50 bars on, 0.6 of it 100 bars on)
    for k in (50, N - SWITCH - 1):
        ratio = overlay(after[k])["target_vol"] / overlay(fresh[SWITCH + k])["target_vol"]
        assert 0.8 < ratio < 1.25
    assert resumed.overlay_source == "market"


def test_resuming_a_market_state_under_the_ensemble_overlay_starts_its_estimates_afresh() -> None:
    closes = prices()
    stored, _ = feed(MetaAgentStep(config("market")), closes, 0, SWITCH)
    assert stored.overlay_source == "market"
    resumed, after = feed(MetaAgentStep(config("ensemble")), closes, SWITCH, SWITCH + 20, stored)
    assert overlay(after[0])["restarted"] == "the stored estimates were of the market's returns"
    # the fresh learners' state holds no blend yet: the ensemble's first return is the next bar's
    assert [overlay(d)["bars"] for d in after[:3]] == [0, 1, 2]
    assert after[0].intent.explanation_detail["desired_position"] == pytest.approx(overlay(after[0])["blend"])
    assert resumed.overlay_source == "ensemble"


def test_a_restart_under_the_same_market_overlay_keeps_the_estimates() -> None:
    closes = prices()
    stored, _ = feed(MetaAgentStep(config("market")), closes, 0, SWITCH)
    step = MetaAgentStep(MetaAgentConfig.create(vol_target="market", vol_target_max_scale=5.0, cost_bps=4.0))
    assert step.model_version != stored.model_version  # a restart of the learners
    _, after = feed(step, closes, SWITCH, SWITCH + 2, stored)
    assert overlay(after[0])["restarted"] is None
    assert overlay(after[0])["bars"] == stored.overlay_variance[2] + 1


def test_a_restart_under_the_ensemble_overlay_starts_the_estimates_afresh_and_says_so() -> None:
    """The ensemble's returns are those of the learners that blended it: as before, a new model
    version does not go on with them; now the explanation says why the overlay starts over."""
    closes = prices()
    stored, _ = feed(MetaAgentStep(config("ensemble")), closes, 0, SWITCH)
    step = MetaAgentStep(MetaAgentConfig.create(vol_target="ensemble", vol_target_max_scale=5.0, cost_bps=4.0))
    _, after = feed(step, closes, SWITCH, SWITCH + 3, stored)
    assert overlay(after[0])["restarted"] == "the stored estimates were of another model version's ensemble"
    assert [overlay(d)["bars"] for d in after] == [0, 1, 2]


def test_turning_the_overlay_off_drops_the_estimates_and_their_stream() -> None:
    closes = prices(60)
    stored, _ = feed(MetaAgentStep(config("market")), closes, 0, 30)
    off, after = feed(MetaAgentStep(config("none")), closes, 30, 32, stored)
    assert off.overlay_variance is None and off.overlay_source is None
    assert overlay(after[0]) is None
    back, again = feed(MetaAgentStep(config("market")), closes, 32, 34, off)
    assert overlay(again[0])["restarted"] is None and overlay(again[0])["bars"] == 1  # nothing to discard


def old_dump(state: MetaAgentState) -> dict:
    """``state`` as a release before the overlay's stream was recorded stored it."""
    data = state.to_dict()
    del data["overlay_source"]
    return data


@pytest.mark.parametrize("vol_target", ["market", "ensemble"])
def test_an_old_state_under_the_model_version_that_wrote_it_goes_on_with_its_estimates(vol_target: str) -> None:
    """The model version hashes ``vol_target``: a state the same version wrote holds estimates of
    this configuration's stream."""
    closes = prices(120)
    step = MetaAgentStep(config(vol_target))
    stored, _ = feed(step, closes, 0, 60)
    old = MetaAgentState.from_dict(json.loads(json.dumps(old_dump(stored))))
    assert old.overlay_source is None and old.overlay_variance is not None
    _, kept = feed(step, closes, 60, 120, stored)
    resumed, went_on = feed(step, closes, 60, 120, old)
    assert [d.intent for d in went_on] == [d.intent for d in kept]
    assert resumed.overlay_source == vol_target


def test_an_old_state_restarted_under_another_model_version_starts_the_estimates_afresh() -> None:
    """Which stream an old state's estimates are of is not known once its model version is not
    this step's (it may have been "ensemble"): they are started afresh."""
    closes = prices(120)
    stored, _ = feed(MetaAgentStep(config("market")), closes, 0, 60)
    old = MetaAgentState.from_dict(old_dump(stored))
    step = MetaAgentStep(MetaAgentConfig.create(vol_target="market", vol_target_max_scale=5.0, cost_bps=4.0))
    _, after = feed(step, closes, 60, 62, old)
    assert overlay(after[0])["restarted"] == (
        "the stream of the stored estimates was not recorded (a state saved before 2026-11-29 under "
        "another model version)")
    assert overlay(after[0])["bars"] == 1


@pytest.mark.parametrize("value", ["vix", "none", 1, True, ["market"]])
def test_a_stored_overlay_source_must_name_a_stream(value) -> None:
    closes = prices(30)
    stored, _ = feed(MetaAgentStep(config("market")), closes, 0, 30)
    data = stored.to_dict() | {"overlay_source": value}
    with pytest.raises(StateError, match="overlay_source"):
        MetaAgentState.from_dict(data)


def test_a_stored_overlay_source_needs_estimates() -> None:
    closes = prices(30)
    stored, _ = feed(MetaAgentStep(config("market")), closes, 0, 30)
    data = stored.to_dict() | {"overlay_variance": None}
    with pytest.raises(StateError, match="overlay_source"):
        MetaAgentState.from_dict(data)


class Agents:
    """Agents at +0.1 whatever they see (the stage's path: ``step(state, market_state)``)."""

    names = ("conservative", "aggressive", "balanced", "contrarian")
    version = "none"
    feature_names = ("ret_1",)
    feature_version = "1"

    def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return TARGETS.copy()


def test_the_stage_path_explains_the_fresh_start_as_decide_does() -> None:
    closes = prices(80)
    stored, _ = feed(MetaAgentStep(config("ensemble")), closes, 0, 60)
    step = MetaAgentStep(config("market"), Agents())
    bar = market(60, closes[60], Regime.BULL)
    via_stage, staged = step(stored, bar)
    via_decide, decided = step.decide(stored, bar, TARGETS)
    assert staged.intent == decided.intent
    assert overlay(staged)["restarted"] == "the stored estimates were of the ensemble's returns"
    assert via_stage.to_dict() == via_decide.to_dict()


def test_the_lambda_logs_the_fresh_start_once(caplog) -> None:
    closes = prices(80)
    stored, _ = feed(MetaAgentStep(config("ensemble")), closes, 0, 60)
    _, after = feed(MetaAgentStep(config("market")), closes, 60, 62, stored)
    sink = DecisionSink(QueueSink(MemoryQueuePublisher(), "order-intents", lambda i: i.intent_id),
                        MemoryKeyValueStore())
    with caplog.at_level(logging.WARNING, logger="ensemble_trader.runtime.meta_agent_stage"):
        sink.emit([d.intent for d in after])
        sink.emit([after[0].intent])  # a retry finds its row stored: not a new fresh start
    logged = [r.getMessage() for r in caplog.records if "volatility overlay" in r.getMessage()]
    assert logged == [f"meta_agent: SPX@{after[0].intent.timestamp.isoformat()}: the volatility overlay "
                      "(vol_target=market) started its estimates afresh: the stored estimates were of the "
                      "ensemble's returns"]
