"""The regime benchmark runs, reports every key the issue asks for, and agrees with hmmlearn."""

from __future__ import annotations

from ensemble_trader.bench import regime as bench


def test_quick_benchmark_reports_the_required_figures():
    out = bench.run(quick=True)
    for key in ("regime_update_us_p50", "regime_update_us_p99", "regime_naive_us_p50", "regime_speedup"):
        assert isinstance(out[key], float) and out[key] > 0.0, key
    assert out["regime_naive_max_abs_diff"] < 1e-8
    assert 0 < out["regime_state_bytes"] < 1000
