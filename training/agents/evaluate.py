"""Out-of-sample evaluation suite of a model set: specialty checks, Markdown tables, plots.

Each agent must beat the baselines in its specialty, out of sample, and not by doing nothing:

* Conservative — smaller max drawdown than buy-and-hold in BEAR and in VOLATILE, with a
  positive total return overall;
* Aggressive — higher total return than buy-and-hold in BULL, and positive;
* Balanced — higher Sharpe ratio than buy-and-hold overall, and positive;

(cash is a baseline too: where buy-and-hold lost, an agent that stays flat must not pass by
losing less — the "and positive" of the Aggressive and the Balanced is that clause, as the
Conservative's positive total return and the Contrarian's positive return are theirs);
* Contrarian — positive total return in SIDEWAYS.

``python -m training.agents.evaluate --models DIR [--split test|validation] [--img-dir docs/img]``
runs the suite and prints the results as Markdown (the tables of docs/agents.md): the checks
and the number passed, how much mean reversion there was to earn where the Contrarian is judged
(the SIDEWAYS periods' one-bar return correlation and two reference rules that fade the last
move, :func:`sideways_reversion`), then each data set's tables:

* ``--split test`` (the default, to report): data no agent trained or was selected on —
  synthetic paths with seeds the job never used (2024, 2025; true regimes; a seed the manifest
  shows the set was fitted on is not run, :func:`seed_seen`) and, for every series
  the job trained on, its test window as recorded in the manifest — for a real series it never
  read, its bars from the recorded test cut on (regimes detected causally by the committed
  regime model);
* ``--split validation`` (to choose between candidates): the same checks on data used for
  selection only — the validation window recorded in the manifest of every real series, and
  synthetic paths with seeds reserved for validation (2022, 2023). Test data is never read.

``--robustness N`` runs the synthetic checks over N more paths per preset with the split's own
seeds (a report on the test split); ``--by-period`` the real series' checks per calendar year
(per month for intraday bars), from one run over each window; ``--split validation --score N``
prints each agent's validation score, the number candidates are chosen by: the real validation
windows passed plus the synthetic checks' pass rates over N validation paths per preset (one
path decides a check by a coin toss).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ensemble_trader.backtest.engine import (
    CostModel,
    PreparedSeries,
    asset_returns,
    evaluate_agents,
    load_series,
    period_regimes,
    prepare,
    run_pool,
    strategy_returns,
)
from ensemble_trader.backtest.report import figure
from ensemble_trader.domain import fitted
from ensemble_trader.domain.agents import MAX_NO_TRADE_BAND, AgentPool
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FEATURE_NAMES
from tqdm import tqdm

SPLITS = ("test", "validation")
SYNTHETIC: dict[str, tuple[tuple[str, str], ...]] = {
    # (data spec, what it is): paths with seeds the training job never uses, one pair per split
    "test": (
        ("synth:realistic:2024:3000", "synthetic 'realistic', unseen seed, true regimes"),
        ("synth:mean_reverting:2025:3000", "synthetic 'mean_reverting', unseen seed, true regimes"),
    ),
    "validation": (
        ("synth:realistic:2022:3000", "synthetic 'realistic', validation seed, true regimes"),
        ("synth:mean_reverting:2023:3000", "synthetic 'mean_reverting', validation seed, true regimes"),
    ),
}
REAL: tuple[tuple[str, str], ...] = (
    # a real series the job trained on is evaluated on its recorded test (or validation) window only
    ("arch:sp500", "S&P 500"),
    ("arch:nasdaq", "NASDAQ"),
    ("shared:btcusd_1h", "BTC-USD hourly"),
)
FIXED_SOURCES = ("arch:", "synth:")
"""Data specs whose bars their name fixes (a bundled series, a seeded generator); a ``shared:``
file or a path may hold any series."""


@dataclass(frozen=True)
class Case:
    """One data set of a suite: a spec and the window ``[start, end)`` to evaluate (None: open);
    ``skip`` says why it cannot be evaluated out of sample."""

    spec: str
    title: str
    start: Any = None
    end: Any = None
    skip: str | None = None


def out_of_sample_start(windows: Mapping[str, Mapping[str, Sequence[str]]],
                        calendar_cuts: Mapping[str, str] | None = None) -> str | None:
    """Where the test period of a real series the job never read begins, in calendar time: the
    recorded test cut (``training.calendar_cuts["test"]`` of the manifest), else — a manifest
    written before the cuts were recorded — the later of the earliest recorded real test window's
    first bar and the second after the last bar of any real training or validation window (a
    job with a validation channel records no test window). None when the set read no real
    series (every real bar is then out of sample)."""
    if calendar_cuts and calendar_cuts.get("test"):
        return str(calendar_cuts["test"])
    real = [w for spec, w in windows.items() if not spec.startswith("synth:")]
    tested = [np.datetime64(w["test"][0], "s") for w in real if "test" in w]
    seen = [np.datetime64(w[k][1], "s") for w in real for k in ("train", "validation") if k in w]
    bounds = ([min(tested)] if tested else []) + ([max(seen) + np.timedelta64(1, "s")] if seen else [])
    return str(np.datetime_as_string(max(bounds), unit="s")) if bounds else None


def seed_seen(spec: str, split: str, windows: Sequence[fitted.FittedWindow]) -> str | None:
    """Why the synthetic path ``spec`` is not data of ``split`` for the agent set whose fitted
    ``windows`` are given, or None: a fitted series of the same seed (:func:`fitted.find_overlaps`,
    the rule ``backtest`` flags by — the same regime path, and at equal length the same draws).
    On the test split any such series counts (trained or selected on); on the validation split
    only one the agents trained on (a validation seed the set was selected on is validation data)."""
    found = [f.window for f in fitted.find_overlaps(spec, None, None, windows, selected=split == "test")
             if f.by == "seed"]
    if not found:
        return None
    parts: dict[str, list[str]] = {}
    for w in found:
        who = "the set" if w.agents in ((), ("all",)) else "the " + ", ".join(w.agents)
        parts.setdefault(w.data, []).append(f"{'validation' if w.selected else 'training'} data of {who}")
    uses = "; ".join(f"{data} ({'; '.join(used)})" for data, used in parts.items())
    kind = "unseen" if split == "test" else "validation-only"
    return (f"seed {fitted.synthetic_seed(spec)}: {uses} — the same seed, so the same regime path (and at equal "
            f"length the same draws): not {kind} data for this set")


def suite_cases(split: str, windows: dict[str, dict[str, list[str]]], trained_on: Sequence[str] = (),
                calendar_cuts: Mapping[str, str] | None = None, *,
                training: Mapping[str, Any] | None = None) -> list[Case]:
    """The data sets of ``split`` for a model set whose manifest records ``windows`` (by data
    spec) and ``calendar_cuts`` (where validation and test begin in calendar time) and trained
    on ``trained_on`` (its training and validation inputs); ``training``, the manifest's whole
    ``training`` block when at hand, tells which specs the agents trained on and which they were
    only selected on (without it, every spec of ``windows`` and ``trained_on`` counts as both).

    Test: the unseen synthetic seeds, and each real series on its test window (a series the job
    never read from the test cut on, :func:`out_of_sample_start` — its earlier bars lie in the
    period the agents trained on in the other series; skipped when it trained on all of it; not
    run when the job read bars files, which may hold that series under another name).
    Validation: the synthetic seeds reserved for validation, and each real series on its
    validation window (skipped when the set has none for it: a series the job never saw is test
    data, not validation data). A synthetic case whose seed the set was fitted on is skipped
    (:func:`seed_seen`): the seeds are reserved by convention, and a job may be given any.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")
    fitted_windows = fitted.agent_windows(
        training if training is not None else {"windows": windows, "data": list(trained_on)}, "", ())
    cases = [Case(spec, title, skip=seed_seen(spec, split, fitted_windows)) for spec, title in SYNTHETIC[split]]
    files = [f for f in trained_on if not f.startswith(FIXED_SOURCES)]
    unseen_start = out_of_sample_start(windows, calendar_cuts) if split == "test" else None
    for spec, name in REAL:
        recorded = windows.get(spec)
        window = (recorded or {}).get(split)
        if split == "test":
            if recorded is not None and window is None:
                continue  # trained on it whole: nothing out of sample
            title = f"{name} test window, detected regimes"
            if recorded is None and files:
                cases.append(Case(spec, title, skip=(
                    f"the set trained on bars files ({', '.join(files)}), which may hold {name}'s bars: "
                    f"its test window is unknown; evaluate it with `ensemble-trader evaluate agents "
                    f"--bars {spec} --start` after the files' last bar")))
                continue
            cases.append(Case(spec, title, window[0] if window else unseen_start))
        elif window is not None:
            # the recorded window is [first bar, last bar]; the end of a Case is exclusive and the
            # recorded last bar closes the window (every validation figure here and in
            # docs/agents.md was measured so: a "+1 ns" meant to keep it was lost to the
            # microsecond precision of the bar times)
            end = np.datetime64(window[1], "us")
            cases.append(Case(spec, f"{name} validation window, detected regimes", window[0], end))
    return cases


