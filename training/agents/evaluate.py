"""Out-of-sample evaluation suite of a model set: specialty checks, Markdown tables, plots.

Each agent must beat the baselines in its specialty, out of sample, and not by doing nothing:

* Conservative — smaller max drawdown than buy-and-hold in BEAR and in VOLATILE, with a
  positive total return overall;
* Aggressive — higher total return than buy-and-hold in BULL;
* Balanced — higher Sharpe ratio than buy-and-hold overall;
* Contrarian — positive total return in SIDEWAYS.

``python -m training.agents.evaluate --models DIR [--img-dir docs/img]`` runs the suite on data
no agent trained or was selected on — synthetic paths with seeds the job never used (true
regimes) and, for every series the job trained on, its test window as recorded in the manifest
(regimes detected causally by the committed regime model) — and prints the results as Markdown
(the tables of docs/agents.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ensemble_trader.backtest.engine import CostModel, evaluate_agents, load_series, prepare, run_pool
from ensemble_trader.domain.agents import AgentPool
from ensemble_trader.domain.errors import DataError

SUITE: tuple[tuple[str, str], ...] = (
    # (data spec, what it is); a spec the job trained on is evaluated on its test window only
    ("synth:realistic:2024:3000", "synthetic 'realistic', unseen seed, true regimes"),
    ("synth:mean_reverting:2025:3000", "synthetic 'mean_reverting', unseen seed, true regimes"),
    ("arch:sp500", "S&P 500 test window, detected regimes"),
    ("arch:nasdaq", "NASDAQ test window, detected regimes"),
    ("shared:btcusd_1h", "BTC-USD hourly test window, detected regimes"),
)


def specialty_checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pass/fail of each agent's specialty on one report (``None`` when a regime is absent)."""
    agents, hold = report["agents"], report["baselines"]["buy_and_hold"]

    def regime(block: dict[str, Any], name: str) -> dict[str, float] | None:
        return block["by_regime"].get(name)

    out: dict[str, dict[str, Any]] = {}
    if "conservative" in agents:
        a = agents["conservative"]
        parts = []
        for name in ("BEAR", "VOLATILE"):
            mine, base = regime(a, name), regime(hold, name)
            parts.append(None if mine is None or base is None else mine["max_drawdown"] < base["max_drawdown"])
        positive = a["overall"]["total_return"] > 0
        ok = None if None in parts else (all(parts) and positive)
        out["conservative"] = {"passed": ok, "detail": (
            f"maxDD BEAR {_pct(regime(a, 'BEAR'), 'max_drawdown')} vs {_pct(regime(hold, 'BEAR'), 'max_drawdown')}, "
            f"VOLATILE {_pct(regime(a, 'VOLATILE'), 'max_drawdown')} vs {_pct(regime(hold, 'VOLATILE'), 'max_drawdown')}; "
            f"total return {_pct(a['overall'], 'total_return')}")}
    if "aggressive" in agents:
        mine, base = regime(agents["aggressive"], "BULL"), regime(hold, "BULL")
        ok = None if mine is None or base is None else mine["total_return"] > base["total_return"]
        out["aggressive"] = {"passed": ok, "detail": (
            f"BULL total return {_pct(mine, 'total_return')} vs {_pct(base, 'total_return')}")}
    if "balanced" in agents:
        mine, base = agents["balanced"]["overall"]["sharpe"], hold["overall"]["sharpe"]
        out["balanced"] = {"passed": mine > base, "detail": f"Sharpe {mine:.2f} vs {base:.2f}"}
    if "contrarian" in agents:
        mine = regime(agents["contrarian"], "SIDEWAYS")
        base = regime(hold, "SIDEWAYS")
        ok = None if mine is None else mine["total_return"] > 0
        out["contrarian"] = {"passed": ok, "detail": (
            f"SIDEWAYS total return {_pct(mine, 'total_return')} (buy-and-hold {_pct(base, 'total_return')})")}
    return out


def _pct(block: dict[str, float] | None, key: str) -> str:
    return "n/a" if block is None else f"{100 * block[key]:.1f}%"


def run_suite(models_dir: Path | None, img_dir: Path | None, costs: CostModel) -> str:
    """Evaluate every data set of :data:`SUITE`; return the Markdown results."""
    from ensemble_trader.cli.evaluate import detected_regimes, format_report, plot_equity

    pool = AgentPool.load(models_dir)
    lines = [f"Model set `{pool.version}`, costs {costs.cost_bps:g} + {costs.slippage_bps:g} bps.\n"]
    summary = ["| data | " + " | ".join(pool.names) + " |", "|---" * (len(pool.names) + 1) + "|"]
    details: list[str] = []
    windows = pool.manifest.training.get("windows", {})
    for spec, title in SUITE:
        try:
            series, regimes = load_series(spec)
        except DataError as exc:  # the shared data folder exists only on the development machine
            summary.append(f"| {title} | " + " | ".join("not run" for _ in pool.names) + " |")
            details.append(f"\n#### {title}\n\nnot run: {exc}\n")
            continue
        source = "true"
        if regimes is None:
            regimes = detected_regimes(series, None)
            source = "detected" if regimes is not None else "none"
        test_window = windows.get(spec, {}).get("test")
        if spec in windows and test_window is None:
            continue  # trained on it whole: nothing out of sample
        prepared = prepare(series, regimes, start=test_window[0] if test_window else None)
        paths = run_pool(pool, prepared.features)
        report = evaluate_agents(prepared, {n: paths[:, i] for i, n in enumerate(pool.names)}, costs)
        checks = specialty_checks(report)
        marks = {None: "n/a", True: "pass", False: "**miss**"}
        summary.append(f"| {title} | " + " | ".join(
            f"{marks[checks[n]['passed']]}: {checks[n]['detail']}" for n in pool.names) + " |")
        ts = prepared.timestamp
        details.append(f"\n#### {title}\n\n`{spec}`, {str(ts[0])[:10]} .. {str(ts[-1])[:10]}, "
                       f"{len(ts)} bars, regimes: {source}\n")
        details.append(format_report(report, markdown=True))
        if img_dir is not None:
            name = spec.replace(":", "_").replace("/", "_")
            plot_equity(prepared, paths, pool.names, costs, img_dir / f"agents_{name}.png")
            details.append(f"\n![{title}](img/agents_{name}.png)\n")
    return "\n".join(lines + ["### Specialty checks (out of sample)\n"] + summary + ["\n### Tables"] + details) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="model set (default: the committed one)")
    parser.add_argument("--img-dir", type=Path, default=None, help="write equity-curve PNGs here")
    parser.add_argument("--cost-bps", type=float, default=1.0)
    parser.add_argument("--slippage-bps", type=float, default=2.0)
    args = parser.parse_args(argv)
    print(run_suite(args.models, args.img_dir, CostModel(args.cost_bps, args.slippage_bps)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
