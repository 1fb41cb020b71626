"""``ensemble-trader evaluate agents``: backtest a model set against buy-and-hold and cash, and say
whether the window is out of sample for it (``backtest``'s rule, :func:`fitted_to`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ensemble_trader.backtest.metrics import METRIC_NAMES

REGIME_SOURCES = ("truth", "synthetic truth", "detected", "none")


def bars_per_year(text: str) -> float:
    """An argparse ``type`` for ``--bars-per-year`` (``evaluate agents``, ``backtest``): a finite
    number > 0, else a usage error naming the value."""
    from ensemble_trader.backtest.metrics import checked_periods_per_year
    from ensemble_trader.domain.errors import DataError

    try:
        return checked_periods_per_year(text)
    except DataError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0 (bars per year, e.g. 252 or 8760)") from None


BARS_PER_YEAR_HELP = (
    "annualise at this many bars a year (e.g. 252 daily equities, 8760 hourly crypto, 525600 "
    "crypto minutes) instead of inferring it from the bar times; for a short series whose market "
    "hours the rule cannot tell"
)


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import WindowBound, basis_points, existing_folder, image_path, iso_time

    p = sub.add_parser("evaluate", help="evaluation of trained models (a window they were fitted on is flagged in sample)")
    ev_sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    agents = ev_sub.add_parser(
        "agents",
        help="backtest each agent, buy-and-hold and cash: overall and per regime",
        description=(
            "Runs the ONNX agents bar by bar over the bars (features computed by the same code as "
            "live, warm-up rows skipped), each agent seeing its own position, with costs. Regimes: "
            "--truth, else --regime-model's causal detection when given (also on synth: specs), else "
            "the synthetic generator's labels for synth: specs, else the committed regime model's "
            "causal detection when it exists. A window the agents trained or were selected on (or, with "
            "detected regimes, the regime model was fitted on) is flagged as backtest flags it: a "
            "'warning: SYMBOL: IN SAMPLE for ...' line on stderr and run.in_sample in --json."
        ),
    )
    agents.add_argument("--models", type=existing_folder, default=None, help="model set folder (default: the committed one)")
    agents.add_argument("--bars", required=True,
                        help="bars CSV, arch:sp500, arch:nasdaq, shared:<name> or synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]")
    agents.add_argument("--truth", type=Path, default=None, help="truth CSV (timestamp,regime) for per-regime metrics; it needs a row for every evaluated bar "
                             "but the last (warm-up bars and bars outside [--start, --end) may be left out)")
    agents.add_argument("--start", type=iso_time, action=WindowBound, default=None, help="first bar to evaluate (ISO date), e.g. the test window start; every agent starts it "
                             "flat (`ensemble-trader backtest` carries their warm-up positions in instead)")
    agents.add_argument("--end", type=iso_time, action=WindowBound, default=None, help="evaluate bars before this date")
    agents.add_argument("--cost-bps", type=basis_points, default=1.0, help="commission, basis points of traded notional")
    agents.add_argument("--slippage-bps", type=basis_points, default=2.0, help="slippage, basis points of traded notional")
    agents.add_argument("--regime-model", type=existing_folder, default=None,
                        help="regime model folder for detected regimes (default: the committed one)")
    agents.add_argument("--bars-per-year", type=bars_per_year, default=None, help=BARS_PER_YEAR_HELP)
    agents.add_argument("--plot", type=image_path, default=None, help="write an equity-curve PNG here")
    agents.add_argument("--json", action="store_true", help="print one JSON object")
    agents.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for docs)")
    agents.set_defaults(func=_evaluate_agents)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def regime_model(model_dir: Path | None) -> Any:
    """The regime model regimes are detected with: the one in ``model_dir`` (it must exist), else
    the committed one, or None when there is none."""
    from ensemble_trader.domain.errors import ModelArtifactError
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.runtime.settings import Settings

    folder = model_dir or Settings().models_dir / "regime"
    if not folder.is_dir():
        if model_dir is not None:  # asked for by name: not silently "no regimes"
            raise ModelArtifactError(f"regime model folder {model_dir} does not exist")
        return None
    return RegimeModel.load(folder)


def detected_regimes(series: Any, model_dir: Path | None, *, model: Any = None) -> Any:
    """Causal regime labels of every bar from the regime model (the same per-bar path as the
    features and regime Lambdas): ``model`` when given, else :func:`regime_model` of
    ``model_dir``; None when there is no regime model."""
    import numpy as np

    from ensemble_trader.domain.models import REGIMES
    from ensemble_trader.domain.regime import RegimeDetector, label_series

    model = model if model is not None else regime_model(model_dir)
    if model is None:
        return None
    labels = label_series(RegimeDetector(model), series)
    names = np.array([r.value for r in REGIMES], dtype="<U8")
    return names[labels.regime]


def _evaluate_agents(args: argparse.Namespace) -> int:
    from ensemble_trader.backtest.engine import (
        CostModel,
        align_truth,
        evaluate_agents,
        evaluated_bars,
        load_series,
        prepare,
        run_pool,
        scored_bars,
    )
    from ensemble_trader.backtest.provenance import describe
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.domain.features import compute_features
    from ensemble_trader.marketdata import read_truth_csv

    if args.truth is not None and args.regime_model is not None:
        print("ensemble-trader: error: give --truth or --regime-model, not both: they are two sources of "
              "the regimes", file=sys.stderr)
        return 2
    pool = AgentPool.load(args.models)
    series, regimes = load_series(args.bars)
    features = compute_features(series)
    evaluated = evaluated_bars(series, args.start, args.end, features)  # a window without bars fails first
    source = "synthetic truth" if regimes is not None else "none"
    detector = None  # the regime model that labels the periods, when one does
    if args.truth is not None:
        # labels are needed only where a period is scored: not the warm-up, not outside the window
        regimes = align_truth(series, *read_truth_csv(args.truth), needed=scored_bars(evaluated))
        source = "truth"
    elif args.regime_model is not None or regimes is None:  # named: detected, even on synth: data
        detector = regime_model(args.regime_model)
        regimes = detected_regimes(series, None, model=detector) if detector is not None else None
        source = "detected" if regimes is not None else "none"
    prepared = prepare(series, regimes, start=args.start, end=args.end, features=features,
                       bars_per_year=args.bars_per_year)
    paths = run_pool(pool, prepared.features)
    costs = CostModel(args.cost_bps, args.slippage_bps)
    report = evaluate_agents(prepared, {n: paths[:, i] for i, n in enumerate(pool.names)}, costs)
    ts = prepared.timestamp
    report["run"] = {
        "model_set": pool.version,
        "bars": args.bars,
        "symbol": prepared.symbol,
        "start": str(ts[0]),
        "end": str(ts[-1]),
        "evaluated_bars": int(len(ts)),
        "periods": int(len(ts) - 1),
        "periods_per_year": prepared.periods_per_year,
        "periods_per_year_source": "given" if args.bars_per_year is not None else "inferred",
        "periods_per_year_note": prepared.bars_per_year_note,
        "regimes": source,
        "cost_bps": args.cost_bps,
        "slippage_bps": args.slippage_bps,
    }
    # out of sample? backtest's rule: the agents' fitted windows, and the regime model's when it labelled the periods
    in_sample, notes = fitted_to(args.bars, ts[0], ts[-1], pool, detector)
    report["run"] |= {"in_sample": in_sample, "in_sample_notes": notes}
    if prepared.bars_per_year_note:
        print(f"warning: {prepared.symbol}: {prepared.periods_per_year:g} bars/year: {prepared.bars_per_year_note}",
              file=sys.stderr)
    for note in notes:
        print(f"warning: {prepared.symbol}: {note}", file=sys.stderr)
    if in_sample:
        print(f"warning: {prepared.symbol}: IN SAMPLE for " + "; ".join(describe(e) for e in in_sample)
              + ": the metrics here flatter what these models do on data they never saw", file=sys.stderr)
    if args.plot is not None:
        plot_equity(prepared, paths, pool.names, costs, args.plot)
    if args.json:
        from ensemble_trader.backtest.report import json_text

        print(json_text(report, indent=2))  # a figure that cannot be given (NaN) as null
        return 0
    print(f"model set {pool.version}   bars {args.bars}   {str(ts[0])[:10]} .. {str(ts[-1])[:10]} "
          f"({len(ts)} bars; {prepared.periods_per_year:g} bars/year, {report['run']['periods_per_year_source']})   "
          f"costs {args.cost_bps}+{args.slippage_bps} bps   regimes: {source}")
    if source == "none":
        print("(no per-regime table: give --truth, a synth: spec, or commit a regime model)", file=sys.stderr)
    print(format_report(report, markdown=args.markdown))
    return 0


def fitted_to(spec: str, first: Any, last: Any, pool: Any, regime: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Whether the evaluated window ``[first, last]`` (its first and last bar) of ``spec`` is out of
    sample, by the rule ``backtest`` applies (:func:`ensemble_trader.backtest.provenance.assess`):
    the agent set's training and validation windows, as ``pool``'s manifest records them, and the
    training window of the regime model ``regime`` when its detected regimes label the periods
    (None: true regimes, or none). Returns ``(in_sample, in_sample_notes)``: the fitted windows
    met, one entry each, and what could not be checked."""
    from ensemble_trader.backtest.provenance import assess
    from ensemble_trader.domain import fitted

    windows = fitted.agent_windows(pool.manifest.training, pool.version, pool.names)
    if regime is not None:
        windows += fitted.regime_windows(regime.info, regime.version)
    found = assess(spec, first, last, windows)
    return found.in_sample, found.notes