def specialty_checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pass/fail of each agent's specialty on one report (``None`` when a regime is absent),
    with the ``shortfall`` of a missed check — how far it is from passing, in the check's units
    (percentage points of drawdown or return, Sharpe points; 0 when passed, None when absent):
    the tie-break when candidates pass as many checks."""
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
        gaps = [100 * max(0.0, regime(a, n)["max_drawdown"] - regime(hold, n)["max_drawdown"])
                for n, part in zip(("BEAR", "VOLATILE"), parts, strict=True) if part is False]
        gap = None if ok is None else sum(gaps) + 100 * max(0.0, -a["overall"]["total_return"])
        out["conservative"] = {"passed": ok, "shortfall": gap, "detail": (
            f"maxDD BEAR {_pct(regime(a, 'BEAR'), 'max_drawdown')} vs {_pct(regime(hold, 'BEAR'), 'max_drawdown')}, "
            f"VOLATILE {_pct(regime(a, 'VOLATILE'), 'max_drawdown')} vs {_pct(regime(hold, 'VOLATILE'), 'max_drawdown')}; "
            f"total return {_pct(a['overall'], 'total_return')}")}
    if "aggressive" in agents:
        mine, base = regime(agents["aggressive"], "BULL"), regime(hold, "BULL")
        bar = None if base is None else max(base["total_return"], 0.0)  # beat cash too
        ok = None if mine is None or bar is None else mine["total_return"] > bar
        gap = None if ok is None else 100 * max(0.0, bar - mine["total_return"])
        out["aggressive"] = {"passed": ok, "shortfall": gap, "detail": (
            f"BULL total return {_pct(mine, 'total_return')} vs {_pct(base, 'total_return')}")}
    if "balanced" in agents:
        mine, base = agents["balanced"]["overall"]["sharpe"], hold["overall"]["sharpe"]
        bar = max(base, 0.0)  # beat cash too: a flat agent's Sharpe is 0
        out["balanced"] = {"passed": mine > bar, "shortfall": max(0.0, bar - mine),
                           "detail": f"Sharpe {mine:.2f} vs {base:.2f}"}
    if "contrarian" in agents:
        mine = regime(agents["contrarian"], "SIDEWAYS")
        base = regime(hold, "SIDEWAYS")
        ok = None if mine is None else mine["total_return"] > 0
        gap = None if ok is None else 100 * max(0.0, -mine["total_return"])
        out["contrarian"] = {"passed": ok, "shortfall": gap, "detail": (
            f"SIDEWAYS total return {_pct(mine, 'total_return')} (buy-and-hold {_pct(base, 'total_return')})")}
    return out


FADE_RULES: dict[str, str] = {
    "fade_last": "-sign(ret_1)",
    "fade_zscore": "clip(-zscore_20 / 2, -1, 1)",
}
"""Reference rules for the Contrarian's check: positions that lean against the last bar's move
or against the close's distance from its 20-bar mean, held one bar."""


