"""``ensemble-trader backtest``: the whole decision pipeline in process, with an HTML report.

features → regime → agents → meta-agent over a bars file or data spec, with the same step code
the Lambdas run; prints the metrics of the ensemble, each single agent and buy-and-hold (and the
meta-agent's regret), optionally writes ``report.html`` with plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

POLICY_CHOICES = ("ucb", "ducb", "swucb", "glrucb", "thompson", "dts", "glrts", "betats", "exp3", "hedge")


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import (
        WindowBound,
        basis_points,
        existing_folder,
        iso_time,
        output_folder,
        plain_help,
        seed,
    )
    from ensemble_trader.cli.evaluate import BARS_PER_YEAR_HELP, bars_per_year

    p = sub.add_parser(
        "backtest",
        help="run features → regime → agents → meta-agent in process and report",
        description=plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bars", required=True,
                   help="bars CSV or data spec (arch:sp500, synth:<scenario>[:<seed>[:<bars>[:<symbol>]]], shared:<name>)")
    p.add_argument("--models", type=existing_folder, default=None, help="agent model set folder (default: the committed set)")
    p.add_argument("--regime-model", type=existing_folder, default=None,
                   help="regime model folder (default: the committed model)")
    p.add_argument("--policy", choices=POLICY_CHOICES, default=None, help="bandit policy (default hedge)")
    p.add_argument("--context", choices=("regime", "probability", "global"), default=None,
                   help="one learner per regime (default), regime-probability mixture, or one global learner")
    p.add_argument("--mode", choices=("select", "blend"), default=None,
                   help="hold the chosen agent's target, or blend the targets by weight (default)")
    p.add_argument("--feedback", choices=("full", "bandit"), default=None,
                   help="learn from every agent's counterfactual reward (default), or only the played one's")
    p.add_argument("--risk-adjustment", choices=("agent_vol", "vol", "none"), default=None,
                   help="reward per unit of each agent's own risk (default), of market risk, or raw "
                        "(raw returns are ~100x smaller than the default learners' scale: they barely learn)")
    p.add_argument("--blend-by", choices=("risk", "position"), default=None,
                   help="blend risk-normalised targets (default) or raw targets")
    p.add_argument("--vol-target", choices=("market", "ensemble", "none"), default=None,
                   help="volatility overlay on the blended position: market vol (default), the ensemble's, or off")
    p.add_argument("--shrinkage", type=_unit_interval, default=None,
                   help="shrink blending weights toward equal weights (0 = none, default; 1 = equal weights)")
    p.add_argument("--meta-config", type=_meta_options, default=None,
                   help="JSON object of further MetaAgentConfig options (as ET_META_CONFIG), e.g. "
                        "'{\"regime_prior_rounds\": 300}'; the flags above win (costs, seed and strategy "
                        "come from --cost-bps/--slippage-bps, --seed and ET_STRATEGY_ID)")
    p.add_argument("--start", type=iso_time, action=WindowBound, default=None,
                   help="first evaluated bar (ISO date); earlier bars only warm up (walk-forward)")
    p.add_argument("--end", type=iso_time, action=WindowBound, default=None, help="evaluate bars before this ISO date only")
    p.add_argument("--cost-bps", type=basis_points, default=1.0, help="commission in basis points (default 1)")
    p.add_argument("--slippage-bps", type=basis_points, default=2.0, help="slippage in basis points (default 2)")
    p.add_argument("--bars-per-year", type=bars_per_year, default=None, help=BARS_PER_YEAR_HELP)
    p.add_argument("--seed", type=seed, default=0, help="random_state of the learners")
    p.add_argument("--compare", action="store_true",
                   help="also evaluate every policy on the same run (adds a 'policies' table; "
                        "policy_params of --meta-config apply to the chosen policy only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=output_folder, default=None, help="folder for report.html and report.json")
    p.set_defaults(func=lambda args: _run(args, p))


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of MetaAgentConfig options, got {text!r}")
    return value


_SET_ELSEWHERE = {"cost_bps": "--cost-bps and --slippage-bps", "random_state": "--seed",
                  "strategy_id": "the ET_STRATEGY_ID setting"}
_NOT_CHOSEN = frozenset(_SET_ELSEWHERE) - {"cost_bps"}
"""The options the backtest sets that are no part of the configuration ``training.meta.select``
chose: the learners' seed and the strategy's name. ``cost_bps`` is part of it: the learners'
rewards are net of it, and the default was chosen at 3 basis points (the default ``--cost-bps``
1 plus ``--slippage-bps`` 2), so a run at other costs rewards its learners otherwise."""


def _meta_options(text: str) -> dict:
    """``--meta-config``: a JSON object, without the options the backtest sets itself."""
    value = _json_object(text)
    clash = sorted(set(value) & set(_SET_ELSEWHERE))
    if clash:
        raise argparse.ArgumentTypeError(
            "; ".join(f"{key} is set by {_SET_ELSEWHERE[key]}, not here" for key in clash)
        )
    return value


def compared_configs(config: MetaAgentConfig) -> list[MetaAgentConfig]:
    """``--compare``'s configurations: ``config`` under every policy, each built (and checked) by
    ``MetaAgentConfig.create``; ``policy_params`` belong to ``config``'s policy only, the others
    run with their defaults (Hedge's ``eta`` means nothing to UCB)."""
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

    options = config.model_dump()
    return [
        config if policy == config.policy
        else MetaAgentConfig.create(**options | {"policy": policy, "policy_params": None})
        for policy in POLICY_CHOICES
    ]


def default_differences(config: MetaAgentConfig) -> list[str]:
    """The options in which ``config`` differs from the default configuration (the one
    ``training.meta.select`` chose), sorted; the seed and the strategy's name left aside
    (:data:`_NOT_CHOSEN`), the meta-agent's ``cost_bps`` counted."""
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

    mine = config.model_dump(exclude=_NOT_CHOSEN)
    chosen = MetaAgentConfig.create().model_dump(exclude=_NOT_CHOSEN)
    return sorted(key for key in chosen if mine[key] != chosen[key])


def is_default(config: MetaAgentConfig) -> bool:
    """Whether ``config`` is the default configuration (:func:`default_differences` finds none)."""
    return not default_differences(config)


def _print_policies(policies: dict) -> None:
    """The ``--compare`` table: each policy's ensemble on the same run."""
    title = "policies on the same run"
    width = max([len(title) - 2, *(len(label) for label in policies)])  # the labels, indented by two
    print(f"{title:{width + 2}}{'sharpe':>8}{'max_dd':>8}{'return':>9}{'regret':>9}{'margin':>8}")
    for label, entry in policies.items():
        m, t = entry["ensemble"], entry["target"]
        print(f"  {label:{width}}{m['sharpe']:8.2f}{m['max_drawdown']:8.1%}{m['total_return']:9.1%}"
              f"{entry['regret']:9.2f}{t['ensemble_sharpe'] - t['sharpe_goal']:+8.2f}")


def _print_table(result: dict) -> None:
    """The metrics, regret, target and breaker crossings of one backtest; a figure that cannot be given (NaN: the
    margin's standard error over fewer than three periods, the Sortino ratio of a strategy that never lost) is "n/a"."""
    from ensemble_trader.backtest.report import figure

    rows = [("ensemble", result["ensemble"]["overall"])]
    rows += [(n, m["overall"]) for n, m in result["agents"].items()]
    rows.append(("buy_and_hold", result["buy_and_hold"]["overall"]))
    info = result["run"]
    print(f"{info['symbol']}  {info['start'][:10]} → {info['end'][:10]}  ({info['periods']} periods, "
          f"{info['periods_per_year']:g} bars/year {info['periods_per_year_source']}, policy {info['policy']}, "
          f"{info['switches']} switches, mean vol-target scale {info['vol_scale_mean']:.2f})")
    print(f"{'':14}{'sharpe':>8}{'sortino':>9}{'max_dd':>8}{'return':>9}{'win':>7}{'turnover':>10}")
    for name, m in rows:
        print(f"{name:14}{m['sharpe']:8.2f}{figure(m['sortino'], '.2f'):>9}{m['max_drawdown']:8.1%}"
              f"{m['total_return']:9.1%}{m['win_rate']:7.1%}{m['turnover']:10.1f}")
    t, reg = result["target"], result["regret"]
    print(f"regret vs best agent: {reg['overall']:.2f} (by regime: "
          + ", ".join(f"{r} {v['regret']:.2f}" for r, v in reg["by_regime"].items()) + ")")
    print(f"target: Sharpe {t['ensemble_sharpe']:.2f} vs goal {t['sharpe_goal']:.2f} "
          f"({'met' if t['sharpe_met'] else 'NOT met'}, margin {t['ensemble_sharpe'] - t['sharpe_goal']:+.2f} "
          f"± {figure(t['margin_se'], '.2f')} s.e.); max drawdown {t['ensemble_max_drawdown']:.1%} vs "
          f"{t['best_agent']} {t['best_max_drawdown']:.1%} ({'met' if t['drawdown_met'] else 'NOT met'})")
    print(breaker_line(result["risk"]))


def breaker_line(risk: dict) -> str:
    """Where the orders stage's circuit breaker would have acted on the ensemble (not applied here)."""
    limits = risk["limits"]

    def at(key: str) -> str:
        return risk[key][:10] if risk[key] else "never"

    return (f"breaker (orders stage, not applied in the backtest): drawdown >= {limits['drawdown_reduce']:.0%} "
            f"{at('drawdown_reduce_at')}, >= {limits['drawdown_halt']:.0%} {at('drawdown_halt_at')}; daily loss >= "
            f"{limits['daily_loss_reduce']:.0%} on {risk['daily_loss_reduce_days']} of {risk['days']} days"
            f" (first {at('first_daily_loss_reduce_at')}), >= {limits['daily_loss_halt']:.0%} on "
            f"{risk['daily_loss_halt_days']}")


def _check_costs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error naming --cost-bps and --slippage-bps when their sum, the meta-agent's
    ``cost_bps``, is beyond what its configuration takes (``MetaAgentConfig.create`` would blame
    ``cost_bps``, an option the user never typed)."""
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

    bound = next(m.le for m in MetaAgentConfig.model_fields["cost_bps"].metadata if hasattr(m, "le"))
    total = args.cost_bps + args.slippage_bps
    if total > bound:
        parser.error(f"--cost-bps {args.cost_bps:g} plus --slippage-bps {args.slippage_bps:g} is {total:g} basis "
                     f"points per unit traded; the meta-agent takes at most {bound:g} (the whole amount traded)")


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    from ensemble_trader.backtest.engine import CostModel, evaluated_bars
    from ensemble_trader.backtest.ensemble import (
        as_json,
        check_price_moves,
        compare_policies,
        evaluate,
        run_meta,
        run_pipeline,
        until,
    )
    from ensemble_trader.backtest.provenance import (
        assess,
        choice_note,
        describe,
        describe_warm_up,
        fitted_windows,
        warm_up_span,
    )
    from ensemble_trader.backtest.report import json_text, write_report
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.domain.meta_agent import MetaAgentConfig
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.marketdata import load_bars
    from ensemble_trader.runtime.settings import Settings

    if parser is not None:
        _check_costs(parser, args)
    settings = Settings()
    costs = CostModel(cost_bps=args.cost_bps, slippage_bps=args.slippage_bps)
    pool = AgentPool.load(args.models)
    regime_model = RegimeModel.load(args.regime_model or settings.models_dir / "regime")
    regime = RegimeStep(regime_model)
    chosen = {
        "policy": args.policy, "context": args.context, "mode": args.mode, "feedback": args.feedback,
        "risk_adjustment": args.risk_adjustment, "blend_by": args.blend_by,
        "vol_target": args.vol_target, "shrinkage": args.shrinkage,
    }
    config = MetaAgentConfig.create(
        **(args.meta_config or {}) | {k: v for k, v in chosen.items() if v is not None},
        cost_bps=costs.cost_bps + costs.slippage_bps, random_state=args.seed,
        strategy_id=settings.strategy_id,
    )
    differs = default_differences(config)
    default = not differs
    progress = not args.json and sys.stderr.isatty()
    results = {}
    series_list = load_bars(args.bars)
    windows = fitted_windows(agents_version=pool.version, agent_names=pool.names, agents_training=pool.manifest.training,
                             regime_version=regime_model.version, regime_info=regime_model.info)
    folders: dict[str, str] = {}
    if args.out is not None and len(series_list) > 1:  # one sub-folder per symbol, inside --out
        from ensemble_trader.cli import symbol_file_stem
        from ensemble_trader.domain.errors import DataError

        for series in series_list:
            stem = symbol_file_stem(series.symbol)
            if stem in folders.values():
                other = next(s for s, f in folders.items() if f == stem)
                raise DataError(f"{other} and {series.symbol} would both be reported in {args.out / stem}: "
                                "backtest them from separate files")
            folders[series.symbol] = stem
    for series in series_list:  # every window and every bar before any run: nothing is half done
        evaluated_bars(series, args.start, args.end)  # an empty window fails in seconds, not minutes
        check_price_moves(series)  # a bad print the meta-agent would refuse mid-run
    for series in series_list:
        pipeline = run_pipeline(series, pool, regime, progress=progress, bars_per_year=args.bars_per_year)
        whole = run_meta(pipeline, config, progress=progress)
        result = evaluate(whole, costs, args.start, args.end)  # its window errors name the whole series' span
        if note := result["run"].get("periods_per_year_note"):
            print(f"warning: {series.symbol}: {result['run']['periods_per_year']:g} bars/year: {note}", file=sys.stderr)
        run = until(whole, args.end)
        timestamps = run.pipeline.timestamp
        # the fitted windows of the agents and the regime model it meets (domain.fitted's rule, as select's),
        # and those the learners' warm-up meets: the ready bars before the window (none without --start)
        i0 = result["run"]["start_index"]
        provenance = assess(args.bars, timestamps[i0], timestamps[-1], windows,
                            warm_up=warm_up_span(timestamps, run.pipeline.ready, i0))
        result["in_sample"], result["in_sample_notes"] = provenance.in_sample, provenance.notes
        result["warm_up_in_sample"] = provenance.warm_up
        result["configuration_choice"] = {"default": default, "differs": differs, "sets": provenance.choice}
        for note in provenance.notes:
            print(f"warning: {series.symbol}: {note}", file=sys.stderr)
        if args.compare:
            result["policies"] = compare_policies(pipeline, compared_configs(config), costs, args.start, args.end)
        results[series.symbol] = result
        if args.out is not None:
            folder = args.out / folders[series.symbol] if len(series_list) > 1 else args.out
            path = write_report(run, result, folder, costs)
            if not args.json:
                print(f"report: {path}", file=sys.stderr)
        if not args.json:
            _print_table(result)
            if result["in_sample"]:
                print("IN SAMPLE for " + "; ".join(describe(e) for e in result["in_sample"]))
            if provenance.warm_up:
                print("WARM-UP IN SAMPLE: " + describe_warm_up(provenance.warm_up, bool(result["in_sample"])))
            if provenance.choice:
                print("CONFIGURATION CHOSEN HERE: " + choice_note(provenance.choice, default, differs))
            if args.compare:
                _print_policies(result["policies"])
    if args.json:
        shaped = {symbol: as_json(result) for symbol, result in results.items()}
        single = next(iter(shaped.values())) if len(shaped) == 1 else shaped
        print(json_text(single, indent=2, sort_keys=True))  # a figure that cannot be given (NaN) as null
    return 0

