"""Refit defects a review found: the variance floor, the transitions into thin states, a history
row lacking a feature the refit needs, and the windows a refit's manifest records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from ensemble_trader.adapters.memory.fakes import MemoryEventBus, MemoryKeyValueStore, MemoryModelStore
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.fitted import find_overlaps, regime_windows
from ensemble_trader.domain.models import Regime
from ensemble_trader.domain.regime_fit import refit as refit_model
from ensemble_trader.domain.regime_fit import stationary_distribution
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings

B, R, S, V = Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE
LOG_FLOOR = 1e-5
CENTER = float(np.log(0.01))


def vol_model(means, variances, transmat, info=None) -> RegimeModel:
    """A model of ``range_vol_1`` (log, centred on log 0.01, scale 1) with the given states."""
    transmat = np.asarray(transmat, dtype=np.float64)
    return RegimeModel(
        (FeatureSpec("range_vol_1", "log", CENTER, 1.0),),
        stationary_distribution(transmat),
        transmat,
        np.asarray(means, dtype=np.float64)[:, None],
        np.asarray(variances, dtype=np.float64)[:, None, None],
        "full",
        (S, R, B, V),
        log_floor=LOG_FLOOR,
        info=info or {},
    )


def sample(model: RegimeModel, n: int, seed: int, visit: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``range_vol_1`` rows drawn from ``model``'s chain (restricted to the states ``visit``,
    renormalised), a state at the log floor giving 0; and one-bar returns."""
    rng = np.random.default_rng(seed)
    k = model.n_states
    allowed = np.zeros(k, dtype=bool)
    allowed[list(visit if visit is not None else range(k))] = True
    trans = np.where(allowed[None, :], model.transmat, 0.0)
    trans /= trans.sum(axis=1, keepdims=True)
    state = int(np.flatnonzero(allowed)[0])
    z = np.empty(n)
    for t in range(n):
        z[t] = rng.normal(model.means[state, 0], np.sqrt(model.covariances[state, 0, 0]))
        state = int(rng.choice(k, p=trans[state]))
    raw = np.exp(z + CENTER)
    raw[z + CENTER <= np.log(LOG_FLOOR)] = 0.0  # read at the log floor
    return raw[:, None], rng.normal(0.0, 0.01, n)


FLOOR_Z = float(np.log(LOG_FLOOR)) - CENTER
STICKY = np.full((4, 4), 0.02) + np.eye(4) * 0.92


def floor_state_model() -> RegimeModel:
    """State 0 holds the rows read at the log floor: all at one value, a tiny variance (as an
    hmmlearn fit leaves such a state: its covars_prior over the state's weight)."""
    return vol_model([FLOOR_Z, -0.5, 0.3, 1.2], [4e-5, 0.1, 0.1, 0.2], STICKY)


def test_a_refit_from_a_state_on_the_log_floor_does_not_end_below_its_start():
    """The refit added 1e-3 to every re-estimated variance: the floor state (variance 4e-5) was
    widened 25-fold and the 'EM' ended below the model it started from."""
    model = floor_state_model()
    raw, ret = sample(model, 2_000, 1)
    assert (raw[:, 0] == 0).sum() > 100  # the floor state is well visited
    result = refit_model(model, raw, ret, raw[:, 0])
    assert result.log_likelihood > result.previous_log_likelihood
    # estimated as training does (prior over weight), not floored at 1e-3
    assert result.model.covariances[0, 0, 0] < 1e-3


def test_a_step_that_lowers_the_log_likelihood_is_not_kept():
    """A floor above the state's variance makes each step worse than the start: the refit
    returns its best iterate (here the starting parameters), never a lower one."""
    model = floor_state_model()
    raw, ret = sample(model, 2_000, 1)
    result = refit_model(model, raw, ret, raw[:, 0], min_covariance=1e-3)
    assert result.log_likelihood >= result.previous_log_likelihood
    assert result.model.info["best_iteration"] < result.iterations or result.iterations == 0
    if result.model.info["best_iteration"] == 0:
        np.testing.assert_array_equal(result.model.covariances, model.covariances)


def test_the_transitions_into_a_thin_state_are_kept_from_the_starting_model():
    """A calm lookback hardly visits the stress state (under 1 % of the rows): its own row was
    kept, but the other rows' transitions into it were re-estimated from its few visits and fell
    to the 1e-6 floor, making it unreachable."""
    model = vol_model([-1.0, -0.3, 0.3, 2.5], [0.05, 0.05, 0.05, 0.1], STICKY)
    raw, ret = sample(model, 600, 2, visit=(0, 1, 2))  # never the stress state 3
    result = refit_model(model, raw, ret, raw[:, 0])
    refit = result.model
    np.testing.assert_allclose(refit.transmat[:, 3], model.transmat[:, 3], rtol=1e-12)
    np.testing.assert_allclose(refit.transmat.sum(axis=1), 1.0, atol=1e-12)
    assert refit.transmat[:3, :3].tolist() != model.transmat[:3, :3].tolist()  # the rest was refit
    assert refit.start_prob[3] > 0.5 * model.start_prob[3]  # still reachable in the long run


class HistoryTable(MemoryKeyValueStore):
    """The ``query`` the refit uses, over the in-memory rows."""

    def query(self, table, key, value, limit=None, newest_first=False):
        rows = sorted((r for r in self.items(table) if r[key] == value), key=lambda r: r["timestamp"], reverse=newest_first)
        return rows[:limit]


T0 = datetime(2024, 1, 1, tzinfo=UTC)