def fade_positions(features: np.ndarray) -> dict[str, np.ndarray]:
    """The positions of :data:`FADE_RULES` at each row of ``features`` (n, F), in FEATURE_NAMES order."""
    f = np.asarray(features, dtype=np.float64)
    last = f[:, FEATURE_NAMES.index("ret_1")]
    z = f[:, FEATURE_NAMES.index("zscore_20")]
    return {"fade_last": -np.sign(last), "fade_zscore": np.clip(-z / 2.0, -1.0, 1.0)}


def sideways_reversion(data: PreparedSeries, contrarian: np.ndarray, costs: CostModel,
                       regime: str = "SIDEWAYS") -> dict[str, Any] | None:
    """Is there mean reversion to earn where the Contrarian is judged? Over the periods of
    ``regime`` (each period labelled as in the backtest, :func:`period_regimes`):
    the correlation of the last bar's log return with the next one (negative: reversion) and its
    standard error ``1/sqrt(n)``, and the total net return of buy-and-hold, of each
    :data:`FADE_RULES` rule and of the ``contrarian``'s positions (one per bar of ``data``).
    None when ``data`` has no regimes or no period of ``regime``."""
    if data.regimes is None:
        return None
    mask = period_regimes(data.regimes) == regime
    n = int(mask.sum())
    if n == 0:
        return None
    r = asset_returns(data.close)
    last = data.features[:-1, FEATURE_NAMES.index("ret_1")][mask]
    nxt = np.log1p(r[mask])
    corr = float(np.corrcoef(last, nxt)[0, 1]) if n > 2 and last.std() > 0 and nxt.std() > 0 else float("nan")
    positions = {"buy_and_hold": np.ones(len(r)), **{k: v[:-1] for k, v in fade_positions(data.features).items()},
                 "contrarian": np.asarray(contrarian, dtype=np.float64)[:-1]}
    totals = {k: float(np.prod(1.0 + strategy_returns(p, r, costs)[mask]) - 1.0) for k, p in positions.items()}
    return {"periods": n, "share": n / len(r), "corr": corr, "corr_se": 1.0 / np.sqrt(n), "total_return": totals}


