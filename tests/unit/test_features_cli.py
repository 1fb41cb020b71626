"""``ensemble-trader features compute``: CSV output, the online check and the plot."""

from __future__ import annotations

import csv

import numpy as np
from ensemble_trader.cli import main
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from ensemble_trader.marketdata import write_bars_csv


def _series(n: int = WARMUP_BARS + 59) -> BarSeries:
    rng = np.random.default_rng(4)
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    open_ = np.concatenate([[20.0], close[:-1]])
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    ts = np.datetime64("2022-01-03", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return BarSeries("ABC", ts, open_, high, low, close, rng.integers(0, 500, n).astype(float))


def test_compute_writes_exact_csv_checks_parity_and_plots(tmp_path, capsys):
    series = _series()
    bars = tmp_path / "bars.csv"
    write_bars_csv(bars, [series], symbol_column=True)
    out = tmp_path / "out"

    assert main(["features", "compute", str(bars), "--out", str(out), "--check", "--plot"]) == 0

    printed = capsys.readouterr().out
    assert f"ABC: {WARMUP_BARS + 59} bars, 60 past warm-up" in printed
    assert "online vs batch max difference" in printed and "[ok" in printed
    with (out / "ABC_features.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["timestamp", "warmup_remaining", *FEATURE_NAMES]
    assert rows[1][0] == "2022-01-03T00:00:00Z"
    expected = compute_features(series)
    values = np.array([[float(x) for x in r[2:]] for r in rows[1:]])
    np.testing.assert_array_equal(values, expected.values)
    assert [int(r[1]) for r in rows[1:]] == expected.warmup_remaining.tolist()
    png = (out / "ABC_features.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_compute_reports_a_missing_source(tmp_path, capsys):
    assert main(["features", "compute", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_compute_refuses_two_symbols_that_would_share_a_file(tmp_path, capsys):
    bars = tmp_path / "two.csv"
    bars.write_text("timestamp,symbol,open,high,low,close,volume\n"
                    "2024-01-02T00:00:00Z,^GSPC,1,1,1,1,1\n2024-01-02T00:00:00Z,GSPC,1,1,1,1,1\n")
    assert main(["features", "compute", str(bars), "--out", str(tmp_path / "out")]) == 1
    assert "^GSPC and GSPC would both be written to GSPC_features.csv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
