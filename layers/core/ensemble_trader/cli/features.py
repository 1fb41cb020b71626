"""``ensemble-trader features compute SPEC --out DIR [--check] [--plot]``.

Computes the features of every series of a data source (``arch:sp500``, ``synth:<scenario>``, a
bars CSV, ... — the specs of ``ensemble-trader data show``) with the vectorised batch code and
writes ``DIR/<SYMBOL>_features.csv``: ``timestamp,warmup_remaining`` and one column per
feature in ``FEATURE_NAMES`` order (floats written so they read back exactly).

``--check`` also replays every bar through the incremental :class:`FeatureEngine` (with a
progress bar) and reports the largest online/batch difference and the per-bar latency; the
command fails if the difference exceeds 1e-9. ``--plot`` draws ``DIR/<SYMBOL>_features.png``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

PARITY_TOLERANCE = 1e-9


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import output_folder

    p = sub.add_parser("features", help="compute, check and plot the incremental features")
    feat_sub = p.add_subparsers(dest="features_command", metavar="FEATURES_COMMAND", required=True)
    compute = feat_sub.add_parser("compute", help="write the features of a data source as CSV")
    compute.add_argument(
        "spec", help="arch:sp500 | arch:nasdaq | shared:<name> | synth:<scenario>[:<seed>[:<bars>[:<symbol>]]] | bars.csv"
    )
    compute.add_argument("--out", type=output_folder, required=True, help="output directory")
    compute.add_argument("--check", action="store_true", help="replay bar by bar and compare with the batch")
    compute.add_argument("--plot", action="store_true", help="also draw DIR/<SYMBOL>_features.png")
    compute.set_defaults(func=_compute)


def _compute(args: argparse.Namespace) -> int:
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.features import compute_features
    from ensemble_trader.marketdata import load_bars

    status = 0
    all_series = load_bars(args.spec)
    stems: dict[str, str] = {}
    for series in all_series:
        stem = series.symbol.replace("/", "_").replace("^", "")
        if stem in stems:
            raise DataError(
                f"{stems[stem]} and {series.symbol} would both be written to {stem}_features.csv: "
                "compute them from separate files"
            )
        stems[stem] = series.symbol
    for series, stem in zip(all_series, stems, strict=True):
        matrix = compute_features(series)
        path = args.out / f"{stem}_features.csv"
        write_features_csv(path, matrix)
        ready = int(matrix.ready.sum())
        print(f"{series.symbol}: {len(series)} bars, {ready} past warm-up -> {path}")
        if args.check and not _check(series, matrix):
            status = 1
        if args.plot:
            png = args.out / f"{stem}_features.png"
            plot_features(series, matrix, png)
            print(f"{series.symbol}: plot -> {png}")
    return status


def write_features_csv(path: Path, matrix) -> None:  # noqa: ANN001 - FeatureMatrix, imported lazily
    """One row per bar: ISO-8601 UTC timestamp, warm-up counter, the features (exact floats)."""
    import numpy as np

    ns = matrix.timestamp.astype("datetime64[ns]")
    whole_seconds = bool(np.all(ns.astype(np.int64) % 1_000_000_000 == 0))
    stamps = np.datetime_as_string(ns, unit="s" if whole_seconds else "ns").tolist()
    from ensemble_trader.marketdata import atomic_writer

    with atomic_writer(path, newline="") as handle:  # Ctrl-C or a full disk leaves no half file
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["timestamp", "warmup_remaining", *matrix.names])
        for stamp, warm, row in zip(
            stamps, matrix.warmup_remaining.tolist(), matrix.values.tolist(), strict=True
        ):
            writer.writerow([stamp + "Z", warm, *map(repr, row)])


def _check(series, matrix) -> bool:  # noqa: ANN001
    """Replay ``series`` through the online engine; print the parity and latency figures."""
    import numpy as np
    from tqdm import tqdm

    from ensemble_trader.domain.features import FeatureEngine

    engine = FeatureEngine(series.symbol)
    ts = series.timestamp.astype("datetime64[ns]").astype(np.int64).tolist()
    cols = [getattr(series, k).tolist() for k in ("open", "high", "low", "close", "volume")]
    rows = np.empty_like(matrix.values)
    spent = np.empty(len(series), dtype=np.int64)
    clock = time.perf_counter_ns
    bars = zip(ts, *cols, strict=True)
    for i, bar in enumerate(tqdm(bars, total=len(series), desc=f"{series.symbol} online", unit="bar")):
        t0 = clock()
        rows[i] = engine.update_raw(*bar)
        spent[i] = clock() - t0
    err = np.abs(rows - matrix.values) / np.maximum(1.0, np.abs(matrix.values))
    worst = float(err.max()) if err.size else 0.0
    ok = worst <= PARITY_TOLERANCE
    where = ""
    if err.size:
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        where = f" ({matrix.names[j]}, row {i})"
    print(
        f"{series.symbol}: online vs batch max difference {worst:.2e}{where} "
        f"[{'ok' if ok else 'FAILED'}: tolerance {PARITY_TOLERANCE:g}]; "
        f"update_raw p50 {np.percentile(spent, 50) / 1e3:.1f} us, p99 {np.percentile(spent, 99) / 1e3:.1f} us",
        file=sys.stdout if ok else sys.stderr,
    )
    return ok


def plot_features(series, matrix, path: Path) -> None:  # noqa: ANN001
    """Close, drawdown, volatilities, trend, RSI and z-scores over time; warm-up shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = series.timestamp.astype("datetime64[s]").astype("O")
    col = matrix.column
    panels = [
        ("close (log)", [("close", series.close)], True),
        ("drawdown", [("drawdown", col("drawdown"))], False),
        (
            "volatility per bar",
            [(n, col(n)) for n in ("ewma_vol", "realized_vol_20", "range_vol_20")],
            False,
        ),
        ("trend ln(EMA10/EMA50)", [("trend_10_50", col("trend_10_50"))], False),
        ("RSI 14", [("rsi_14", col("rsi_14"))], False),
        ("z-scores (20 bars)", [(n, col(n)) for n in ("zscore_20", "volume_z_20")], False),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 13), sharex=True)
    warm = int((~matrix.ready).sum())
    for ax, (title, lines, log_scale) in zip(axes, panels, strict=True):
        for label, values in lines:
            ax.plot(x, values, linewidth=0.6, label=label)
        if log_scale:
            ax.set_yscale("log")
        if warm and len(x):
            ax.axvspan(x[0], x[min(warm, len(x) - 1)], color="gray", alpha=0.2, linewidth=0)
        ax.set_ylabel(title, fontsize=8)
        if len(lines) > 1:
            ax.legend(loc="upper left", fontsize=7, ncol=len(lines))
    axes[1].fill_between(x, col("drawdown"), 0.0, color="tab:red", alpha=0.3)
    for level in (30.0, 70.0):
        axes[4].axhline(level, color="gray", linewidth=0.5, linestyle="--")
    axes[0].set_title(f"{series.symbol}: {len(series)} bars, features (warm-up shaded)")
    fig.tight_layout()
    from ensemble_trader.marketdata import save_figure

    save_figure(fig, path, dpi=100)
    plt.close(fig)