def format_reversion(rows: list[tuple[str, dict[str, Any] | None]]) -> str:
    """The Markdown table of :func:`sideways_reversion` results, one row per data set."""
    out = ["| data | SIDEWAYS periods | corr(last, next) ± s.e. | buy-and-hold | "
           + " | ".join(f"`{rule}`" for rule in FADE_RULES) + " | contrarian |",
           "|---" * (5 + len(FADE_RULES)) + "|"]
    for title, row in rows:
        if row is None:
            out.append(f"| {title} | none | " + " | ".join("n/a" for _ in range(3 + len(FADE_RULES))) + " |")
            continue
        t = row["total_return"]
        out.append(f"| {title} | {row['periods']} ({row['share']:.0%}) | {figure(row['corr'], '+.3f')} ± {row['corr_se']:.3f} | "
                   + " | ".join(f"{100 * t[k]:.1f}%" for k in ("buy_and_hold", *FADE_RULES, "contrarian")) + " |")
    return "\n".join(out)


def _pct(block: dict[str, float] | None, key: str) -> str:
    return "n/a" if block is None else f"{100 * block[key]:.1f}%"


def model_set_cases(pool: AgentPool, split: str) -> list[Case]:
    """:func:`suite_cases` of ``split`` for the set ``pool`` serves, from its manifest."""
    training = pool.manifest.training
    trained_on = [*training.get("data", []), *training.get("validation_data", [])]
    return suite_cases(split, training.get("windows", {}), trained_on, training.get("calendar_cuts"),
                       training=training)


def case_data(case: Case) -> tuple[PreparedSeries, str]:
    """The evaluated window of ``case`` and where its regimes come from: ``true`` (a synthetic
    path), ``detected`` (the committed regime model, causally) or ``none``. A DataError when its
    bars are not here (the shared data folder exists only on the development machine)."""
    from ensemble_trader.cli.evaluate import detected_regimes

    series, regimes = load_series(case.spec)
    source = "true"
    if regimes is None:
        regimes = detected_regimes(series, None)
        source = "detected" if regimes is not None else "none"
    return prepare(series, regimes, start=case.start, end=case.end), source


def load_case(case: Case) -> tuple[PreparedSeries, str] | str:
    """:func:`case_data` of ``case``, or the reason it cannot be run (its ``skip``, or the data
    not being here)."""
    if case.skip is not None:
        return case.skip
    try:
        return case_data(case)
    except DataError as exc:
        return str(exc)


