"""The online regime filter: parity with hmmlearn, transition rule, state bytes, the stage step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from ensemble_trader.domain.errors import InvalidMessageError, StateError
from ensemble_trader.domain.models import REGIMES, Bar, FeatureVector, Regime
from ensemble_trader.domain.regime import (
    RegimeChanged,
    RegimeDetector,
    RegimeFilterState,
    RegimeStep,
    TransitionRule,
)
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel

B, R, S, V = Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE


@pytest.fixture(scope="module")
def fitted():
    """A 5-state full-covariance hmmlearn model and the same parameters as a RegimeModel."""
    hmm = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(11)
    means = rng.normal(0.0, 1.5, size=(5, 3))
    x = np.concatenate([rng.normal(means[i % 5], 0.7, size=(60, 3)) for i in range(12)])
    model = hmm.GaussianHMM(5, covariance_type="full", n_iter=15, random_state=0).fit(x)
    trans = np.maximum(model.transmat_, 1e-6)
    trans /= trans.sum(axis=1, keepdims=True)
    start = np.maximum(model.startprob_, 1e-6)
    start /= start.sum()
    model.transmat_, model.startprob_ = trans, start
    ours = RegimeModel(
        features=tuple(FeatureSpec(f"f{i}", "identity", 0.0, 1.0) for i in range(3)),
        start_prob=start,
        transmat=trans,
        means=model.means_,
        covariances=model.covars_,
        covariance_type="full",
        state_regimes=(B, R, S, V, B),
    )
    return model, ours, x


def test_filtered_probabilities_equal_hmmlearn_prefix_posteriors(fitted):
    hmm_model, model, x = fitted
    detector = RegimeDetector(model)
    state = detector.initial_state("SYN")
    worst = 0.0
    for t in range(240):
        detector.observe(state, x[t])
        reference = hmm_model.predict_proba(x[: t + 1])[-1]
        worst = max(worst, float(np.abs(np.exp(state.log_alpha) - reference).max()))
    assert worst < 1e-8
    assert state.log_likelihood == pytest.approx(hmm_model.score(x[:240]), abs=1e-7)


def test_diag_covariance_parity():
    hmm = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(m, 1.0, size=(50, 2)) for m in (-2, 2, 0, 3, -1)])
    h = hmm.GaussianHMM(3, covariance_type="diag", n_iter=10, random_state=1).fit(x)
    trans = np.maximum(h.transmat_, 1e-6)
    trans /= trans.sum(axis=1, keepdims=True)
    start = np.maximum(h.startprob_, 1e-6)
    start /= start.sum()
    h.transmat_, h.startprob_ = trans, start
    ours = RegimeModel(
        tuple(FeatureSpec(f"f{i}", "identity", 0.0, 1.0) for i in range(2)),
        start,
        trans,
        h.means_,
        np.stack([np.diag(c) for c in h.covars_]),
        "diag",
        (B, R, S),
    )
    labels = RegimeDetector(ours).label_matrix(x, ["f0", "f1"])
    for t in (0, 7, 60, 149, 249):
        np.testing.assert_allclose(labels.state_probabilities[t], h.predict_proba(x[: t + 1])[-1], atol=1e-8)


def test_regime_probabilities_are_sums_by_the_state_map(fitted):
    _, model, x = fitted
    labels = RegimeDetector(model).label_matrix(x[:50], ["f0", "f1", "f2"])
    sp = labels.state_probabilities
    np.testing.assert_allclose(labels.probabilities[:, 0], sp[:, 0] + sp[:, 4])
    np.testing.assert_allclose(labels.probabilities[:, 1:], sp[:, 1:4])
    np.testing.assert_allclose(labels.probabilities.sum(axis=1), 1.0)
    idx = np.arange(50)
    np.testing.assert_allclose(labels.confidence, labels.probabilities[idx, labels.regime])


# --------------------------------------------------------------------------------------------
# transition rule on hand-made probability sequences
# --------------------------------------------------------------------------------------------


def run_rule(rule: TransitionRule, sequence: list[tuple[float, float, float, float]]):
    state = RegimeFilterState("SYN", "v")
    reported, changes = [], []
    for p in sequence:
        change = rule.apply(state, np.array(p))
        reported.append(state.regime)
        if change is not None:
            changes.append(change)
    return reported, changes, state


BULLISH = (0.7, 0.1, 0.1, 0.1)
BEARISH = (0.1, 0.7, 0.1, 0.1)
LEAN_BEAR = (0.40, 0.45, 0.1, 0.05)  # bear ahead by only 0.05


def test_plain_argmax_rule_follows_every_bar():
    reported, changes, _ = run_rule(TransitionRule(0.0, 1, 1), [BULLISH, BEARISH, BULLISH])
    assert reported == [B, R, B]
    assert changes == [(B, R, 1), (R, B, 1)]


def test_confirmation_requires_consecutive_bars():
    rule = TransitionRule(margin=0.0, confirm_bars=3, min_dwell=1)
    reported, changes, _ = run_rule(rule, [BULLISH, BEARISH, BEARISH, BULLISH, BEARISH, BEARISH, BEARISH])
    assert reported == [B, B, B, B, B, B, R]
    assert changes == [(B, R, 6)]


def test_margin_blocks_a_narrow_lead():
    rule = TransitionRule(margin=0.1, confirm_bars=1, min_dwell=1)
    reported, changes, state = run_rule(rule, [BULLISH, LEAN_BEAR, LEAN_BEAR, BEARISH])
    assert reported == [B, B, B, R]
    assert changes == [(B, R, 3)]
    assert state.bars_in_regime == 1


def test_minimum_dwell_holds_a_fresh_regime():
    rule = TransitionRule(margin=0.0, confirm_bars=1, min_dwell=3)
    reported, changes, _ = run_rule(rule, [BULLISH, BULLISH, BULLISH, BEARISH, BULLISH, BULLISH, BULLISH])
    assert reported == [B, B, B, R, R, R, B]
    assert changes == [(B, R, 3), (R, B, 3)]


def test_pending_candidate_resets_when_the_candidate_changes():
    rule = TransitionRule(margin=0.0, confirm_bars=2, min_dwell=1)
    volatile = (0.1, 0.1, 0.1, 0.7)
    reported, changes, _ = run_rule(rule, [BULLISH, BEARISH, volatile, BEARISH, BEARISH])
    assert reported == [B, B, B, B, R]
    assert changes == [(B, R, 4)]


def test_rule_validates_its_parameters():
    with pytest.raises(ValueError, match="confirm_bars"):
        TransitionRule(confirm_bars=0)
    with pytest.raises(ValueError, match="margin"):
        TransitionRule(margin=1.5)


def test_rule_options_must_be_whole_counts_and_a_real_margin():
    """From ET_REGIME_RULE (JSON) a count of 1.5 or true, or a margin of "0.2", is refused naming
    the field, not compared as a number (1.5 confirmed after two bars, true as one)."""
    for options, problem in [
        ({"confirm_bars": 1.5}, "confirm_bars 1.5 must be an integer >= 1"),
        ({"min_dwell": True}, "min_dwell True must be an integer >= 1"),
        ({"confirm_bars": 2.0}, "confirm_bars 2.0 must be an integer"),
        ({"margin": "0.2"}, "margin '0.2' must be a number in"),
        ({"margin": True}, "margin True must be a number in"),
        ({"margin": float("nan")}, r"margin nan must be in \[0, 1\)"),
        ({"margin": float("inf")}, r"margin inf must be in \[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=problem):
            TransitionRule(**options)
    rule = TransitionRule(margin=np.float64(0.2), confirm_bars=np.int64(2), min_dwell=3)
    assert rule.as_dict() == {"margin": 0.2, "confirm_bars": 2, "min_dwell": 3}
    assert TransitionRule(margin=0).margin == 0


def test_the_regime_rule_variable_refuses_a_fractional_count_naming_it(monkeypatch):
    from ensemble_trader.runtime.settings import EnvironmentSettingError, json_from_env

    monkeypatch.setenv("ET_REGIME_RULE", '{"confirm_bars": 1.5}')
    with pytest.raises(EnvironmentSettingError, match=r"ET_REGIME_RULE.*confirm_bars 1.5 must be an integer"):
        json_from_env("ET_REGIME_RULE", TransitionRule)


# --------------------------------------------------------------------------------------------
# state bytes and the stage step
# --------------------------------------------------------------------------------------------


def test_state_round_trips_exactly_through_bytes(fitted):
    _, model, x = fitted
    detector = RegimeDetector(model)
    state = detector.initial_state("SYN")
    for t in range(30):
        detector.update(state, x[t])
    copy = RegimeFilterState.from_bytes(state.to_bytes())
    np.testing.assert_array_equal(copy.log_alpha, state.log_alpha)
    assert (copy.regime, copy.bars_in_regime, copy.log_likelihood) == (
        state.regime,
        state.bars_in_regime,
        state.log_likelihood,
    )
    # continuing from the decoded copy gives bit-identical results
    a, _ = detector.update(state, x[30])
    b, _ = detector.update(copy, x[30])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data", [b"", b"{}", b"not json", b'{"format": 1, "symbol": "X"}', b"[1,2]"])
def test_state_decoding_errors_are_typed(data):
    with pytest.raises(StateError):
        RegimeFilterState.from_bytes(data)


T0 = datetime(2024, 1, 2, tzinfo=UTC)


def vector(t: int, values: np.ndarray, warmup: int = 0, symbol: str = "SYN") -> FeatureVector:
    bar = Bar(symbol=symbol, timestamp=T0 + timedelta(days=t), open=100, high=101, low=99, close=100.5, volume=1000)
    return FeatureVector(
        bar=bar, values={f"f{i}": float(v) for i, v in enumerate(values)}, warmup_remaining=warmup
    )


def test_step_matches_batch_labels_and_emits_events(fitted):
    _, model, x = fitted
    rule = TransitionRule(margin=0.05, confirm_bars=2, min_dwell=1)
    step = RegimeStep(model, rule)
    n = 200
    warm = 5
    labels = step.detector.label_matrix(x[:n], ["f0", "f1", "f2"], observed=np.arange(n) >= warm)
    state = None
    events: list[RegimeChanged] = []
    for t in range(n):
        state, outputs, new_events = step.apply(state, vector(t, x[t], warmup=max(warm - t, 0)))
        est = outputs[0].regime
        np.testing.assert_allclose(est.probabilities, labels.probabilities[t], atol=1e-12)
        assert est.regime is REGIMES[labels.regime[t]]
        assert est.confidence == pytest.approx(labels.confidence[t])
        events.extend(new_events)
    assert state.changes == len(events) > 0
    reported = [REGIMES[i] for i in labels.regime]
    for ev in events:
        t = (ev.timestamp - T0).days
        assert reported[t] is ev.to_regime and reported[t - 1] is ev.from_regime
        assert ev.bars_since_previous_change >= rule.min_dwell
        assert ev.confidence == pytest.approx(labels.probabilities[t, REGIMES.index(ev.to_regime)])


def test_redelivery_is_a_no_op(fitted):
    _, model, x = fitted
    step = RegimeStep(model)
    state = None
    for t in range(10):
        state, _, _ = step.apply(state, vector(t, x[t]))
    encoded = step.dump(state)
    assert step.sequence(state) == step.message_sequence(vector(9, x[9]))
    for t in (9, 3):  # the last bar again, and an older one
        again, outputs, events = step.apply(state, vector(t, x[t]))
        assert outputs == [] and events == []
        assert again.to_bytes() == encoded


def test_step_is_pure(fitted):
    _, model, x = fitted
    step = RegimeStep(model)
    state, _, _ = step.apply(None, vector(0, x[0]))
    before = state.to_bytes()
    step.apply(state, vector(1, x[1]))
    assert state.to_bytes() == before


def test_new_model_version_restarts_the_filter_but_keeps_the_regime(fitted):
    _, model, x = fitted
    step = RegimeStep(model)
    state = None
    for t in range(20):
        state, _, _ = step.apply(state, vector(t, x[t]))
    stale = step.load(step.dump(state))
    stale.model_version = "r-old"
    restarted, outputs, _ = step.apply(stale, vector(20, x[20]))
    fresh = step.detector.initial_state("SYN")
    step.detector.observe(fresh, x[20])
    np.testing.assert_allclose(restarted.log_alpha, fresh.log_alpha)
    assert restarted.model_version == model.version
    assert len(outputs) == 1


def _one_feature_model(means: list[float], regimes: tuple[Regime, ...], stay: float = 0.97) -> RegimeModel:
    k = len(means)
    trans = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(trans, stay)
    return RegimeModel((FeatureSpec("f0", "identity", 0.0, 1.0),), np.full(k, 1.0 / k), trans,
                       np.array(means, dtype=float)[:, None], np.ones((k, 1, 1)), "full", regimes)


def test_a_new_model_version_drops_the_old_models_pending_confirmation():
    """Two bars of confirmation under the old model are no evidence under the new one: the new
    model needs its own ``confirm_bars``."""
    rule = TransitionRule(margin=0.2, confirm_bars=3)
    old = RegimeStep(_one_feature_model([0.0, 3.0, -3.0, 6.0], (B, R, S, V)), rule)
    new = RegimeStep(_one_feature_model([0.0, 3.0, -3.0, 6.01], (B, R, S, V)), rule)
    state = None
    for t in range(10):
        state, _, _ = old.apply(state, vector(t, [0.0]))
    for t in (10, 11):
        state, _, events = old.apply(state, vector(t, [3.5]))
    assert state.regime is B and state.pending is R and state.pending_count == 2 and not events
    switched = []
    for t in (12, 13, 14):
        state, _, events = new.apply(state, vector(t, [3.5]))
        switched.append(bool(events))
    assert switched == [False, False, True]


def test_an_event_confidence_never_exceeds_one_when_two_states_share_a_regime():
    """A regime's probability sums its hidden states' and can round past 1; the event, like the
    estimate, carries it clipped (unclipped, the event failed validation on every retry)."""
    step = RegimeStep(_one_feature_model([0.0, 3.0, 20.0, -20.0, 40.0], (B, B, R, S, V), stay=1.0 - 4e-6),
                      TransitionRule(0.0, 1, 1))
    rng = np.random.default_rng(1)
    calm = 20.0 + 0.3 * rng.normal(size=20)
    changes = 0
    for z in rng.uniform(-2.0, 5.0, 400):
        state = None
        for t, value in enumerate(calm):
            state, _, _ = step.apply(state, vector(t, [value]))
        state, market, events = step.apply(state, vector(len(calm), [z]))
        for event in events:
            changes += 1
            assert 0.0 <= event.confidence <= 1.0
    assert changes > 300


def test_features_no_state_can_explain_are_an_invalid_message():
    """A finite but extreme value (identity transform) gives every state zero likelihood: the
    record is refused as invalid (dead-lettered), not retried for ever as a state error."""
    step = RegimeStep(_one_feature_model([0.0, 3.0, -3.0, 6.0], (B, R, S, V)))
    state, _, _ = step.apply(None, vector(0, [0.0]))
    with pytest.raises(InvalidMessageError, match="no regime of model"):
        step.apply(state, vector(1, [1e160]))


def test_missing_feature_and_wrong_symbol_are_typed_errors(fitted):
    _, model, x = fitted
    step = RegimeStep(model)
    bad = FeatureVector(bar=vector(0, x[0]).bar, values={"f0": 1.0}, warmup_remaining=0)
    with pytest.raises(InvalidMessageError, match="f1"):
        step.apply(None, bad)
    state, _, _ = step.apply(None, vector(0, x[0]))
    with pytest.raises(StateError, match="SYN"):
        step.apply(state, vector(1, x[1], symbol="OTHER"))


def test_event_ids_are_deterministic():
    args = ("SYN", B, R, 0.8, T0, 12, "r1")
    assert RegimeChanged.create(*args).event_id == RegimeChanged.create(*args).event_id
    assert RegimeChanged.create(*args).event_id != RegimeChanged.create("SYN", B, V, 0.8, T0, 12, "r1").event_id


def test_a_state_ruled_out_by_the_bars_is_stored_and_read_back():
    """A narrow state whose density underflows holds log-probability -inf: the filter state must
    still round-trip (refusing it failed every later batch of the symbol)."""
    k = 4
    trans = np.full((k, k), 0.1) + np.eye(k) * 0.6
    model = RegimeModel((FeatureSpec("f0", "identity", 0.0, 1e-4),), np.full(k, 0.25), trans,
                        np.array([[0.0], [0.0], [1.0], [-1.0]]), np.array([[[1e-300]], [[1.0]], [[1.0]], [[1.0]]]),
                        "full", (Regime.VOLATILE, Regime.BEAR, Regime.SIDEWAYS, Regime.BULL))
    step = RegimeStep(model)
    state, _, _ = step.apply(None, vector(0, np.array([5.0])))
    assert np.isneginf(state.log_alpha).any()
    copy = step.load(step.dump(state))
    np.testing.assert_array_equal(copy.log_alpha, state.log_alpha)
    step.apply(copy, vector(1, np.array([1.0])))  # and the filter goes on from it


@pytest.mark.parametrize("log_alpha", ["[NaN, 0.0]", "[Infinity, 0.0]", "[-Infinity, -Infinity]"])
def test_a_filter_state_without_a_probability_is_refused(log_alpha):
    data = ('{"format": 1, "symbol": "X", "model_version": "r1", "log_alpha": ' + log_alpha + ', "last_ns": null, '
            '"n_bars": 1, "regime": null, "bars_in_regime": 0, "log_likelihood": 0.0, "pending": null, '
            '"pending_bars": 0}').encode()
    with pytest.raises(StateError, match="log_alpha"):
        RegimeFilterState.from_bytes(data)