def history(symbol: str, n: int, seed: int, lacking: dict[int, str] | None = None) -> HistoryTable:
    """``n`` ready rows of ``symbol``, one an hour, with ``range_vol_1`` and ``ret_1``; the rows
    ``lacking`` names lack that feature."""
    rng = np.random.default_rng(seed)
    vol = np.exp(np.log(0.008) + 0.4 * np.sin(np.arange(n) / 40.0) + rng.normal(0, 0.3, n))
    table = HistoryTable()
    rows = []
    for i in range(n):
        features = {"range_vol_1": float(vol[i]), "ret_1": float(rng.normal(0, vol[i]))}
        features.pop((lacking or {}).get(i, ""), None)
        rows.append({"symbol": symbol, "timestamp": (T0 + timedelta(hours=i)).isoformat(), "ready": True,
                     "features": features})
    table.put_items("regime-history", rows)
    return table


@pytest.fixture(scope="module")
def refit_lambda():
    return load_module("regime", "refit"), get_settings().models_dir / "regime"


def test_a_ready_row_lacking_ret_1_is_left_out_and_the_shared_refit_goes_on(refit_lambda):
    refit, default_dir = refit_lambda
    table = history("SYNA", 600, 3, lacking={300: "ret_1"})
    store = MemoryModelStore()
    out = refit.run_refit(store, table, MemoryEventBus(), default_dir, {"symbols": ["SYNA"], "min_gain_per_row": 0})
    assert "skipped" not in out, out.get("skipped")
    assert out["published"] and out["rows_dropped"] == 1 and out["n_samples"] == 599
    assert registry.load_version(store, out["version"]).info["rows_dropped"] == 1


def test_too_few_usable_rows_keep_the_minimum_rows_rule(refit_lambda):
    refit, default_dir = refit_lambda
    table = history("SYNA", 120, 4, lacking={i: "range_vol_1" for i in range(60)})
    out = refit.run_refit(MemoryModelStore(), table, MemoryEventBus(), default_dir, {"symbols": ["SYNA"]})
    assert not out["published"] and "at least 80 rows" in out["skipped"] and "got 60" in out["skipped"]


def test_the_lambdas_window_starts_with_the_warm_up_bars_of_its_first_row(refit_lambda):
    refit, default_dir = refit_lambda
    table = history("SYNA", 600, 5)
    store = MemoryModelStore()
    out = refit.run_refit(store, table, MemoryEventBus(), default_dir,
                          {"symbols": ["SYNA"], "lookback_bars": 200, "min_gain_per_row": 0})
    info = registry.load_version(store, out["version"]).info
    first = 600 - 200
    assert info["fitted_window"][0] == (T0 + timedelta(hours=first)).isoformat()
    assert info["training_window"] == [(T0 + timedelta(hours=first - (WARMUP_BARS - 1))).isoformat(),
                                       (T0 + timedelta(hours=599)).isoformat()]


TRAINED = {"training_data": ["arch:sp500"],
           "training_window": [{"symbol": "SPX", "start": "1999-01-04T00:00:00", "end": "2006-12-29T00:00:00"}]}


def test_a_refit_carries_its_ancestors_training_windows_into_its_manifest():
    """The refit keeps its pin's standardisation and log floor: the pin's window (1999-2006) is
    in sample for it too. Its manifest recorded only its own rows' window."""
    pin = vol_model([-1.0, -0.3, 0.3, 1.5], [0.1, 0.1, 0.1, 0.2], STICKY, info=TRAINED)
    raw, ret = sample(pin, 400, 6)
    own = {"symbols": ["SPX"], "training_window": ["2011-01-03T00:00:00+00:00", "2012-08-01T00:00:00+00:00"]}
    first = refit_model(pin, raw, ret, raw[:, 0], info=own).model
    hits = find_overlaps("arch:sp500", "2001-01-02", "2005-12-30", regime_windows(first.info, first.version))
    assert [(h.by, h.window.data) for h in hits] == [("date", "arch:sp500")]
    assert pin.version in hits[0].window.model and first.version in hits[0].window.model
    # a refit of the refit carries both windows
    later = {"symbols": ["SPX"], "training_window": ["2013-01-02T00:00:00+00:00", "2014-08-01T00:00:00+00:00"]}
    second = refit_model(first, raw, ret, raw[:, 0], info=later).model
    windows = regime_windows(second.info, second.version)
    assert [(w.first[:4], w.last[:4]) for w in windows] == [("2013", "2014"), ("2011", "2012"), ("1999", "2006")]
    assert find_overlaps("arch:sp500", "2011-06-01", "2011-07-01", windows)


def test_a_refit_manifest_without_inherited_windows_reads_as_an_unrecorded_ancestor_window():
    """Older refits recorded ``refit_of`` and their own window only: the ancestor's window is
    unknown, so it is reported as unrecorded rather than silently left out."""
    info = {"symbols": ["SPX"], "training_window": ["2011-01-03T00:00:00+00:00", "2012-08-01T00:00:00+00:00"],
            "refit_of": "r749116fcbf43"}
    windows = regime_windows(info, "rold")
    assert [w.recorded for w in windows] == [True, False] and "r749116fcbf43" in windows[1].data
    assert [h.by for h in find_overlaps("arch:sp500", "2001-01-02", "2005-12-30", windows)] == ["unrecorded"]
    # and a refit of it carries that unrecorded window on
    pin = vol_model([-1.0, -0.3, 0.3, 1.5], [0.1, 0.1, 0.1, 0.2], STICKY, info=info)
    raw, ret = sample(pin, 400, 7)
    child = refit_model(pin, raw, ret, raw[:, 0]).model
    assert [w.recorded for w in regime_windows(child.info, child.version)][-1] is False