def score(pool: AgentPool, data: PreparedSeries, costs: CostModel) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The pool's positions on ``data`` (each agent seeing its own), the evaluation report and
    the specialty checks."""
    paths = run_pool(pool, data.features)
    report = evaluate_agents(data, {n: paths[:, i] for i, n in enumerate(pool.names)}, costs)
    return paths, report, specialty_checks(report)


def run_suite(models_dir: Path | None, img_dir: Path | None, costs: CostModel, split: str = "test") -> str:
    """Evaluate every data set of ``split`` (see :func:`suite_cases`); return the Markdown results."""
    from ensemble_trader.cli.evaluate import format_report, plot_equity

    pool = AgentPool.load(models_dir)
    lines = [f"Model set `{pool.version}`, costs {costs.cost_bps:g} + {costs.slippage_bps:g} bps, {split} split.\n"]
    summary = ["| data | " + " | ".join(pool.names) + " |", "|---" * (len(pool.names) + 1) + "|"]
    details: list[str] = []
    reversion: list[tuple[str, dict[str, Any] | None]] = []
    passed = counted = 0
    for case in model_set_cases(pool, split):
        loaded = load_case(case)
        if isinstance(loaded, str):
            summary.append(f"| {case.title} | " + " | ".join("not run" for _ in pool.names) + " |")
            details.append(f"\n#### {case.title}\n\nnot run: {loaded}\n")
            continue
        prepared, source = loaded
        paths, report, checks = score(pool, prepared, costs)
        if "contrarian" in pool.names:
            reversion.append((case.title, sideways_reversion(prepared, paths[:, pool.names.index("contrarian")], costs)))
        marks = {None: "n/a", True: "pass", False: "**miss**"}
        summary.append(f"| {case.title} | " + " | ".join(
            f"{marks[checks[n]['passed']]}: {checks[n]['detail']}" for n in pool.names) + " |")
        passed += sum(checks[n]["passed"] is True for n in pool.names)
        counted += sum(checks[n]["passed"] is not None for n in pool.names)
        ts = prepared.timestamp
        details.append(f"\n#### {case.title}\n\n`{case.spec}`, {str(ts[0])[:10]} .. {str(ts[-1])[:10]}, "
                       f"{len(ts)} bars, regimes: {source}\n")
        details.append(format_report(report, markdown=True))
        if img_dir is not None:
            name = case.spec.replace(":", "_").replace("/", "_")
            plot_equity(prepared, paths, pool.names, costs, img_dir / f"agents_{name}.png")
            details.append(f"\n![{case.title}](img/agents_{name}.png)\n")
    summary.append(f"\n**{passed} of {counted} checks passed** ({split} split).")
    if reversion:
        summary += ["\n### Mean reversion where the Contrarian is judged\n",
                    "Over the SIDEWAYS periods: the correlation of one bar's return with the next (negative: "
                    "reversion to earn), and the total net return of buy-and-hold, of two reference rules that "
                    "fade the last move (" + ", ".join(f"`{k}` = `{v}`" for k, v in FADE_RULES.items())
                    + ") and of the Contrarian.\n", format_reversion(reversion)]
    heading = "out of sample" if split == "test" else "validation data"
    return "\n".join(lines + [f"### Specialty checks ({heading})\n"] + summary + ["\n### Tables"] + details) + "\n"


MIN_SLICE_PERIODS = 20
"""Calendar slices with fewer periods are left out of :func:`by_period` (too few to judge)."""


def calendar_slices(timestamp: np.ndarray, unit: str) -> list[tuple[str, int, int]]:
    """``(label, first, end)`` of each calendar year (``unit="Y"``) or month (``"M"``) of
    ``timestamp``: the bars ``first .. end - 1`` fall in it."""
    keys = np.asarray(timestamp).astype(f"datetime64[{unit}]")
    if keys.size == 0:
        return []
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [keys.size]))
    return [(str(keys[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def slice_reports(data: PreparedSeries, paths: np.ndarray, names: Sequence[str],
                  costs: CostModel) -> list[tuple[str, int, dict[str, Any]]]:
    """The evaluation report of each calendar year of ``data`` (each month for intraday bars),
    from one run over the whole window (``paths``: (n, A) positions): ``(label, periods,
    report)``. A slice's periods are those decided at its bars (the last one ends at the next
    slice's first bar); every path enters it with the position it held, buy-and-hold invested."""
    unit = "Y" if data.periods_per_year < 400 else "M"
    out = []
    n = len(data.timestamp)
    for label, first, end in calendar_slices(data.timestamp, unit):
        hi = min(end + 1, n)
        if hi - first - 1 < MIN_SLICE_PERIODS:
            continue
        part = PreparedSeries(data.symbol, data.timestamp[first:hi], data.close[first:hi], data.features[first:hi],
                              None if data.regimes is None else data.regimes[first:hi], data.periods_per_year)
        before = None if first == 0 else {
            "buy_and_hold": 1.0, **{name: float(paths[first - 1, i]) for i, name in enumerate(names)}}
        report = evaluate_agents(part, {name: paths[first:hi, i] for i, name in enumerate(names)}, costs, before)
        out.append((label, hi - first - 1, report))
    return out


def by_period(models_dir: Path | None, costs: CostModel, split: str = "test") -> str:
    """The specialty checks of the real series' windows of ``split``, calendar year by calendar
    year (month by month for intraday bars): how steady a pass or a miss on the whole window is.
    A report, never a basis for choosing."""
    pool = AgentPool.load(models_dir)
    series_names = dict(REAL)
    lines = [f"Specialty checks by calendar period ({split} split, real series, detected regimes), model set "
             f"`{pool.version}`, costs {costs.cost_bps:g} + {costs.slippage_bps:g} bps. Each period from one run "
             f"over the window; periods with fewer than {MIN_SLICE_PERIODS} bars are left out; n/a: the "
             f"regime does not occur.\n",
             "| data | period | periods | " + " | ".join(pool.names) + " |", "|---" * (len(pool.names) + 3) + "|"]
    totals: dict[str, list[int]] = {name: [0, 0] for name in pool.names}
    for case in model_set_cases(pool, split):
        if case.spec not in series_names:
            continue  # the synthetic paths: see --robustness
        loaded = load_case(case)
        if isinstance(loaded, str):
            lines.append(f"| {series_names[case.spec]} | not run: {loaded} | | " + " | ".join("" for _ in pool.names) + " |")
            continue
        prepared, _ = loaded
        paths = run_pool(pool, prepared.features)
        for label, periods, report in slice_reports(prepared, paths, pool.names, costs):
            checks = specialty_checks(report)
            cells = []
            for name in pool.names:
                ok, gap = checks[name]["passed"], checks[name]["shortfall"]
                cells.append("n/a" if ok is None else "pass" if ok else f"**miss** ({gap:.2f})")
                totals[name][0] += ok is True
                totals[name][1] += ok is not None
            lines.append(f"| {series_names[case.spec]} | {label} | {periods} | " + " | ".join(cells) + " |")
    lines.append("| **all** | | | " + " | ".join(f"**{ok}/{seen}**" for ok, seen in totals.values()) + " |")
    return "\n".join(lines) + "\n"


