"""A refit of a symbol's model carries its filter over (the states are aligned one to one); a
refit keeps the states' names unless the naming rule clearly disagrees; the refit Lambda
publishes a new version only when the refit is material."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from ensemble_trader.domain.errors import ModelArtifactError, StateError
from ensemble_trader.domain.models import Bar, FeatureVector, Regime
from ensemble_trader.domain.regime import RegimeStep, TransitionRule
from ensemble_trader.domain.regime_fit import MAX_LINEAGE, label_states, refit
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel

B, R, S, V = Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def vector(t: int, value: float) -> FeatureVector:
    bar = Bar(symbol="SYN", timestamp=T0 + timedelta(days=t), open=100, high=101, low=99, close=100.5, volume=1000)
    return FeatureVector(bar=bar, values={"f0": value}, warmup_remaining=0)


def one_feature_model(means, regimes=(B, R, S, V), stay=0.97, lineage=None) -> RegimeModel:
    k = len(means)
    trans = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(trans, stay)
    info = {} if lineage is None else {"refit_of": lineage[0], "refit_lineage": list(lineage)}
    return RegimeModel((FeatureSpec("f0", "identity", 0.0, 1.0),), np.full(k, 1.0 / k), trans,
                       np.array(means, dtype=float)[:, None], np.ones((k, 1, 1)), "full", tuple(regimes), info=info)


OLD = one_feature_model([0.0, 3.0, -3.0, 6.0])
REFIT = one_feature_model([0.0, 3.0, -3.0, 6.01], lineage=[OLD.version])
UNRELATED = one_feature_model([0.0, 3.0, -3.0, 6.01])  # the same parameters, fitted from scratch


def run_with_pending(new: RegimeModel) -> tuple[list[bool], list]:
    """Two bars of a pending BULL → BEAR confirmation under OLD, then three under ``new``."""
    rule = TransitionRule(margin=0.2, confirm_bars=3)
    old_step, new_step = RegimeStep(OLD, rule), RegimeStep(new, rule)
    state = None
    for t in range(10):
        state, _, _ = old_step.apply(state, vector(t, 0.0))
    for t in (10, 11):
        state, _, _ = old_step.apply(state, vector(t, 3.5))
    assert state.pending is R and state.pending_count == 2
    before = state.log_alpha
    switched, alphas = [], []
    for t in (12, 13, 14):
        state, _, events = new_step.apply(state, vector(t, 3.5))
        switched.append(bool(events))
        alphas.append(state.log_alpha)
    return switched, [before, *alphas]


def test_a_refit_of_the_states_model_carries_the_filter_and_the_pending_confirmation():
    """The refit's states are the old model's one to one: the third bar of confirmation (the
    first under the refit) switches, as with no new version; an unrelated model restarts."""
    assert REFIT.states_aligned_with(OLD.version) and not UNRELATED.states_aligned_with(OLD.version)
    switched, alphas = run_with_pending(REFIT)
    assert switched == [True, False, False]
    # the filter went on from the old distribution: one forward step from it under the refit
    from ensemble_trader.domain.regime import forward_step

    z = REFIT.transform(np.array([3.5]))
    expected, _, _ = forward_step(alphas[0], REFIT.log_emission(z), np.log(REFIT.start_prob), REFIT.transmat)
    np.testing.assert_allclose(alphas[1], expected)
    assert run_with_pending(UNRELATED)[0] == [False, False, True]  # restarted: its own confirmation


def test_the_filter_is_carried_along_a_chain_of_refits_and_restarts_when_the_state_counts_differ():
    mid = one_feature_model([0.0, 3.0, -3.0, 6.005], lineage=[OLD.version])
    last = one_feature_model([0.0, 3.0, -3.0, 6.01], lineage=[mid.version, OLD.version])
    assert run_with_pending(last)[0] == [True, False, False]  # the symbol saw no bar under mid
    five = one_feature_model([0.0, 3.0, -3.0, 6.0, 9.0], (B, R, S, V, V), lineage=[OLD.version])
    assert run_with_pending(five)[0] == [False, False, True]  # another number of states: restart


def test_a_refit_records_its_lineage_newest_first_and_bounded():
    rng = np.random.default_rng(0)
    raw = np.concatenate([rng.normal(m, 1.0, 60) for m in (0.0, 3.0, -3.0, 6.0)])[:, None]
    ret = np.concatenate([rng.normal(d, 0.01, 60) for d in (0.002, -0.002, 0.0, 0.0)])
    vol = np.concatenate([np.full(60, v) for v in (0.01, 0.015, 0.008, 0.04)])
    first = refit(OLD, raw, ret, vol).model
    assert first.info["refit_of"] == OLD.version and first.info["refit_lineage"] == [OLD.version]
    second = refit(first, raw, ret, vol, n_iter=1).model
    assert second.info["refit_lineage"] == [first.version, OLD.version]
    assert second.states_aligned_with(OLD.version) and second.states_aligned_with(first.version)
    long = one_feature_model([0.0, 3.0, -3.0, 6.0], lineage=[f"r{i:012x}" for i in range(MAX_LINEAGE)])
    assert len(refit(long, raw, ret, vol, n_iter=1).model.info["refit_lineage"]) == MAX_LINEAGE
    # the lineage survives the artifact (the manifest): the serving model knows it
    assert RegimeModel.from_files(second.to_files().__getitem__).states_aligned_with(OLD.version)


def test_a_malformed_lineage_is_refused_naming_the_field():
    with pytest.raises(ModelArtifactError, match="refit_lineage"):
        RegimeModel(OLD.features, OLD.start_prob, OLD.transmat, OLD.means, OLD.covariances, "full",
                    OLD.state_regimes, info={"refit_lineage": "r123"})


def test_states_keep_their_names_unless_the_rule_clearly_disagrees():
    """States 2 and 3 have nearly the same drift per unit of volatility: the plain rule's names
    for them follow the last digits; with the current names preferred they stay until the gap
    is clear (more than the tolerance of the BULL − BEAR spread)."""
    vol = np.array([0.03, 0.012, 0.010, 0.010])
    share = np.full(4, 0.25)

    def drift(gap: float) -> np.ndarray:  # state 2's drift/vol exceeds state 3's by gap / 10
        return np.array([0.0, -0.002, 0.0005 + gap * 0.001, 0.0005])

    current = (V, R, S, B)
    assert label_states(drift(0.02), vol, share) == (V, R, B, S)  # the plain rule swaps them
    assert label_states(drift(0.02), vol, share, prefer=current, tolerance=0.25) == current
    assert label_states(drift(2.0), vol, share, prefer=current, tolerance=0.25) == (V, R, B, S)
    assert label_states(drift(0.02), vol, share, prefer=current, tolerance=0.0) == (V, R, B, S)


def run_alternating(hosts: list[str], new: RegimeModel = REFIT) -> list[tuple[int, bool]]:
    """Ten quiet bars under OLD, then BEAR-like bars served by OLD or ``new`` containers in
    turn, the state passing through its encoding (the cache) between bars as in the Lambda."""
    rule = TransitionRule(margin=0.2, confirm_bars=3)
    steps = {"old": RegimeStep(OLD, rule), "new": RegimeStep(new, rule)}
    state = None
    for t in range(10):
        state, _, _ = steps["old"].apply(state, vector(t, 0.0))
    out = []
    for t, host in enumerate(hosts, start=10):
        state, _, events = steps[host].apply(RegimeStep.load(RegimeStep.dump(state)), vector(t, 3.5))
        out.append((state.pending_count, bool(events)))
    return out


def test_old_and_new_containers_alternating_after_a_refit_confirm_on_the_third_bar():
    """A warm container still serving OLD reads a state REFIT wrote: the state names REFIT's
    lineage, so OLD carries the filter and the pending confirmation too (it used to restart
    them: pending 1, 2, 1, 2, 1 and no switch)."""
    expected = [(1, False), (2, False), (0, True), (0, False), (0, False)]
    assert run_alternating(["old"] * 5) == expected
    assert run_alternating(["old", "new", "old", "new", "old"]) == expected
    assert run_alternating(["new", "old", "new", "old", "new"]) == expected
    assert OLD.states_aligned_with(REFIT.version, REFIT.refit_lineage)
    assert not OLD.states_aligned_with(REFIT.version)  # without the writer's lineage it cannot know


def test_an_older_model_does_not_make_a_newer_one_restart_along_a_chain_or_between_siblings():
    """OLD -> mid -> last: OLD carries a state last wrote (OLD is in its recorded lineage) and
    last carries OLD's state back. Two refits of OLD (after a rollback to OLD and a new refit)
    share OLD: they carry each other's state."""
    mid = one_feature_model([0.0, 3.0, -3.0, 6.005], lineage=[OLD.version])
    last = one_feature_model([0.0, 3.0, -3.0, 6.01], lineage=[mid.version, OLD.version])
    expected = [(1, False), (2, False), (0, True), (0, False), (0, False)]
    assert run_alternating(["old", "new", "old", "new", "old"], new=last) == expected
    sibling = one_feature_model([0.0, 3.0, -3.0, 6.02], lineage=[OLD.version])
    rule = TransitionRule(margin=0.2, confirm_bars=3)
    a, b = RegimeStep(REFIT, rule), RegimeStep(sibling, rule)
    state = None
    for t in range(10):
        state, _, _ = a.apply(state, vector(t, 0.0))
    events = []
    for t, step in zip(range(10, 13), (a, b, a), strict=True):
        state, _, ev = step.apply(state, vector(t, 3.5))
        events.append(bool(ev))
    assert events == [False, False, True]


