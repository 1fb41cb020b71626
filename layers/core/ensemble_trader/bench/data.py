"""Benchmark of the data layer: synthetic generation and bars-CSV reading/writing speed."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _best_ms(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls in milliseconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / 1e6)
    return best


def run(quick: bool = False) -> dict[str, float]:
    from ensemble_trader.domain.synthetic import generate
    from ensemble_trader.marketdata import iter_bars_csv, read_bars_csv, write_bars_csv

    n = 20_000 if quick else 100_000
    repeats = 1 if quick else 3
    generate_ms = _best_ms(lambda: generate("realistic", n, 1, freq="1h"), repeats)
    data = generate("realistic", n, 1, freq="1h")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.csv"
        write_ms = _best_ms(lambda: write_bars_csv(path, [data.series]), repeats)
        read_ms = _best_ms(lambda: read_bars_csv(path, symbol="SYN"), repeats)
        stream_ms = _best_ms(lambda: sum(1 for _ in iter_bars_csv(path, symbol="SYN")), 1)
        back = read_bars_csv(path, symbol="SYN")[0]
        if not np.array_equal(back.close, data.series.close):  # the round trip must be exact
            raise AssertionError("bars CSV round trip changed the data")
    scale = 100_000 / n
    return {
        "synth_generate_ms_per_100k_bars": round(generate_ms * scale, 1),
        "marketdata_write_csv_rows_per_s": round(n / (write_ms / 1e3)),
        "marketdata_read_csv_rows_per_s": round(n / (read_ms / 1e3)),
        "marketdata_iter_bars_rows_per_s": round(n / (stream_ms / 1e3)),
    }
