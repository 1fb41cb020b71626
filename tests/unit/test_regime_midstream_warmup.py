"""Feature warm-up after ready bars (the symbol's features state restarted): every warm-up bar
reports the start distribution, its most likely regime and ``bars_in_regime`` 0 (no detection),
and the detection restarts: the first ready bar after the warm-up is detected as a new symbol's
first bar (docs/regime.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from ensemble_trader.domain.models import REGIMES, Bar, FeatureVector, Regime
from ensemble_trader.domain.regime import RegimeDetector, RegimeStep, TransitionRule
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel
from ensemble_trader.runtime.regime_registry import history_item

B, R, S, V = Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE
T0 = datetime(2024, 1, 1, tzinfo=UTC)
# a start distribution whose most likely regime (SIDEWAYS) is neither regime detected below
START = np.array([0.2, 0.2, 0.4, 0.2])
MODEL = RegimeModel((FeatureSpec("f0", "identity", 0.0, 1.0),), START,
                    np.array([[0.97 if i == j else 0.01 for j in range(4)] for i in range(4)]),
                    np.array([[0.0], [3.0], [-3.0], [6.0]]), np.ones((4, 1, 1)), "full", (B, R, S, V))
WARM = 5


def vector(t: int, value: float, warmup: int = 0) -> FeatureVector:
    bar = Bar(symbol="SYN", timestamp=T0 + timedelta(days=t), open=100, high=101, low=99, close=100.5, volume=1000)
    return FeatureVector(bar=bar, values={} if warmup else {"f0": value}, warmup_remaining=warmup)


def stream() -> list[FeatureVector]:
    """20 ready BEAR bars, a restarted features state (WARM bars warming up), then 6 ready BULL
    bars."""
    before = [vector(t, 3.0) for t in range(20)]
    gap = [vector(20 + i, 0.0, warmup=WARM - i) for i in range(WARM)]
    after = [vector(20 + WARM + i, 0.0) for i in range(6)]
    return before + gap + after


def run(step: RegimeStep, vectors: list[FeatureVector], state=None):
    outputs, events = [], []
    for v in vectors:
        state, out, ev = step.apply(state, v)
        outputs += out
        events += ev
    return state, outputs, events


def test_every_warm_up_bar_after_ready_ones_is_no_detection_with_the_start_distribution():
    _, outputs, _ = run(RegimeStep(MODEL), stream())
    assert outputs[19].regime.regime is R and outputs[19].regime.bars_in_regime == 20
    prior = START @ MODEL.regime_matrix
    for state in outputs[20 : 20 + WARM]:
        est = state.regime
        assert not state.features.ready
        # was BEAR with its frozen bars_in_regime 20, beside the start distribution's confidence
        assert (est.regime, est.bars_in_regime) == (S, 0)
        np.testing.assert_allclose(est.probabilities, prior)
        assert est.confidence == float(prior[REGIMES.index(S)])
        row = history_item(state)
        assert (row["regime"], row["bars_in_regime"], row["ready"]) == ("SIDEWAYS", 0, False)


def test_after_the_warm_up_the_symbol_is_detected_afresh_as_a_stream_starting_there():
    vectors = stream()
    _, outputs, events = run(RegimeStep(MODEL), vectors)
    after = outputs[20 + WARM :]
    assert [o.regime.bars_in_regime for o in after] == [1, 2, 3, 4, 5, 6]
    assert {o.regime.regime for o in after} == {B}
    # no RegimeChanged in the warm-up, and the first regime after it comes without one
    assert [(e.from_regime, e.to_regime) for e in events] == []
    # the same estimates as a symbol whose stream starts at the restart
    _, fresh, _ = run(RegimeStep(MODEL), vectors[20:])
    assert [o.regime for o in outputs[20:]] == [o.regime for o in fresh]


def test_a_pending_confirmation_and_the_filter_do_not_survive_the_warm_up():
    rule = TransitionRule(margin=0.2, confirm_bars=5)
    step = RegimeStep(MODEL, rule)
    state, _, _ = run(step, [vector(t, 3.0) for t in range(20)] + [vector(t, 0.0) for t in (20, 21, 22)])
    assert state.regime is R and state.pending is B and state.pending_count >= 2
    state, _, _ = step.apply(state, vector(23, 0.0, warmup=3))
    assert state.log_alpha is None and state.regime is None and state.bars_in_regime == 0
    assert state.pending is None and state.pending_count == 0
    assert state.n_bars == 24 and state.n_observed == 23  # the counters go on
    assert step.dump(step.load(step.dump(state))) == step.dump(state)


def test_label_matrix_restarts_on_rows_not_observed_as_the_step_does():
    vectors = stream()
    _, outputs, _ = run(RegimeStep(MODEL), vectors)
    values = np.array([[v.values.get("f0", 0.0)] for v in vectors])
    labels = RegimeDetector(MODEL).label_matrix(values, ["f0"], observed=np.array([v.ready for v in vectors]))
    assert [REGIMES[i] for i in labels.regime] == [o.regime.regime for o in outputs]
    np.testing.assert_allclose(labels.confidence, [o.regime.confidence for o in outputs], rtol=0, atol=1e-12)
