"""``ensemble-trader bench``: argument errors (the benchmarks themselves run in their own tests)."""

from __future__ import annotations

from ensemble_trader.cli import main


def test_unknown_benchmark_name_is_an_error_naming_it(capsys):
    assert main(["bench", "--json", "--only", "features", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "unknown benchmark(s) ['nosuch']" in err and "'features'" in err
