"""The feature benchmark runs, reports every key the issue asks for, and its naive baseline agrees."""

from __future__ import annotations

from ensemble_trader.bench import features as bench


def test_quick_benchmark_reports_the_required_figures():
    out = bench.run(quick=True)
    for key in (
        "features_update_us_p50",
        "features_update_us_p99",
        "features_update_bar_us_p50",
        "features_naive_us_p50",
        "features_speedup",
    ):
        assert isinstance(out[key], float) and out[key] > 0.0, key
    # the pandas baseline recomputes the same windowed features as the engine
    assert out["features_naive_max_abs_diff"] < 1e-9
    assert 0 < out["features_state_bytes"] < 2000
