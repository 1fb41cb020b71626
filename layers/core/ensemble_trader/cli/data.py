"""``ensemble-trader data ...``: generate synthetic bars, inspect and export data sources.

* ``data synth --scenario NAME --seed N --bars N --out DIR`` writes DIR/bars.csv and DIR/truth.csv
  (``--plot`` also draws DIR/synth.png: the close coloured by the hidden regime);
* ``data show SPEC`` summarises a source (``arch:sp500``, ``shared:btcusd_1h``, ``synth:hard:7``,
  or a CSV path) and warns of one-bar jumps and gaps the features would take for market moves;
* ``data export SPEC --out FILE.csv`` writes any source as a bars CSV;
* ``data scenarios`` lists the synthetic presets with their long-run regime shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ensemble_trader.domain.synthetic import SyntheticData

_SPEC_HELP = "arch:sp500 | arch:nasdaq | shared:<name> | synth:<scenario>[:<seed>[:<bars>[:<symbol>]]] | path/to/bars.csv"


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import at_least, output_file, output_folder, seed

    p = sub.add_parser("data", help="market data: synthetic generator, summaries, CSV export")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    synth = data_sub.add_parser("synth", help="generate regime-switching bars with ground-truth labels")
    synth.add_argument("--scenario", default="realistic", help="preset name (see `data scenarios`; default realistic)")
    synth.add_argument("--seed", type=seed, default=0, help="random seed, 0 to 2**32 - 1 (same seed, same bytes; "
                       "default 0)")
    synth.add_argument("--bars", type=at_least(1), default=5_000,
                       help="number of bars (default 5,000), at most 1,000,000 (the generator's MAX_BARS; several "
                            "seeds for more) and as many as end by 2262-04-11, the last day bar times reach: "
                            "95,792 daily bars from 2000-01-03")
    synth.add_argument("--out", type=output_folder, required=True, help="output directory")
    synth.add_argument("--symbol", default="SYN", help="symbol of the generated bars (default SYN)")
    synth.add_argument("--start", default="2000-01-03", help="time of the first bar (ISO-8601, UTC unless it names an offset; with "
                            "--freq <k>B a Monday-Friday at that offset; default 2000-01-03)")
    synth.add_argument("--freq", default="1D", help="bar spacing: 1D, 4h, 15min, 30s ... (default 1D)")
    synth.add_argument("--plot", action="store_true", help="also write DIR/synth.png")
    synth.set_defaults(func=_synth)

    show = data_sub.add_parser("show", help="summarise a data source")
    show.add_argument("spec", help=_SPEC_HELP)
    show.set_defaults(func=_show)

    export = data_sub.add_parser("export", help="write a data source as a bars CSV")
    export.add_argument("spec", help=_SPEC_HELP)
    export.add_argument("--out", type=output_file, required=True, help="output CSV file")
    export.set_defaults(func=_export)

    scenarios = data_sub.add_parser("scenarios", help="list the synthetic presets")
    scenarios.set_defaults(func=_scenarios)


def _synth(args: argparse.Namespace) -> int:
    from ensemble_trader.domain.synthetic import generate
    from ensemble_trader.marketdata import write_bars_csv, write_truth_csv

    data = generate(args.scenario, args.bars, args.seed, symbol=args.symbol, start=args.start, freq=args.freq)
    out: Path = args.out
    write_bars_csv(out / "bars.csv", [data.series], symbol_column=True)
    write_truth_csv(out / "truth.csv", data)
    if args.plot:
        plot_synthetic(data, out / "synth.png")
    shares = " ".join(f"{name}={share:.1%}" for name, share in data.shares().items())
    print(
        f"synth {data.scenario} seed={data.seed}: {len(data.series)} bars of {data.series.symbol} -> {out}/bars.csv, "
        f"{out}/truth.csv | shares {shares} | {data.switches()} regime switches"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    from ensemble_trader.marketdata import _format_timestamps as format_timestamps
    from ensemble_trader.marketdata import load_bars, parse_synth_spec

    # generated bars hold no split or bad price, and their own shocks pass JUMP_LOG_RETURN
    generated = parse_synth_spec(args.spec) is not None
    for s in load_bars(args.spec):
        n = len(s)
        if n == 0:
            print(f"{s.symbol}: 0 rows")
            continue
        first, last = format_timestamps(s.timestamp[[0, -1]])  # as the bars CSV writes them
        if n == 1:  # no spacing, no return, no range to measure
            print(f"{s.symbol}: 1 row, at {first}, close {s.close[0]:.6g}, volume {float(s.volume[0]):.6g} "
                  "(one row: no spacing or returns to measure)")
            continue
        step = spacing(np.median(np.diff(s.timestamp)))
        log_ret = np.diff(np.log(s.close))
        vol = f"{float(np.std(log_ret)):.4%} per bar" if n > 2 else "n/a (one return)"
        print(
            f"{s.symbol}: {n:,} rows, {first} … {last}, median spacing {step}, close {s.close[0]:.6g} → "
            f"{s.close[-1]:.6g} (min {s.close.min():.6g}, max {s.close.max():.6g}), log-return sd {vol}, "
            f"mean volume {float(np.mean(s.volume)):.6g}"
        )
        for line in irregularities(s.timestamp, log_ret, check_jumps=not generated):
            print(f"  warning: {line}")
    return 0


JUMP_LOG_RETURN = 0.3
"""``data show`` warns of a close-to-close move above this in one bar (|ln| > 0.3: a fall of 26%
or a rise of 35%; a 2:1 split is 0.69, 3:2 is 0.41). The largest in the shipped data: 0.11
(S&P 500), 0.13 (NASDAQ, BTC-USD hourly). Not applied to a ``synth:`` spec: generated bars hold
no split or bad price, and their fat-tailed shocks pass any such threshold (the largest move of
seeds 0-99 at 95,792 bars: 0.17 easy, 0.58 realistic, 1.83 hard, 0.51 mean_reverting; 20, 13 and
6 of the 100 seeds of the last three pass 0.3), so the warning would only ever be wrong there."""
GAP_SPACINGS = 5.0
"""``data show`` warns of a spacing above this many median spacings (daily trading bars: a week
without a bar; weekends and holidays are 3-4)."""


def irregularities(timestamp: np.ndarray, log_ret: np.ndarray, *, check_jumps: bool = True) -> list[str]:
    """What breaks the features' assumptions of split-adjusted, evenly spaced bars, as
    ``data show`` words it: one-bar jumps above :data:`JUMP_LOG_RETURN` (unless ``check_jumps`` is
    False: bars known to be adjusted, such as generated ones) and spacings above
    :data:`GAP_SPACINGS` times the median (count, the largest and where)."""
    import numpy as np

    from ensemble_trader.marketdata import _format_timestamps as format_timestamps

    out = []
    jumps = np.flatnonzero(np.abs(log_ret) > JUMP_LOG_RETURN) if check_jumps else np.empty(0, dtype=np.int64)
    if jumps.size:
        i = int(jumps[np.argmax(np.abs(log_ret[jumps]))])
        [when] = format_timestamps(timestamp[[i + 1]])
        out.append(
            f"{jumps.size} one-bar close-to-close move(s) with |log return| > {JUMP_LOG_RETURN} (largest "
            f"{log_ret[i]:+.3f}, ×{np.exp(log_ret[i]):.3g}, at {when}): an unadjusted split or a bad price? The "
            "features take the bars as split-adjusted (docs/data.md)"
        )
    steps = np.diff(timestamp.astype("datetime64[ns]").astype(np.int64))
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_SPACINGS * median)
    if gaps.size:
        i = int(gaps[np.argmax(steps[gaps])])
        [when] = format_timestamps(timestamp[[i + 1]])
        out.append(
            f"{gaps.size} spacing(s) over {GAP_SPACINGS:g} × the median (largest {steps[i] / median:.3g} × "
            f"{spacing(np.timedelta64(int(median), 'ns'))}, before {when}): a gap in the data? The features "
            "count bars, not time (docs/data.md)"
        )
    return out


def spacing(step: np.timedelta64) -> np.timedelta64:
    """A bar spacing in the coarsest of seconds, milliseconds, microseconds and nanoseconds that
    holds it exactly: ``86400 seconds`` for daily bars, ``250 milliseconds`` (not ``0 seconds``)
    for 4 bars a second."""
    import numpy as np

    ns = step.astype("timedelta64[ns]")
    for unit in ("s", "ms", "us"):
        if ns % np.timedelta64(1, unit) == np.timedelta64(0, "ns"):
            return ns.astype(f"timedelta64[{unit}]")
    return ns


def _export(args: argparse.Namespace) -> int:
    from ensemble_trader.marketdata import load_bars, write_bars_csv

    series = load_bars(args.spec)
    write_bars_csv(args.out, series, symbol_column=True)
    rows = sum(len(s) for s in series)
    print(f"exported {rows:,} rows ({', '.join(s.symbol for s in series)}) to {args.out}")
    return 0


def _scenarios(args: argparse.Namespace) -> int:
    from ensemble_trader.domain.synthetic import REGIME_NAMES, SCENARIOS

    for name, spec in SCENARIOS.items():
        shares = " ".join(f"{r}={p:.0%}" for r, p in zip(REGIME_NAMES, spec.stationary(), strict=True))
        dwell = "/".join(f"{d:g}" for d in spec.expected_dwell())
        print(f"{name:<15} {spec.description}\n{'':<15} long-run shares {shares}; dwell {dwell} bars")
    return 0


REGIME_COLOURS = {"BULL": "tab:green", "BEAR": "tab:red", "SIDEWAYS": "tab:gray", "VOLATILE": "tab:orange"}


def plot_synthetic(data: SyntheticData, path: Path) -> None:
    """Close price (log scale) with the background shaded by the hidden regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    s = data.series
    x = s.timestamp.astype("datetime64[s]").astype("O")
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.plot(x, s.close, color="black", linewidth=0.7)
    ax.set_yscale("log")
    change = np.flatnonzero(data.regimes[1:] != data.regimes[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(s) - 1]])
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        ax.axvspan(x[a], x[b], color=REGIME_COLOURS[str(data.regimes[a])], alpha=0.18, linewidth=0)
    ax.legend(
        handles=[Patch(color=c, alpha=0.4, label=r) for r, c in REGIME_COLOURS.items()],
        loc="upper left",
        ncol=4,
        fontsize=8,
    )
    ax.set_title(f"synthetic '{data.scenario}' seed {data.seed}: {len(s)} bars of {s.symbol}")
    ax.set_ylabel("close (log scale)")
    fig.tight_layout()
    from ensemble_trader.marketdata import save_figure

    save_figure(fig, path, dpi=110)
    plt.close(fig)