PRESETS = ("realistic", "mean_reverting")
"""The synthetic presets of the extra paths."""
ROBUSTNESS_FIRST_SEED: dict[str, int] = {"test": 3001, "validation": 4001}
"""First synthetic seed of the extra paths of each split; no job and no other split uses seeds
from there on (up to 1,000 paths per split)."""
MAX_ROBUSTNESS_PATHS = 1000
DEFAULT_SCORE_PATHS = 30
"""Validation paths per preset of the band search's validation score."""


def extra_seeds(split: str, n_paths: int) -> range:
    """The seeds of ``n_paths`` extra synthetic paths per preset of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")
    if not 1 <= n_paths <= MAX_ROBUSTNESS_PATHS:
        raise ValueError(f"n_paths={n_paths}: must be in [1, {MAX_ROBUSTNESS_PATHS}]")
    first = ROBUSTNESS_FIRST_SEED[split]
    return range(first, first + n_paths)


def path_data(preset: str, seed: int, bars: int) -> PreparedSeries:
    """One synthetic path of ``preset`` (true regimes)."""
    return case_data(Case(f"synth:{preset}:{seed}:{bars}", preset))[0]


def robustness(models_dir: Path | None, n_paths: int, costs: CostModel, bars: int = 3000,
               split: str = "test") -> str:
    """How often each specialty holds across ``n_paths`` more synthetic paths per preset (seeds
    from :data:`ROBUSTNESS_FIRST_SEED` of ``split``, true regimes). On the test split: the
    spread behind the single test path of each preset, a report, never a basis for choosing.
    On the validation split: the pass rate of the synthetic checks that candidates are chosen
    on (a single validation path per preset decides a check by a coin toss)."""
    seeds = extra_seeds(split, n_paths)
    pool = AgentPool.load(models_dir)
    kind = "unseen" if split == "test" else "validation"
    lines = [f"Spread over {n_paths} {kind} synthetic paths per preset ({bars} bars, seeds "
             f"{seeds[0]}-{seeds[-1]}, true regimes), model set "
             f"`{pool.version}`, costs {costs.cost_bps:g} + {costs.slippage_bps:g} bps. Cells: checks passed "
             f"(and judged), then the median shortfall of the misses.\n",
             "| preset | " + " | ".join(pool.names) + " |", "|---" * (len(pool.names) + 1) + "|"]
    total = judged = 0
    for preset in PRESETS:
        rows = path_checks(pool, preset, seeds, costs, bars)
        cells = []
        for n in pool.names:
            ok = sum(c["passed"] is True for c in rows[n])
            seen = sum(c["passed"] is not None for c in rows[n])
            misses = [c["shortfall"] for c in rows[n] if c["passed"] is False]
            total, judged = total + ok, judged + seen
            cells.append(f"{ok}/{seen}" + (f" (misses by {float(np.median(misses)):.2f})" if misses else ""))
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    lines.append(f"\n**{total} of {judged} checks passed** over the extra paths ({split} split).")
    return "\n".join(lines) + "\n"


def path_checks(pool: AgentPool, preset: str, seeds: range, costs: CostModel,
                bars: int) -> dict[str, list[dict[str, Any]]]:
    """The specialty checks of every agent on one synthetic path per seed of ``preset``."""
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in pool.names}
    for seed in tqdm(seeds, desc=preset, unit="path", disable=not sys.stderr.isatty()):
        _, _, checks = score(pool, path_data(preset, seed, bars), costs)
        for n in pool.names:
            rows[n].append(checks[n])
    return rows


@dataclass(frozen=True)
class ValidationData:
    """What candidates are scored on: the real series' validation windows (title, data) and,
    per synthetic preset, ``n_paths`` validation paths."""

    real: list[tuple[str, PreparedSeries]]
    paths: dict[str, list[PreparedSeries]]
    seeds: range

    @classmethod
    def load(cls, windows: dict[str, dict[str, list[str]]], n_paths: int, bars: int = 3000) -> ValidationData:
        seeds = extra_seeds("validation", n_paths)
        real = []
        for case in suite_cases("validation", windows):
            if case.spec.startswith("synth:"):
                continue  # the presets are scored on their paths below
            try:
                real.append((case.title.split(" validation")[0], case_data(case)[0]))
            except DataError:  # not on this machine: scored on the others
                continue
        paths = {preset: [path_data(preset, seed, bars) for seed in seeds] for preset in PRESETS}
        return cls(real, paths, seeds)

    @property
    def titles(self) -> list[str]:
        return [t for t, _ in self.real] + [f"{p} ({len(v)} paths)" for p, v in self.paths.items()]


def validation_points(pool: AgentPool, data: ValidationData,
                      costs: CostModel) -> dict[str, tuple[float, float, list[str]]]:
    """Per agent: the validation score (real windows passed plus each preset's pass rate over its
    paths), the shortfall (summed over the missed windows, plus each preset's mean over its
    paths) and one cell per column of ``data.titles``."""
    points = dict.fromkeys(pool.names, 0.0)
    short = dict.fromkeys(pool.names, 0.0)
    cells: dict[str, list[str]] = {n: [] for n in pool.names}
    for _title, series in data.real:
        checks = score(pool, series, costs)[2]
        for n in pool.names:
            c = checks[n]
            points[n] += c["passed"] is True
            short[n] += c["shortfall"] or 0.0
            cells[n].append("n/a" if c["passed"] is None else "pass" if c["passed"] else f"miss ({c['shortfall']:.2f})")
    for paths in data.paths.values():
        rows: dict[str, list[dict[str, Any]]] = {n: [] for n in pool.names}
        for series in paths:
            checks = score(pool, series, costs)[2]
            for n in pool.names:
                if checks[n]["passed"] is not None:
                    rows[n].append(checks[n])
        for n in pool.names:
            ok = sum(c["passed"] is True for c in rows[n])
            points[n] += ok / len(rows[n]) if rows[n] else 0.0
            short[n] += float(np.mean([c["shortfall"] for c in rows[n]])) if rows[n] else 0.0
            cells[n].append(f"{ok}/{len(rows[n])}")
    return {n: (points[n], short[n], cells[n]) for n in pool.names}


def validation_score(models_dir: Path | None, n_paths: int, costs: CostModel, bars: int = 3000) -> str:
    """Each agent's validation score, the number candidates are chosen by: the checks passed on
    the real series' validation windows plus, per synthetic preset, the share of ``n_paths``
    validation paths (seeds from ``ROBUSTNESS_FIRST_SEED["validation"]``) where the check
    passes — at most 2 plus the number of real validation windows (4 with the S&P 500's and the
    NASDAQ's) — then the shortfall (see :func:`validation_points`). Never reads test
    data."""
    pool = AgentPool.load(models_dir)
    data = ValidationData.load(pool.manifest.training.get("windows", {}), n_paths, bars)
    scored = validation_points(pool, data, costs)
    lines = [f"Validation score, model set `{pool.version}`, costs {costs.cost_bps:g} + "
             f"{costs.slippage_bps:g} bps, synthetic seeds {data.seeds[0]}-{data.seeds[-1]}.\n",
             "| agent | " + " | ".join(data.titles) + " | score | shortfall |",
             "|---" * (len(data.titles) + 3) + "|"]
    for n, (points, short, cells) in scored.items():
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {points:.2f} | {short:.2f} |")
    lines.append("\nscores: " + json.dumps({n: {"score": round(p, 4), "shortfall": round(g, 4)}
                                             for n, (p, g, _) in scored.items()}))
    return "\n".join(lines) + "\n"


def band_search(models_dir: Path | None, bands: list[float], costs: CostModel,
                n_paths: int = DEFAULT_SCORE_PATHS) -> str:
    """Choose each agent's no-trade band on the validation split (never on test data).

    Every band of ``bands`` is applied to every agent of the set (:meth:`AgentPool.with_no_trade_bands`)
    and scored by the validation score (:func:`validation_points`, ``n_paths`` validation paths
    per preset); per agent the rule is the one used for every configuration choice: the highest
    score, then the smallest shortfall, then the smallest band. Returns the Markdown table and
    the choice.
    """
    base = AgentPool.load(models_dir)
    data = ValidationData.load(base.manifest.training.get("windows", {}), n_paths)
    scores: dict[str, list[tuple[float, float, float, list[str]]]] = {n: [] for n in base.names}
    for band in tqdm(bands, desc="bands", unit="band", disable=not sys.stderr.isatty()):
        scored = validation_points(base.with_no_trade_bands({n: band for n in base.names}), data, costs)
        for n, (points, short, cells) in scored.items():
            scores[n].append((band, points, short, cells))
    lines = [f"No-trade band search on the validation split, model set `{base.version}`, costs "
             f"{costs.cost_bps:g} + {costs.slippage_bps:g} bps, synthetic seeds "
             f"{data.seeds[0]}-{data.seeds[-1]}.\n"]
    chosen = {}
    for n in base.names:
        best = min(scores[n], key=lambda row: (-round(row[1], 9), round(row[2], 9), row[0]))
        chosen[n] = best[0]
        lines += [f"\n**{n}** (chosen: {best[0]:g})\n",
                  "| band | score | shortfall | " + " | ".join(data.titles) + " |",
                  "|---" * (len(data.titles) + 3) + "|"]
        for band, points, gap, cells in scores[n]:
            label = f"**{band:g}**" if band == best[0] else f"{band:g}"
            lines.append(f"| {label} | {points:.2f} | {gap:.2f} | " + " | ".join(cells) + " |")
    lines.append("\nchosen: " + json.dumps(chosen))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Bad arguments (a negative cost, a missing model folder, an --img-dir that cannot be written)
    are usage errors (exit 2) before any work; errors are one line (exit 1), Ctrl-C exit 130, as
    ``ensemble-trader`` (:func:`ensemble_trader.cli.run_main`)."""
    from ensemble_trader.cli import run_main

    return run_main(_build_parser, argv, prog="python -m training.agents.evaluate")


def _build_parser() -> argparse.ArgumentParser:
    from ensemble_trader.cli import basis_points, existing_folder, output_folder, plain_help

    parser = argparse.ArgumentParser(prog="python -m training.agents.evaluate",
                                     description=plain_help(__doc__.split("\n\n")[0]))
    parser.add_argument("--models", type=existing_folder, default=None, help="model set (default: the committed one)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="test: report (default); validation: choose between candidates")
    parser.add_argument("--img-dir", type=output_folder, default=None, help="write equity-curve PNGs here")
    parser.add_argument("--cost-bps", type=basis_points, default=1.0)
    parser.add_argument("--slippage-bps", type=basis_points, default=2.0)
    parser.add_argument("--bands", default=None, metavar="B1,B2,...",
                        help="choose each agent's no-trade band among these on the validation split")
    parser.add_argument("--by-period", action="store_true",
                        help="the checks on the real series, calendar year by year (month by month for intraday bars)")
    parser.add_argument("--robustness", type=int, default=None, metavar="N",
                        help="the checks over N more synthetic paths per preset, with the split's seeds")
    parser.add_argument("--score", type=int, default=None, metavar="N",
                        help="each agent's validation score with N validation paths per preset (only with --split "
                             f"validation; with --bands, the paths the bands are scored on, default {DEFAULT_SCORE_PATHS})")
    parser.set_defaults(func=lambda args: _run(parser, args))
    return parser


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    costs = CostModel(args.cost_bps, args.slippage_bps)
    reports = [name for name, given in (("--score", args.score is not None), ("--by-period", args.by_period),
                                        ("--robustness", args.robustness is not None)) if given]
    if args.by_period and (len(reports) > 1 or args.bands is not None):
        parser.error("--by-period is a report of its own: not with --robustness, --bands or --score")
    if args.img_dir is not None and (reports or args.bands is not None):
        parser.error(f"--img-dir goes with the plain suite only, not with {', '.join(reports) or '--bands'}")
    if args.score is not None:
        if args.split != "validation" or args.robustness is not None:
            parser.error("--score chooses between candidates: only with --split validation, not with --robustness")
        if not 1 <= args.score <= MAX_ROBUSTNESS_PATHS:
            parser.error(f"--score takes a number of paths in [1, {MAX_ROBUSTNESS_PATHS}]")
        if args.bands is None:
            print(validation_score(args.models, args.score, costs))
            return 0
    if args.by_period:
        if args.robustness is not None or args.bands is not None or args.score is not None:
            parser.error("--by-period is a report of its own: not with --robustness, --bands or --score")
        print(by_period(args.models, costs, split=args.split))
        return 0
    if args.robustness is not None:
        if not 1 <= args.robustness <= MAX_ROBUSTNESS_PATHS or args.bands is not None:
            parser.error(f"--robustness takes a number of paths in [1, {MAX_ROBUSTNESS_PATHS}], and not with --bands")
        print(robustness(args.models, args.robustness, costs, split=args.split))
        return 0
    if args.bands is not None:
        if args.split != "validation":
            parser.error("--bands chooses a configuration: only with --split validation")
        try:
            bands = sorted({float(b) for b in args.bands.split(",") if b.strip()})
        except ValueError:
            parser.error(f"--bands: not a comma-separated list of numbers: {args.bands!r}")
        if not bands or not all(0.0 <= b <= MAX_NO_TRADE_BAND for b in bands):
            parser.error(f"--bands: give numbers in [0, {MAX_NO_TRADE_BAND:g}], got {args.bands!r}")
        print(band_search(args.models, bands, costs, n_paths=args.score or DEFAULT_SCORE_PATHS))
        return 0
    print(run_suite(args.models, args.img_dir, costs, args.split))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
