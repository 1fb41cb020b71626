"""How far could any weighting of the agents go? Hindsight references for the meta-agent's target.

    python -m training.meta.bounds [--split validation|confirm|test|spread] [--step 0.05] [--json] [--img-dir DIR]

The issue's target asks the ensemble for a Sharpe ratio 20 % above the best single agent's. An
ensemble holds mixes of the agents' target positions, scaled by its overlay and smoothed, so
this asks what mixes — and, per regime, how much of them — can do at all, with the future known:

* **static** — the best fixed long-only mix ``w`` (``w >= 0``, ``sum w = 1``, on a grid of step
  ``--step``) of the agents' positions over the whole window, chosen with hindsight by its net
  Sharpe ratio (costs on the mixed position's own trades, exactly as the backtest charges them).
  A fixed mix is what any weighting converges to when the agents' records do not change: if the
  best one in hindsight is barely above the best agent, weighting alone cannot reach the target.
* **per regime** — a mix ``w_g`` and an exposure ``k_g`` for each regime ``g`` the detector
  reports at the decision bar (causal labels; the mixes and exposures are hindsight): ``w_g`` is
  the grid mix with the best net Sharpe over that regime's periods and ``k_g ∝ max(μ_g, 0) / σ_g²``
  (the mix's mean and variance there) the exposure that (approximately, for small per-bar
  μ²/σ²) maximises the whole window's Sharpe when regimes differ in return per unit of risk. This is what a meta-agent that knew each
  regime's record in advance would hold: a reference for timing, not a bound (a strategy that
  changes its mix within a regime can do better).

Both are evaluated with the backtest's own cost model and Sharpe ratio, beside the chosen
configuration's online ensemble (``MetaAgentConfig()`` through ``run_meta`` and ``evaluate``,
as in ``training.meta.select``) and, on synthetic sets, the same ensemble fed the true regimes
instead of the detected ones (a perfect detector: what better regime labels alone could give). Nothing here is used to choose a configuration; the figures
explain docs/meta-agent.md §6.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

MIN_REGIME_PERIODS = 20
"""A regime seen on fewer periods than this keeps the static mix and that mix's exposure over the
whole window (its own mean and variance would be noise)."""


MAX_GRID_ROWS = 200_000
"""At most this many mixes in a grid: four agents at a step of 0.01 make 176,851 (built in 0.2 s
here); 0.005 would make 1.37 million, 0.001 168 million (tens of GB as Python lists)."""


def grid_size(n_agents: int, step: float) -> int:
    """How many mixes :func:`simplex_grid` would make, C(units + n - 1, n - 1) with
    ``units = 1 / step``; a ``ValueError`` for a step that does not divide 1 or a grid of more than
    :data:`MAX_GRID_ROWS` mixes."""
    if n_agents < 1:
        raise ValueError(f"need at least one agent, got {n_agents}")
    units = round(1.0 / step) if 0.0 < step <= 1.0 else 0
    if units < 1 or abs(units * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 (e.g. 0.05, 0.1, 0.25), got {step!r}")
    size = math.comb(units + n_agents - 1, n_agents - 1)
    if size > MAX_GRID_ROWS:
        raise ValueError(f"step {step!r} makes {size:,} mixes of {n_agents} agents, more than {MAX_GRID_ROWS:,}: "
                         "use a coarser step (0.01 or more for four agents)")
    return size


def simplex_grid(n_agents: int, step: float) -> np.ndarray:
    """Every long-only mix of ``n_agents`` with weights on multiples of ``step`` summing to 1,
    one per row (stars and bars: the cut points between agents); the step is checked by
    :func:`grid_size`."""
    grid_size(n_agents, step)
    units = round(1.0 / step)
    rows = []
    for cuts in combinations(range(units + n_agents - 1), n_agents - 1):
        edges = (-1, *cuts, units + n_agents - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_agents)])
    return np.asarray(rows, dtype=np.float64) / units


def net_returns(positions: np.ndarray, returns: np.ndarray, rate: float, initial: np.ndarray | float) -> np.ndarray:
    """Net returns of each column of ``positions`` (m, k) held over ``returns`` (m,):
    ``p_t r_t - rate |p_t - p_{t-1}|`` with ``p_{-1} = initial``, each column ruined as its own
    account (the first period at -100 % or worse counts -1, every later one 0: ``apply_ruin``),
    as ``strategy_returns``."""
    from ensemble_trader.backtest.metrics import apply_ruin

    previous = np.concatenate((np.broadcast_to(initial, (1, positions.shape[1])), positions[:-1]), axis=0)
    return apply_ruin(positions * returns[:, None] - rate * np.abs(positions - previous))


def ruined(net: np.ndarray) -> np.ndarray:
    """Which columns of :func:`net_returns` lost the whole account (a period at -100 %)."""
    return np.any(net <= -1.0, axis=0)


def _best(scores: np.ndarray, gone: np.ndarray) -> int:
    """The column with the best score, a ruined one only when every column is: a ruined account's
    Sharpe is pulled toward 0 by the flat periods after it (``ensemble.best_agent``'s ranking)."""
    return int(np.argmax(np.where(gone, -np.inf, scores))) if not np.all(gone) else int(np.argmax(scores))


def sharpe(net: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Annualised Sharpe ratio of each column (the backtest's formula: mean / sample std)."""
    std = net.std(axis=0, ddof=1)
    mean = net.mean(axis=0)
    safe = np.where(std > 1e-15, std, 1.0)
    return np.where(std > 1e-15, mean / safe * np.sqrt(periods_per_year), 0.0)


CHUNK = 1_024
"""Mixes scored at a time: memory stays at (periods × CHUNK) floats whatever the grid step."""


def _best_columns(
    held: np.ndarray,
    returns: np.ndarray,
    rate: float,
    initial: np.ndarray,
    ppy: float,
    grid: np.ndarray,
    groups: dict[str, np.ndarray] | None = None,
) -> tuple[int, float, dict[str, int]]:
    """The grid row with the best net Sharpe over all periods (and its Sharpe), and the best
    one over each group's periods (boolean masks), scoring :data:`CHUNK` mixes at a time. A mix
    ruined in the window ranks below every mix that is not (:func:`_best`)."""
    groups = groups or {}
    best, best_key = 0, (False, -np.inf)
    group_best = {g: (0, (False, -np.inf)) for g in groups}
    for lo in range(0, len(grid), CHUNK):
        rows = grid[lo:lo + CHUNK]
        nets = net_returns(held @ rows.T, returns, rate, initial @ rows.T)
        gone = ruined(nets)
        scores = sharpe(nets, ppy)
        k = _best(scores, gone)
        if (not gone[k], float(scores[k])) > best_key:
            best, best_key = lo + k, (not gone[k], float(scores[k]))
        for g, mask in groups.items():
            part = sharpe(nets[mask], ppy)
            k = _best(part, gone)
            if (not gone[k], float(part[k])) > group_best[g][1]:
                group_best[g] = (lo + k, (not gone[k], float(part[k])))
    return best, best_key[1], {g: c for g, (c, _) in group_best.items()}


def static_mix(
    held: np.ndarray, returns: np.ndarray, rate: float, initial: np.ndarray, ppy: float, grid: np.ndarray
) -> tuple[float, np.ndarray]:
    """(net Sharpe, weights) of the best fixed mix of the agents' held positions (m, A)."""
    best, score, _ = _best_columns(held, returns, rate, initial, ppy, grid)
    return score, grid[best]


def regime_mix(
    held: np.ndarray,
    returns: np.ndarray,
    labels: np.ndarray,
    rate: float,
    initial: np.ndarray,
    ppy: float,
    grid: np.ndarray,
) -> tuple[float, dict[str, dict[str, Any]], np.ndarray]:
    """(net Sharpe, per-regime mix and exposure, position path) of the per-regime reference.

    ``labels`` (m,) is the regime reported at each decision bar. The path starts flat (unlike
    the agents and the static mix, which start from the position held before the window: one
    entry trade, at most ``rate``) and its Sharpe is computed on the positions actually held,
    so switching between regimes' mixes pays its trades."""
    masks = {g: labels == g for g in sorted(set(labels.tolist()))}
    frequent = {g: m for g, m in masks.items() if m.sum() >= MIN_REGIME_PERIODS}
    static, _, columns = _best_columns(held, returns, rate, initial, ppy, grid, frequent)
    choice: dict[str, dict[str, Any]] = {}
    for regime, rows in masks.items():
        column = columns.get(regime, static)
        x = net_returns(held @ grid[column][:, None], returns, rate, initial @ grid[column])[:, 0]
        if regime in frequent:
            x = x[rows]  # else a rare regime: the static mix at its whole-window exposure
        variance = float(x.var(ddof=1))
        kelly = max(float(x.mean()), 0.0) / variance if variance > 1e-18 else 0.0
        choice[regime] = {"weights": grid[column], "kelly": kelly, "periods": int(rows.sum())}
    top = max((c["kelly"] for c in choice.values()), default=0.0)
    path = np.zeros(held.shape[0])
    for regime, c in choice.items():
        c["exposure"] = c["kelly"] / top if top > 0 else 0.0
        rows = masks[regime]
        path[rows] = c["exposure"] * (held[rows] @ c["weights"])
    score = sharpe(net_returns(path[:, None], returns, rate, 0.0), ppy)[0]
    return float(score), choice, path


def window_bounds(pipeline: Any, costs: Any, start: str | None, grid: np.ndarray) -> dict[str, Any]:
    """Both references over the evaluated window of a :class:`PipelineRun` (from ``start``; the
    series already ends where the window does), beside every agent's own net Sharpe. As in
    ``evaluate``: the same bars per year (``bars_per_year_of`` the run), ruin, and best agent (by
    Sharpe, an agent ruined in the window ranked below every other)."""
    from ensemble_trader.backtest.engine import asset_returns
    from ensemble_trader.backtest.ensemble import bars_per_year_of, first_index, sharpe_goal

    i0 = first_index(pipeline, start)
    returns = asset_returns(pipeline.close[i0:])
    ppy = bars_per_year_of(pipeline).value
    held = pipeline.agent_targets[i0:-1]
    initial = pipeline.agent_targets[i0 - 1] if i0 > 0 else np.zeros(held.shape[1])
    nets = net_returns(held, returns, costs.rate, initial)
    agents = sharpe(nets, ppy)
    static, weights = static_mix(held, returns, costs.rate, initial, ppy, grid)
    labels = pipeline.regimes[i0:-1]
    per_regime, choice, _ = regime_mix(held, returns, labels, costs.rate, initial, ppy, grid)
    names = pipeline.agent_names
    best = _best(agents, ruined(nets))
    goal = sharpe_goal(float(agents[best]))
    return {
        "agents": {n: float(s) for n, s in zip(names, agents, strict=True)},
        "best_agent": names[best],
        "best_sharpe": float(agents[best]),
        "sharpe_goal": goal,
        "static": {"sharpe": static, "weights": dict(zip(names, weights.tolist(), strict=True))},
        "per_regime": {
            "sharpe": per_regime,
            "regimes": {
                g: {"weights": dict(zip(names, c["weights"].tolist(), strict=True)),
                    "exposure": c["exposure"], "periods": c["periods"]}
                for g, c in choice.items()
            },
        },
    }


def with_true_regimes(pipeline: Any, truth: np.ndarray) -> Any:
    """The pipeline with every bar's regime estimate replaced by the true regime (confidence 1),
    as if the detector were perfect; the agents' targets are unchanged (they never see regimes)."""
    from dataclasses import replace

    from ensemble_trader.domain.models import REGIMES, Regime

    if len(truth) != len(pipeline.market_states):
        raise ValueError(f"{len(truth)} true regimes for {len(pipeline.market_states)} bars")
    states, run_length, previous = [], 0, None
    for state, label in zip(pipeline.market_states, truth, strict=True):
        run_length = run_length + 1 if label == previous else 0
        previous = label
        probabilities = tuple(1.0 if r.value == label else 0.0 for r in REGIMES)
        estimate = state.regime.model_copy(update={
            "regime": Regime(label), "confidence": 1.0, "probabilities": probabilities, "bars_in_regime": run_length,
        })
        states.append(state.model_copy(update={"regime": estimate}))
    return replace(pipeline, market_states=tuple(states))


def run(sets: Sequence[Any], step: float, progress: bool = True) -> tuple[dict[str, dict[str, Any]], str]:
    """Per evaluation set: the references and the chosen configuration's ensemble Sharpe — on a
    synthetic set also with the true regimes in place of the detected ones."""
    from ensemble_trader.backtest.engine import CostModel, load_series
    from ensemble_trader.backtest.ensemble import evaluate, run_meta, run_pipeline
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.domain.meta_agent import MetaAgentConfig
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.runtime.settings import Settings

    costs = CostModel()
    pool = AgentPool.load(None)
    regime = RegimeStep(RegimeModel.load(Settings().models_dir / "regime"))
    config = MetaAgentConfig.create(cost_bps=costs.cost_bps + costs.slippage_bps)
    grid = simplex_grid(len(pool.names), step)
    out: dict[str, dict[str, Any]] = {}
    for s in tqdm(sets, desc="bounds", unit="set", disable=not progress):
        series, truth = load_series(s.spec)
        if s.end is not None:
            series = series.between(None, s.end)
        pipeline = run_pipeline(series, pool, regime)
        entry = window_bounds(pipeline, costs, s.start, grid)
        entry["ensemble_sharpe"] = float(evaluate(run_meta(pipeline, config), costs, s.start)["target"]["ensemble_sharpe"])
        entry["ensemble_true_regimes_sharpe"] = None
        if truth is not None:
            perfect = run_meta(with_true_regimes(pipeline, truth), config)
            entry["ensemble_true_regimes_sharpe"] = float(evaluate(perfect, costs, s.start)["target"]["ensemble_sharpe"])
        out[s.name] = entry
    return out, pool.version


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'set':22}{'best agent':>22}{'goal':>7}{'static mix':>12}{'per regime':>12}{'ensemble':>10}"
             f"{'true reg.':>11}   static weights"]
    for name, r in results.items():
        best = f"{r['best_agent']} {r['best_sharpe']:.2f}"
        weights = " ".join(f"{n[:4]} {w:.2f}" for n, w in r["static"]["weights"].items() if w > 0)
        perfect = r.get("ensemble_true_regimes_sharpe")
        lines.append(
            f"{name:22}{best:>22}{r['sharpe_goal']:7.2f}{r['static']['sharpe']:12.2f}"
            f"{r['per_regime']['sharpe']:12.2f}{r['ensemble_sharpe']:10.2f}"
            f"{'—' if perfect is None else f'{perfect:.2f}':>11}   {weights}"
        )
    gains = [r["static"]["sharpe"] - r["best_sharpe"] for r in results.values()]
    reached = sum(r["per_regime"]["sharpe"] >= r["sharpe_goal"] for r in results.values())
    online = sum(r["ensemble_sharpe"] >= r["sharpe_goal"] for r in results.values())
    synthetic = [r for r in results.values() if r.get("ensemble_true_regimes_sharpe") is not None]
    lines.append(
        f"static mix minus best agent: {min(gains):+.2f} … {max(gains):+.2f} Sharpe; "
        f"static mix reaches the goal on {sum(r['static']['sharpe'] >= r['sharpe_goal'] for r in results.values())} "
        f"of {len(results)}, the per-regime reference on {reached}, the online ensemble on {online}"
        + (f"; with the true regimes on {sum(r['ensemble_true_regimes_sharpe'] >= r['sharpe_goal'] for r in synthetic)} "
           f"of {len(synthetic)} synthetic sets" if synthetic else "")
    )
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    """One row per set: the goal (a bar), and the best agent, the static mix, the per-regime
    reference and the online ensemble (markers) on a common Sharpe axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    y = np.arange(len(names))[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(names) + 1.4))
    ax.barh(y, [results[n]["sharpe_goal"] for n in names], color="#dddddd", label="goal (best agent + 20 %)")
    series = (
        ("best agent", "best_sharpe", "o", "#555555"),
        ("best fixed mix (hindsight)", ("static", "sharpe"), "s", "#1f77b4"),
        ("per-regime reference (hindsight)", ("per_regime", "sharpe"), "D", "#2ca02c"),
        ("online ensemble (chosen configuration)", "ensemble_sharpe", "*", "#d62728"),
        ("the same fed the true regimes (synthetic)", "ensemble_true_regimes_sharpe", "x", "#9467bd"),
    )
    for label, key, marker, colour in series:
        values = [results[n].get(key) if isinstance(key, str) else results[n][key[0]][key[1]] for n in names]
        values = [np.nan if v is None else v for v in values]
        ax.scatter(values, y, marker=marker, color=colour, s=60 if marker == "*" else 30, zorder=3, label=label)
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_xlabel("Sharpe ratio (net of costs)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    from ensemble_trader.marketdata import save_figure

    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Bad arguments (a grid step, an --img-dir that cannot be written) and models that learned
    from an evaluated window (:func:`training.meta.select.check_overlap`; ``--allow-overlap``
    runs anyway, with warnings) are usage errors (exit 2) before any work; errors are one line (exit 1), Ctrl-C exit 130, as ``ensemble-trader``
    (:func:`ensemble_trader.cli.run_main`)."""
    from ensemble_trader.cli import run_main

    return run_main(_build_parser, argv, prog="python -m training.meta.bounds")


def _build_parser() -> argparse.ArgumentParser:
    from ensemble_trader.cli import output_folder, plain_help

    from training.meta.select import SPLITS

    parser = argparse.ArgumentParser(
        prog="python -m training.meta.bounds", description=plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--split", choices=tuple(SPLITS), default="validation")
    parser.add_argument("--step", type=float, default=0.05, help="grid step of the mixes' weights (divides 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--img-dir", type=output_folder, default=None, help="also write the figure meta_bounds_SPLIT.png here")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="run even when the agent set or the regime model learned from an evaluated window or "
                        "synthetic seed (refused otherwise, as in training.meta.select); prints a warning per overlap")
    parser.set_defaults(func=lambda args: _run(parser, args))
    return parser


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ensemble_trader.domain.agents import AGENT_NAMES

    from training.meta.select import SPLITS, check_overlap

    try:
        grid_size(len(AGENT_NAMES), args.step)  # run() builds the grid for the agent set's four agents
    except ValueError as exc:
        parser.error(str(exc))
    # the committed models (or ET_MODELS_DIR's), as run() loads them
    refusal, regime_version = check_overlap(SPLITS[args.split], args.split, None, None, args.allow_overlap)
    if refusal is not None:
        parser.error(refusal)
    results, version = run(SPLITS[args.split], args.step, progress=sys.stderr.isatty() or not args.json)
    if args.json:
        print(json.dumps({"split": args.split, "agent_version": version, "regime_version": regime_version,
                          "sets": results}, indent=2, sort_keys=True))
    else:
        print(f"{args.split} split, agent set {version}, regime model {regime_version}; net Sharpe ratios, "
              "costs as in the backtest")
        print(format_table(results))
    if args.img_dir is not None:
        title = f"{args.split} split, agent set {version}: what mixes of the agents reach"
        plot(results, title, args.img_dir / f"meta_bounds_{args.split}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