def format_report(report: dict[str, Any], markdown: bool = False) -> str:
    """The report as aligned text (or Markdown) tables: overall, then one table per regime (a
    ``run`` block, when present, is not a table: the caller prints it as the header). A figure
    that cannot be given (NaN, an ``annual_return`` beyond a float) is "n/a"."""
    from ensemble_trader.backtest.report import figure

    rows: list[tuple[str, dict[str, Any]]] = [(n, r) for n, r in report["agents"].items()]
    rows += [(n, r) for n, r in report["baselines"].items()]
    headers = ("total_ret", "annual_ret", "annual_vol", "sharpe", "sortino", "max_dd", "win_rate", "turnover")
    pct = {"total_return", "annual_return", "annual_vol", "max_drawdown", "win_rate"}

    def table(title: str, pick: Any) -> list[str]:
        if markdown:
            lines = [f"\n**{title}**\n", "| | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
        else:
            lines = [f"\n{title}", f"{'':<14}" + "".join(f"{h:>11}" for h in headers)]
        for name, r in rows:
            m = pick(r)
            if m is None:
                continue
            cells = [figure(100 * m[k], ".1f", "%") if k in pct else figure(m[k], ".2f") for k in METRIC_NAMES]
            if markdown:
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            else:
                lines.append(f"{name:<14}" + "".join(f"{c:>11}" for c in cells))
        return lines

    out = table("overall", lambda r: r["overall"])
    regimes = sorted({k for _, r in rows for k in r["by_regime"]},
                     key=lambda k: ("BULL", "BEAR", "SIDEWAYS", "VOLATILE").index(k))
    for regime in regimes:
        out += table(regime, lambda r, g=regime: r["by_regime"].get(g))
    return "\n".join(out).lstrip("\n")


def regime_spans(bars: Any, labels: Any) -> list[tuple[Any, Any, str]]:
    """(first bar time, last bar time, regime) of each run of periods in one regime; period k runs
    from bar k to bar k + 1 (``labels`` has one entry fewer than ``bars``)."""
    spans = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:  # periods start..i-1 span bars start..i
            spans.append((bars[start], bars[i], str(labels[start])))
            start = i
    return spans


def plot_equity(prepared: Any, paths: Any, names: tuple[str, ...], costs: Any, path: Path) -> None:
    """Equity curves of the agents and buy-and-hold, with the regimes shaded when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ensemble_trader.backtest.engine import asset_returns, period_regimes, strategy_returns
    from ensemble_trader.backtest.report import wealth_curves

    r = asset_returns(prepared.close)
    ts = prepared.timestamp[1:]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    colours = {"BULL": "#d8f0d8", "BEAR": "#f6d5d5", "SIDEWAYS": "#eeeeee", "VOLATILE": "#f7e6c4"}
    if prepared.regimes is not None:
        for first, last, label in regime_spans(prepared.timestamp, period_regimes(prepared.regimes)):
            ax.axvspan(first, last, color=colours.get(label, "white"), lw=0)
    curves = {name: strategy_returns(paths[:-1, i], r, costs) for i, name in enumerate(names)}
    curves["buy and hold"] = strategy_returns(np.ones_like(r), r, costs)
    wealth, in_log10 = wealth_curves(curves)  # the product, or log10 wealth when it is beyond a float
    for name, curve in wealth.items():
        style = {"color": "black", "lw": 1} if name == "buy and hold" else {"lw": 1.2}
        ax.plot(ts, curve[1:], label=name, **style)
    if in_log10:
        ax.set_ylabel("log10 wealth (wealth beyond a float)")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("wealth (log scale)")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.set_title(f"{prepared.symbol}: agents vs buy-and-hold" + (" (shading: regime)" if prepared.regimes is not None else ""))
    fig.tight_layout()
    from ensemble_trader.marketdata import save_figure

    save_figure(fig, path)
    plt.close(fig)