def test_an_unrelated_model_still_restarts_when_alternating_with_the_old_one():
    """UNRELATED shares no version with OLD: each switch of container restarts the filter and
    the confirmation, so three bars alternating between them never confirm."""
    assert run_alternating(["old", "new", "old", "new", "old"], new=UNRELATED) == [
        (1, False), (1, False), (1, False), (1, False), (1, False)]
    assert not OLD.states_aligned_with(UNRELATED.version, UNRELATED.refit_lineage)
    assert not UNRELATED.states_aligned_with(OLD.version, OLD.refit_lineage)


def test_the_state_records_a_bounded_lineage_and_a_state_without_one_still_loads():
    from ensemble_trader.domain.regime import STATE_LINEAGE, RegimeFilterState

    long = one_feature_model([0.0, 3.0, -3.0, 6.0], lineage=[f"r{i:012x}" for i in range(50)])
    state, _, _ = RegimeStep(long).apply(None, vector(0, 0.0))
    assert state.lineage == long.refit_lineage[:STATE_LINEAGE]
    assert RegimeStep.load(RegimeStep.dump(state)).lineage == state.lineage
    # a model fitted from scratch: no key, the bytes of the format before lineages were kept
    plain, _, _ = RegimeStep(OLD).apply(None, vector(0, 0.0))
    assert b"lineage" not in RegimeStep.dump(plain)
    # a state REFIT wrote before lineages were recorded (no "lineage" key) loads with none; OLD
    # cannot tell it is aligned (it restarts once), and REFIT's next write records the lineage
    old_format = json.loads(RegimeStep.dump(run_state(REFIT)))
    del old_format["lineage"]
    loaded = RegimeFilterState.from_bytes(json.dumps(old_format).encode())
    assert loaded.lineage == () and loaded.pending_count == 2 and loaded.model_version == REFIT.version
    again, _, _ = RegimeStep(REFIT).apply(loaded, vector(12, 3.5))
    assert again.lineage == (OLD.version,) and again.regime is R
    with pytest.raises(StateError, match="lineage"):
        RegimeFilterState.from_bytes(json.dumps({**old_format, "lineage": "r123"}).encode())


def run_state(model: RegimeModel):
    """A state ``model`` wrote with a BULL → BEAR confirmation two bars along."""
    step = RegimeStep(model, TransitionRule(margin=0.2, confirm_bars=3))
    state = None
    for t in range(10):
        state, _, _ = step.apply(state, vector(t, 0.0))
    for t in (10, 11):
        state, _, _ = step.apply(state, vector(t, 3.5))
    return state
