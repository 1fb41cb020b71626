"""Regime-stage benchmark: the online forward filter against hmmlearn on a trailing window.

Figures (one symbol, the committed default model, features of a synthetic ``realistic`` run):

* ``regime_update_us_p50/p99`` — one :meth:`RegimeDetector.update`: read the model's features
  from the feature dict, transform and standardise, Gaussian emissions, the log-space forward
  step, regime sums and the transition rule;
* ``regime_step_us_p50/p99`` — :meth:`RegimeStep.apply` on a ``FeatureVector``: the above plus
  the state copy and the pydantic ``RegimeEstimate``/``MarketState``/event messages;
* ``regime_naive_us_p50`` — the naive way, same run: hmmlearn's ``predict_proba`` over the
  trailing 250 bars with the same parameters, keeping its last row;
* ``regime_speedup`` — naive p50 / update p50;
* ``regime_naive_max_abs_diff`` — our filter run over one 250-bar window against hmmlearn's last
  posterior row on it: a check that both compute the same probabilities;
* ``regime_state_bytes``, ``regime_state_roundtrip_us_p50`` — the serialised filter state and
  one ``to_bytes`` + ``from_bytes``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ensemble_trader.bench import percentiles_us, time_calls
from ensemble_trader.domain.features import FEATURE_NAMES, compute_features
from ensemble_trader.domain.models import FeatureVector
from ensemble_trader.domain.regime import RegimeDetector, RegimeFilterState, RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime.settings import get_settings

NAIVE_WINDOW = 250


def _hmmlearn_twin(model: RegimeModel):
    """An hmmlearn GaussianHMM holding exactly the artifact's parameters (None if not installed)."""
    try:
        from hmmlearn.hmm import GaussianHMM
    except ImportError:
        return None
    hmm = GaussianHMM(n_components=model.n_states, covariance_type=model.covariance_type, init_params="", params="")
    hmm.n_features = model.n_features
    hmm.startprob_ = model.start_prob
    hmm.transmat_ = model.transmat
    hmm.means_ = model.means
    hmm.covars_ = model.covariances
    return hmm


def run(quick: bool) -> dict[str, float | int | str]:
    model = RegimeModel.load(get_settings().models_dir / "regime")
    detector = RegimeDetector(model)
    n = 2_000 if quick else 6_000
    data = generate("realistic", n, seed=3)
    matrix = compute_features(data.series)
    rows = [dict(zip(FEATURE_NAMES, r, strict=True)) for r in matrix.values.tolist()]

    state = detector.initial_state("BENCH")
    cursor = iter(range(10**9))

    def update() -> None:
        values = rows[next(cursor) % n]
        detector.update(state, model.raw_vector(values))

    repeats = 5_000 if quick else 40_000
    out: dict[str, float | int | str] = {"regime_model_version": model.version}
    out.update(percentiles_us(time_calls(update, repeats), "regime_update"))

    step = RegimeStep(model)
    bars = data.series
    vectors = [
        FeatureVector(bar=bars.bar(i), values=rows[i], warmup_remaining=int(matrix.warmup_remaining[i]))
        for i in range(min(n, 2_000))
    ]
    holder = {"state": step.new_state("SYN"), "i": 0}

    def apply() -> None:
        i = holder["i"]
        if i == len(vectors):  # start over with a fresh state so every call is a new bar
            holder["state"], i = step.new_state("SYN"), 0
        holder["state"], _, _ = step.apply(holder["state"], vectors[i])
        holder["i"] = i + 1

    out.update(percentiles_us(time_calls(apply, 2_000 if quick else 10_000), "regime_step"))

    blob = state.to_bytes()
    out["regime_state_bytes"] = len(blob)
    out.update(
        {
            "regime_state_roundtrip_us_p50": percentiles_us(
                time_calls(lambda: RegimeFilterState.from_bytes(state.to_bytes()), 2_000), "x"
            )["x_us_p50"]
        }
    )

    hmm = _hmmlearn_twin(model)
    if hmm is not None:
        names = list(FEATURE_NAMES)
        cols = [names.index(f) for f in model.feature_names]
        z = model.transform(matrix.values[matrix.ready][:, cols])
        starts = iter(range(10**9))
        span = len(z) - NAIVE_WINDOW

        def naive() -> None:
            s = next(starts) % span
            hmm.predict_proba(z[s : s + NAIVE_WINDOW])[-1]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            naive_us = percentiles_us(time_calls(naive, 300 if quick else 2_000, warmup=10), "regime_naive")
            # the same thing both ways: our filter over one window equals hmmlearn's last row
            window = z[:NAIVE_WINDOW]
            fresh = detector.initial_state("CHECK")
            for row in matrix.values[matrix.ready][:NAIVE_WINDOW][:, cols]:
                detector.observe(fresh, row)
            reference = hmm.predict_proba(window)[-1]
        out["regime_naive_max_abs_diff"] = float(np.abs(np.exp(fresh.log_alpha) - reference).max())
        out["regime_naive_us_p50"] = naive_us["regime_naive_us_p50"]
        out["regime_speedup"] = round(naive_us["regime_naive_us_p50"] / max(out["regime_update_us_p50"], 1e-9), 1)
    return out


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=False), indent=2))
