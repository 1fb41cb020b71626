"""``ensemble-trader bench``: argument errors (the benchmarks themselves run in their own tests)."""

from __future__ import annotations

from ensemble_trader.cli import main


def test_unknown_benchmark_name_is_an_error_naming_it(capsys):
    assert main(["bench", "--json", "--only", "features", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "unknown benchmark(s) ['nosuch']" in err and "'features'" in err


def test_only_without_a_name_is_a_usage_error(capsys):
    """It ran every benchmark in full (an empty list read as no filter)."""
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--json", "--only"])
    assert exit_info.value.code == 2 and "--only" in capsys.readouterr().err


DOCUMENTED_KEYS = [
    f"{prefix}_{suffix}"
    for prefix, suffixes in {
        "features": ("update_us_p50", "update_us_p99", "naive_us_p50", "speedup"),
        "regime": ("update_us_p50", "update_us_p99", "naive_us_p50", "speedup"),
        "agents_infer": ("us_p50", "us_p99"),
        "meta_step": ("us_p50", "us_p99"),
        "decision": ("us_p50", "us_p99"),
        "order_route": ("us_p50", "us_p99"),
        "strategies_bar": ("ms_p50", "ms_p99"),
    }.items()
    for suffix in suffixes
]


def test_quick_json_prints_every_documented_key(capsys):
    import json

    assert main(["bench", "--json", "--quick"]) == 0
    results = json.loads(capsys.readouterr().out)
    missing = [key for key in DOCUMENTED_KEYS if key not in results]
    assert not missing
    assert all(isinstance(results[key], float) and results[key] > 0 for key in DOCUMENTED_KEYS)
