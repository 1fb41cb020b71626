"""Choose the meta-agent's configuration on validation data; report one on the test data.

    python -m training.meta.select [--candidates NAME|JSON ...] [--split validation|confirm|test|spread]
                                   [--paired CANDIDATE] [--json]

For every evaluation set the expensive part — features → regime → agents
(:func:`~ensemble_trader.backtest.ensemble.run_pipeline`) — runs once; each candidate
configuration then drives the meta-agent over it (:func:`~ensemble_trader.backtest.ensemble.run_meta`)
and is scored by :func:`~ensemble_trader.backtest.ensemble.evaluate`, the same code as
``ensemble-trader backtest``. The score of a candidate on a set is the margin over the issue's
target, ``Sharpe_ens - (Sharpe_best + 0.2 |Sharpe_best|)`` (≥ 0: the Sharpe target holds), with
the drawdown condition beside it; candidates are ranked by the mean margin over the sets.

Walk-forward protocol (docs/meta-agent.md §6): ``validation`` — synthetic seeds 201-204 (2,500
bars) and S&P 500 / NASDAQ 2013-01-01 → 2015-01-01 — is where configurations are chosen;
``confirm`` — six more synthetic series, seeds 205-210 — checks the ranking of a few candidates;
``test`` — seeds 301-304 (3,000 bars) and S&P 500 / NASDAQ from 2015-01-01 — takes exactly one
configuration, to report it; ``spread`` — five more synthetic series per preset, each preset with its own five seeds —
reports the same configuration over more paths. Bars before a window only warm up features,
filter and learners.

No set is scored with models that learned from it (:func:`check_overlap`, before any work, by the
rule of ``ensemble-trader backtest``'s in-sample report, :mod:`ensemble_trader.domain.fitted`): no
real window the agent set trained on (manifest ``training.windows``) or the regime model was
fitted on (``training_window``), of any real series, may overlap an index set's evaluated window;
no synthetic series either learned from may share an evaluated set's seed; on the report splits
the agents' validation windows count too; and a manifest that records no window for data its
model learned from is refused (it cannot be checked). ``--allow-overlap`` evaluates anyway, with
a warning per overlap. Every header names the agent set and the regime model.

A candidate is a name of :data:`CANDIDATES` or a JSON object of ``MetaAgentConfig`` options.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ensemble_trader.backtest.selection import (  # noqa: F401 (the sets, one constant for this tool and the backtest's report)
    CONFIRM_SETS,
    REPORT_SPLITS,
    SPLITS,
    SPREAD_SETS,
    TEST_SETS,
    VALIDATION_SETS,
    EvalSet,
)
from ensemble_trader.domain import fitted
from ensemble_trader.domain.fitted import FittedWindow, synthetic_seed  # noqa: F401 (re-exported)
from tqdm import tqdm

BASE: dict[str, Any] = {
    "policy": "hedge",
    "policy_params": None,
    "context": "global",
    "mode": "blend",
    "blend_by": "risk",
    "max_position_change": 0.5,
    "shrinkage": 0.0,
    "vol_target": "none",
    "vol_target_power": 1.0,
    "vol_target_max_scale": 1.0,
    "vol_target_halflife": 10.0,
    "vol_target_long_halflife": 250.0,
    "regime_prior_rounds": 0.0,
    "min_regime_rounds": 20,
    "no_trade_band": 0.0,
}
"""The configuration chosen before the overlay and the shrinkage existed (the previous default).
Named candidates are spelled out against it, so their meaning does not move with the defaults."""

_VT = {"vol_target": "market", "vol_target_max_scale": 1.0, "max_position_change": 2.0}
_VT_VAR = _VT | {"vol_target_power": 2.0}
_REGIME = {"context": "regime", "regime_prior_rounds": 300.0}

CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {},  # MetaAgentConfig's current defaults
    # the previous default and its neighbours
    "hedge-global": BASE,
    "hedge-global-eta0.03": BASE | {"policy_params": {"eta": 0.03, "discount": 1.0}},
    "hedge-global-eta0.3": BASE | {"policy_params": {"eta": 0.3, "discount": 1.0}},
    "thompson-global": BASE | {"policy": "thompson"},
    "ucb-global": BASE | {"policy": "ucb"},
    # shrinkage toward equal risk weights; 1.0 is the equal-risk-weight reference blend
    "hedge-global-shrink0.25": BASE | {"shrinkage": 0.25},
    "hedge-global-shrink0.5": BASE | {"shrinkage": 0.5},
    "equal-risk": BASE | {"shrinkage": 1.0},
    # the per-bar smoothing bound (the ramp on a change of leader stays)
    "hedge-global-cap1": BASE | {"max_position_change": 1.0},
    "hedge-global-cap2": BASE | {"max_position_change": 2.0},
    # the volatility overlay (scale ≤ 1; per-bar bound 2)
    "hedge-global-vt-ensemble": BASE | _VT | {"vol_target": "ensemble"},
    "hedge-global-vt-market": BASE | _VT,
    "hedge-global-vt-market-var": BASE | _VT_VAR,
    "hedge-global-vt-market-var-scale1.5": BASE | _VT_VAR | {"vol_target_max_scale": 1.5},
    "hedge-global-vt-market-var-cap0.5": BASE | _VT_VAR | {"max_position_change": 0.5},
    "equal-risk-cap2": BASE | {"shrinkage": 1.0, "max_position_change": 2.0},
    "equal-risk-vt-market-var": BASE | _VT_VAR | {"shrinkage": 1.0},
    "thompson-global-vt-market-var": BASE | _VT_VAR | {"policy": "thompson"},
    # learners per regime
    "hedge-regime": BASE | {"context": "regime"},
    "hedge-probability": BASE | {"context": "probability"},
    "hedge-regime-prior150-cap2": BASE | _REGIME | {"regime_prior_rounds": 150.0, "max_position_change": 2.0},
    "hedge-regime-prior300-cap2": BASE | _REGIME | {"max_position_change": 2.0},
    "hedge-regime-vt-market-var": BASE | _VT_VAR | {"context": "regime"},
    "hedge-regime-prior150-vt-market-var": BASE | _VT_VAR | _REGIME | {"regime_prior_rounds": 150.0},
    "hedge-regime-prior300-vt-market-var": BASE | _VT_VAR | _REGIME,
    "hedge-regime-prior600-vt-market-var": BASE | _VT_VAR | _REGIME | {"regime_prior_rounds": 600.0},
    "hedge-regime-prior1000-vt-market-var": BASE | _VT_VAR | _REGIME | {"regime_prior_rounds": 1000.0},
    "hedge-regime-prior300-vt-market-var-shrink0.25": BASE | _VT_VAR | _REGIME | {"shrinkage": 0.25},
    "hedge-regime-prior300-vt-market-var-cap0.5": BASE | _VT_VAR | _REGIME | {"max_position_change": 0.5},
    "hedge-probability-prior300-vt-market-var": BASE | _VT_VAR | _REGIME | {"context": "probability"},
    "thompson-regime-prior300-vt-market-var": BASE | _VT_VAR | _REGIME | {"policy": "thompson"},
    # learners that restart when a GLR test finds a change in the agents' rewards
    "glrts-global-vt-market-var": BASE | _VT_VAR | {"policy": "glrts"},
    "glrts-regime-prior300-vt-market-var": BASE | _VT_VAR | _REGIME | {"policy": "glrts"},
    # Thompson sampling with Beta posteriors over rewards clipped from (-4, 4)
    "betats-global-vt-market-var": BASE | _VT_VAR | {"policy": "betats"},
    "betats-regime-prior300-vt-market-var": BASE | _VT_VAR | _REGIME | {"policy": "betats"},
    # a no-trade band on the ensemble's own position (the agents have theirs)
    "hedge-regime-prior300-vt-market-var-band0.05": BASE | _VT_VAR | _REGIME | {"no_trade_band": 0.05},
    "hedge-regime-prior300-vt-market-var-band0.1": BASE | _VT_VAR | _REGIME | {"no_trade_band": 0.1},
    "hedge-regime-prior300-vt-market-var-band0.2": BASE | _VT_VAR | _REGIME | {"no_trade_band": 0.2},
    "hedge-global-vt-market-var-band0.1": BASE | _VT_VAR | {"no_trade_band": 0.1},
}
"""Named candidates: ``MetaAgentConfig`` options (the rest at the field defaults). A JSON candidate
on the command line is taken as options over the current defaults."""


# ---- pure parts -------------------------------------------------------------------------------


def margin(target: Mapping[str, Any]) -> float:
    """``Sharpe_ens - goal`` from ``evaluate()``'s ``target`` entry (≥ 0: the Sharpe target holds)."""
    return float(target["ensemble_sharpe"] - target["sharpe_goal"])


SET_BY_THE_RUN = {"cost_bps": "the backtest's cost model (1 + 2 bps)", "random_state": "--seed"}
"""Options a candidate may not name: the run sets them for every candidate alike (a candidate's
own ``random_state`` used to override ``--seed`` silently, its ``cost_bps`` the costs it is scored
at)."""


def check_candidate(label: str, options: Mapping[str, Any]) -> None:
    """A ``ValueError`` naming the options of ``options`` that the run sets itself."""
    clash = sorted(set(options) & set(SET_BY_THE_RUN))
    if clash:
        raise ValueError(f"candidate {label!r} sets {', '.join(clash)}, which the run sets for every candidate "
                         f"({'; '.join(f'{k}: {SET_BY_THE_RUN[k]}' for k in clash)})")


def parse_candidates(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """Candidate label → options; names come from :data:`CANDIDATES`, JSON objects are taken
    as options and labelled by their text. None → every named candidate."""
    if not items:
        return dict(CANDIDATES)
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        text = item.strip()
        if text[:1] in ("{", "[", '"') or text[:1].isdigit() or text in ("null", "true", "false"):
            try:
                options = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"candidate {item!r} is not valid JSON: {exc}") from None
            if not isinstance(options, dict):
                raise ValueError(f"candidate {item!r} must be a JSON object of MetaAgentConfig options")
            check_candidate(text, options)
            out[text] = options
        elif text in CANDIDATES:
            out[text] = CANDIDATES[text]
        else:
            raise ValueError(f"unknown candidate {item!r}; named candidates: {', '.join(CANDIDATES)}")
    return out


def summarise(per_set: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean margin and counts over one candidate's per-set targets (set name → ``target``).

    ``mean_margin_se`` is the standard error of the mean margin, the sets taken as independent
    (each set's ``margin_se`` from ``evaluate()``); NaN (null in JSON, "n/a" in the tables) when
    a set's margin has none (fewer than three periods): the mean takes that set's margin, so
    leaving its error out would understate the mean's."""
    margins = [margin(t) for t in per_set.values()]
    errors = np.array([t["margin_se"] for t in per_set.values()])
    return {
        "mean_margin": float(np.mean(margins)),
        "mean_margin_se": float(np.sqrt(np.sum(errors**2)) / len(errors)),
        "sharpe_met": sum(bool(t["sharpe_met"]) for t in per_set.values()),
        "drawdown_met": sum(bool(t["drawdown_met"]) for t in per_set.values()),
        "both_met": sum(bool(t["sharpe_met"] and t["drawdown_met"]) for t in per_set.values()),
        "sets": len(margins),
    }


def rank(scores: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Candidate labels, best mean margin first (ties: more sets with both conditions met)."""
    return sorted(scores, key=lambda c: (-scores[c]["summary"]["mean_margin"], -scores[c]["summary"]["both_met"]))


def format_validation(scores: Mapping[str, Mapping[str, Any]], sets: Sequence[EvalSet]) -> str:
    """The candidates table: per-set margin (``*`` = drawdown condition met), mean, counts."""
    from ensemble_trader.backtest.report import figure

    width = max([9, *(len(c) for c in scores)])
    head = f"{'candidate':{width}}" + "".join(f"{s.name[:19]:>21}" for s in sets) + f"{'mean':>9}{'s.e.':>7}{'SR/DD/both':>12}"
    lines = [head]
    for label in rank(scores):
        entry = scores[label]
        cells = "".join(
            f"{margin(entry['sets'][s.name]):+20.3f}{'*' if entry['sets'][s.name]['drawdown_met'] else ' '}"
            for s in sets
        )
        sm = entry["summary"]
        lines.append(
            f"{label:{width}}{cells}{sm['mean_margin']:+9.3f}{figure(sm['mean_margin_se'], '.3f'):>7}"
            f"{sm['sharpe_met']:>6}/{sm['drawdown_met']}/{sm['both_met']}"
        )
    lines.append("margin = Sharpe_ens - (Sharpe_best + 0.2|Sharpe_best|); * = max drawdown no worse than the best agent's")
    lines.append("s.e. = standard error of a candidate's mean margin (not of the difference between two candidates "
                 "on the same sets, whose errors are strongly correlated)")
    return "\n".join(lines)


def paired_summary(per_set: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Mean Sharpe difference against the baseline over the sets, its standard error (the sets
    taken as independent) from the i.i.d.-normal errors (``se``) and from the Newey-West ones
    (``se_hac``), and how many sets the difference is positive on. An error is NaN when a set's
    is (fewer than three periods), as ``mean_margin_se`` in :func:`summarise`."""
    entries = [r["paired"] for r in per_set.values()]
    diffs = np.array([e["difference"] for e in entries])

    def pooled(key: str) -> float:
        errors = np.array([e[key] for e in entries])
        return float(np.sqrt(np.sum(errors**2)) / len(errors))

    return {
        "mean_difference": float(np.mean(diffs)),
        "se": pooled("se"),
        "se_hac": pooled("se_hac"),
        "positive": int(np.sum(diffs > 0)),
        "sets": len(entries),
    }


def format_paired(reports: Mapping[str, Mapping[str, Any]], baseline: str, sets: Sequence[EvalSet]) -> str:
    """Each candidate against the baseline, set by set: Sharpe difference (standard error under
    i.i.d. normal returns / Newey-West)."""
    from ensemble_trader.backtest.report import figure

    width = max([9, *(len(c) for c in reports)])
    head = (f"{'candidate':{width}}" + "".join(f"{s.name[:25]:>27}" for s in sets)
            + f"{'mean':>9}{'s.e.':>7}{'HAC':>7}{'> 0':>6}")
    lines = [f"Sharpe difference against {baseline}, period by period on the same series "
             "(standard error: i.i.d. normal / Newey-West HAC):", head]
    for label, per_set in reports.items():
        if label == baseline:
            continue
        cells = "".join(
            f"{per_set[s.name]['paired']['difference']:+13.3f} ({figure(per_set[s.name]['paired']['se'], '.3f')}"
            f"/{figure(per_set[s.name]['paired']['se_hac'], '.3f')})" for s in sets
        )
        sm = paired_summary(per_set)
        lines.append(f"{label:{width}}{cells}{sm['mean_difference']:+9.3f}{figure(sm['se'], '.3f'):>7}"
                     f"{figure(sm['se_hac'], '.3f'):>7}"
                     f"{sm['positive']:>4}/{sm['sets']}")
    return "\n".join(lines)


def format_test(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The test table of one configuration: per set, ensemble vs best agent, both conditions."""
    from ensemble_trader.backtest.report import figure

    lines = [
        f"{'set':22}{'ens SR':>8}{'best agent':>24}{'goal':>7}{'SR':>5}{'margin':>8}{'s.e.':>6}{'HAC':>6}{'ens DD':>8}"
        f"{'best DD':>9}{'DD':>5}{'B&H SR':>8}{'regret':>8}"
    ]
    for name, r in results.items():
        t = r["target"]
        best = f"{t['best_agent']} {t['best_sharpe']:.2f}"
        lines.append(
            f"{name:22}{t['ensemble_sharpe']:8.2f}{best:>24}{t['sharpe_goal']:7.2f}"
            f"{'met' if t['sharpe_met'] else 'no':>5}{margin(t):+8.2f}{figure(t['margin_se'], '.2f'):>6}"
            f"{figure(t.get('margin_se_hac', float('nan')), '.2f'):>6}{t['ensemble_max_drawdown']:8.1%}"
            f"{t['best_max_drawdown']:9.1%}{'met' if t['drawdown_met'] else 'no':>5}"
            f"{r['buy_and_hold']['overall']['sharpe']:8.2f}{r['regret']['overall']:8.1f}"
        )
    return "\n".join(lines)


# ---- what the models were fitted on ---------------------------------------------------------
# One rule with ``ensemble-trader backtest``'s in-sample report: ensemble_trader.domain.fitted.


def agent_windows(models: Path | None) -> tuple[list[FittedWindow], str]:
    """The train and validation windows of an agent set (manifest ``training``, per data spec;
    :func:`ensemble_trader.domain.fitted.agent_windows`) and its version."""
    from ensemble_trader.domain.agents import AGENT_NAMES, default_models_dir
    from ensemble_trader.domain.errors import ModelArtifactError

    folder = Path(models) if models is not None else default_models_dir()
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"agent set {folder}: cannot read manifest.json: {exc}") from None
    version = str(manifest.get("version", folder))
    names = [n for n in AGENT_NAMES if n in (manifest.get("agents") or {})]
    return fitted.agent_windows(manifest.get("training") or {}, version, names), version


def regime_windows(model: Any) -> list[FittedWindow]:
    """The training windows of a regime model (:func:`ensemble_trader.domain.fitted.regime_windows`):
    by seed for its synthetic ``training_data``, by date (``training_window``) for the rest."""
    return fitted.regime_windows(model.info, model.version)


def _first_bar(spec: str) -> np.datetime64:
    """The first bar of a data spec's series (the earliest, for a file of several symbols)."""
    from ensemble_trader.marketdata import load_bars

    return min(s.timestamp[0] for s in load_bars(spec) if len(s))


def overlaps(sets: Sequence[EvalSet], windows: Sequence[FittedWindow], report: bool) -> list[str]:
    """Why each evaluated set would score a model on data it learned from (empty: none would).

    The rule is :func:`ensemble_trader.domain.fitted.find_overlaps`, as in the backtest's report.
    A set of real bars is evaluated on its bars in [start, end) — from the series' first bar when
    it gives no ``start`` — and a real fitted window of any series that overlaps it is refused.
    One that ends before the start is not, even on the last bar before it (the committed agents'
    validation window ends 2014-12-30, their test window begins 2014-12-31, the last bar before the
    test sets' 2015-01-01: that bar only warms up, and its close is the base of no evaluated
    return). A synthetic set is refused when a model learned from a series of the same seed,
    under any preset (the generator draws a path's shocks from its seed alone). A window the
    manifest does not record is refused too (it cannot be checked). The agents' validation
    windows count on the report splits only: the validation split is, by the protocol, the
    agents' own validation window."""
    from ensemble_trader.backtest.provenance import SHARED_SEED
    from ensemble_trader.domain.bars import parse_datetime64

    problems = []
    for s in sets:
        real = fitted.data_kind(s.spec) != "synthetic"
        first = parse_datetime64(s.start) if s.start is not None else (_first_bar(s.spec) if real else None)
        last = parse_datetime64(s.end) - np.timedelta64(1, "ns") if s.end is not None else None
        for found in fitted.find_overlaps(s.spec, first, last, windows, selected=report):
            w = found.window
            verb = "selected on" if w.selected else "fitted on"
            if found.by == "seed":
                problems.append(f"{w.model} was {verb} {w.data} ({w.part}), a synthetic series of seed {w.seed}, "
                                f"the seed of the evaluated set {s.name!r} ({s.spec}): {SHARED_SEED}")
            elif found.by == "date":
                problems.append(f"{w.model} was {verb} {w.data} {w.first[:10]} → {w.last[:10]} ({w.part}), which "
                                f"overlaps the evaluated set {s.name!r} ({s.start or 'its first bar'} → "
                                f"{s.end or 'its last bar'}; overlap {found.first[:10]} → {found.last[:10]})")
            else:
                problems.append(f"{w.model} records no {w.part} window of {w.data} (it learned from it): the "
                                f"evaluated set {s.name!r} ({s.spec}) cannot be checked against it")
    return problems


def learners_warm_up(spec: str, start: str) -> tuple[np.datetime64, np.datetime64] | None:
    """The first and last bar the learners warm up on before a set's window that starts at
    ``start`` (:func:`ensemble_trader.backtest.provenance.warm_up_span`: from the first bar whose
    features are ready to the bar before the window's first ready bar at or after ``start``, as
    :func:`~ensemble_trader.backtest.ensemble.first_index` places it); None when the learners
    learn nothing before the window, or no bar of the series is evaluated."""
    from ensemble_trader.backtest.provenance import warm_up_span
    from ensemble_trader.domain.bars import parse_datetime64
    from ensemble_trader.domain.features import compute_features
    from ensemble_trader.marketdata import load_bars

    series = load_bars(spec)[0]  # the series evaluate_candidates runs
    timestamps = np.asarray(series.timestamp)
    ready = compute_features(series).ready
    evaluated = np.flatnonzero(ready & (timestamps >= parse_datetime64(start)))
    if evaluated.size == 0:
        return None
    return warm_up_span(timestamps, ready, int(evaluated[0]))


def warm_up_overlaps(sets: Sequence[EvalSet], windows: Sequence[FittedWindow]) -> list[str]:
    """The fitted windows each real set's warm-up meets by date, in words (empty: none does).

    Not a refusal, as :func:`overlaps` is: the bars before a set's ``start`` only warm up the
    features, the filter and the learners, and nothing after the start is seen. The learners
    learn from the first bar whose features are ready (:func:`learners_warm_up`; bar 172 of a
    series, 1999-09-09 on the indexes). But on the index sets that warm-up covers the agents' own
    training years (and, before the test sets, their validation years), where they do better
    than they will out of sample: the learners start the window trusting the agents that fit
    those years best, so the set's figures depend on it (the backtest's report says the same,
    :func:`ensemble_trader.backtest.provenance.describe_warm_up`). A synthetic set has no
    warm-up apart from its seed, which :func:`overlaps` checks."""
    notes = []
    for s in sets:
        if fitted.data_kind(s.spec) == "synthetic" or s.start is None:
            continue
        span = learners_warm_up(s.spec, s.start)
        if span is None:
            continue
        first, last = span
        met = [found for found in fitted.find_overlaps(s.spec, first, last, windows) if found.by == "date"]
        if met:
            listed = "; ".join(f"{f.window.model} {f.window.part} window of {f.window.data} "
                               f"({f.first[:10]} → {f.last[:10]})" for f in met)
            notes.append(f"the learners of the set {s.name!r} are warmed up on {s.spec} from "
                         f"{np.datetime64(first, 'D')} (its first bar whose features are ready) to "
                         f"{np.datetime64(last, 'D')} (the last before its window's start, {s.start}), which covers "
                         f"{listed}: its figures depend on that warm-up")
    return notes


def fitted_windows(models: Path | None, regime_model: Path | None) -> tuple[list[FittedWindow], str]:
    """The fitted windows of the agent set and the regime model a run scores with (the committed
    ones for None), and the regime model's version."""
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.runtime.settings import Settings

    regime = RegimeModel.load(regime_model or Settings().models_dir / "regime")
    agents, _ = agent_windows(models)
    return agents + regime_windows(regime), regime.version


def warm_up_notes(sets: Sequence[EvalSet], models: Path | None, regime_model: Path | None) -> list[str]:
    """:func:`warm_up_overlaps` for the agent set and the regime model a run scores with."""
    return warm_up_overlaps(sets, fitted_windows(models, regime_model)[0])


def check_overlap(sets: Sequence[EvalSet], split: str, models: Path | None, regime_model: Path | None,
                  allow: bool) -> tuple[str | None, str]:
    """The refusal text when the agent set or the regime model learned from an evaluated window,
    or records no window for data it learned from (:func:`overlaps`; None: nothing overlaps, or
    ``allow`` — then every overlap is printed as a warning), and the regime model's version. The
    fitted windows a set's warm-up meets are reported, not refused (:func:`warm_up_notes`)."""
    windows, regime_version = fitted_windows(models, regime_model)
    problems = overlaps(sets, windows, report=split in REPORT_SPLITS)
    if not problems:
        return None, regime_version
    if allow:
        for problem in problems:
            print(f"warning: --allow-overlap: {problem}; its scores there are in-sample", file=sys.stderr)
        return None, regime_version
    lines = "\n  ".join(problems)
    return (f"the {split} split would score models on data they learned from:\n  {lines}\n"
            "use models fitted before the evaluated windows (--models, --regime-model), or pass --allow-overlap "
            "to evaluate them anyway (the scores are then in-sample)"), regime_version


# ---- running ------------------------------------------------------------------------------------


def evaluate_candidates(
    sets: Sequence[EvalSet],
    candidates: Mapping[str, Mapping[str, Any]],
    *,
    models: Path | None = None,
    regime_model: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    img_dir: Path | None = None,
    paired: str | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """Full ``evaluate()`` reports, ``{candidate: {set name: report}}``, and the agent set version.

    With ``img_dir`` (one candidate), the report plots of the S&P 500 set go there as
    ``meta_backtest_sp500_{equity,weights,drawdown}.png`` (the figures of docs/meta-agent.md).
    With ``paired`` (a candidate label), every other candidate's report gains ``paired``: its
    Sharpe minus the baseline's on the same series and the standard error of that difference,
    period by period (:func:`~ensemble_trader.backtest.metrics.sharpe_margin_se` with c = 1) —
    far smaller than the error of either Sharpe ratio, because the two configurations hold
    nearly the same positions."""
    from ensemble_trader.backtest.engine import CostModel
    from ensemble_trader.backtest.ensemble import ensemble_net_returns, evaluate, run_meta, run_pipeline
    from ensemble_trader.backtest.metrics import sharpe_margin_se, sharpe_margin_se_hac
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.domain.meta_agent import MetaAgentConfig
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.marketdata import load_bars
    from ensemble_trader.runtime.settings import Settings

    for label, options in candidates.items():
        check_candidate(label, options)
    settings = Settings()
    costs = CostModel()
    pool = AgentPool.load(models)
    regime = RegimeStep(RegimeModel.load(regime_model or settings.models_dir / "regime"))
    configs = {
        label: MetaAgentConfig.create(
            **({"cost_bps": costs.cost_bps + costs.slippage_bps, "random_state": seed} | dict(options))
        )
        for label, options in candidates.items()
    }
    if paired is not None and paired not in configs:
        raise ValueError(f"the paired baseline {paired!r} is not among the candidates")
    reports: dict[str, dict[str, Any]] = {label: {} for label in configs}
    bar = tqdm(total=len(sets) * (1 + len(configs)), desc="select", unit="run", disable=not progress)
    for s in sets:
        series = load_bars(s.spec)[0]
        if s.end is not None:
            series = series.between(None, s.end)  # every stage is causal: the same as evaluating to `end`
        bar.set_postfix_str(f"{s.name}: pipeline")
        pipeline = run_pipeline(series, pool, regime)
        bar.update()
        nets = {}
        for label, config in configs.items():
            bar.set_postfix_str(f"{s.name}: {label[:30]}")
            run = run_meta(pipeline, config)
            reports[label][s.name] = evaluate(run, costs, s.start, s.end)
            if paired is not None:
                nets[label] = ensemble_net_returns(run, costs, s.start, s.end)
            if img_dir is not None and s.spec == "arch:sp500":
                write_figures(run, reports[label][s.name], costs, img_dir)
            bar.update()
        if paired is not None:
            base_net, ppy = nets[paired]
            base_sharpe = reports[paired][s.name]["ensemble"]["overall"]["sharpe"]
            for label in configs:
                if label != paired:
                    reports[label][s.name]["paired"] = {
                        "baseline": paired,
                        "difference": reports[label][s.name]["ensemble"]["overall"]["sharpe"] - base_sharpe,
                        "se": sharpe_margin_se(nets[label][0], base_net, 1.0, ppy),
                        "se_hac": sharpe_margin_se_hac(nets[label][0], base_net, 1.0, ppy),
                    }
    bar.close()
    return reports, pool.version


def write_figures(run: Any, result: dict[str, Any], costs: Any, img_dir: Path) -> list[Path]:
    """The three plots of the HTML report as PNG files (``meta_backtest_sp500_*.png``), each
    written atomically: a size limit or Ctrl-C leaves the old image, never half of a new one."""
    import base64

    from ensemble_trader.backtest import report
    from ensemble_trader.marketdata import atomic_writer

    i0 = int(result["run"]["start_index"])
    pngs = {
        "equity": report.plot_equity(run, costs, i0),
        "weights": report.plot_regimes_and_weights(run, i0),
        "drawdown": report.plot_drawdowns_and_regret(run, costs, i0, result["target"]["best_agent"]),
    }
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in pngs.items():
        path = img_dir / f"meta_backtest_sp500_{name}.png"
        with atomic_writer(path, binary=True) as handle:
            handle.write(base64.b64decode(data))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Bad arguments (an unknown or invalid candidate, a missing model folder, an --img-dir that
    cannot be written) and models that learned from an evaluated window (:func:`check_overlap`;
    ``--allow-overlap`` runs anyway, with warnings) are usage errors (exit 2) before any work; errors are one line (exit 1),
    Ctrl-C exit 130, as ``ensemble-trader`` (:func:`ensemble_trader.cli.run_main`)."""
    from ensemble_trader.cli import run_main

    return run_main(_build_parser, argv, prog="python -m training.meta.select")


def _build_parser() -> argparse.ArgumentParser:
    from ensemble_trader.cli import existing_folder, output_folder, plain_help, seed

    parser = argparse.ArgumentParser(
        prog="python -m training.meta.select", description=plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--candidates", nargs="+", default=None,
                        help="candidate names or JSON objects of MetaAgentConfig options (default: every named one)")
    parser.add_argument("--split", choices=tuple(SPLITS), default="validation",
                        help="validation: rank candidates; confirm: rank them on more synthetic validation "
                        "series; test: report ONE configuration")
    parser.add_argument("--models", type=existing_folder, default=None, help="agent set folder (default: the committed set)")
    parser.add_argument("--regime-model", type=existing_folder, default=None, help="regime model folder (default: committed)")
    parser.add_argument("--seed", type=seed, default=0, help="random_state of the learners")
    parser.add_argument("--img-dir", type=output_folder, default=None,
                        help="with --split test: write the S&P 500 report plots here (docs/img)")
    parser.add_argument("--paired", default=None, metavar="CANDIDATE",
                        help="also compare every candidate with this one period by period on the same series "
                        "(Sharpe difference and its standard error)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="evaluate even when the agent set or the regime model learned from an evaluated window "
                        "or synthetic seed (refused otherwise); prints a warning per overlap")
    parser.set_defaults(func=lambda args: _run(parser, args))
    return parser


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ensemble_trader.backtest.report import figure, json_text
    from ensemble_trader.domain.errors import EnsembleTraderError
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

    try:
        candidates = parse_candidates(args.candidates or (["default"] if args.split in REPORT_SPLITS else None))
        for label, options in candidates.items():  # as evaluate_candidates builds them, before any work
            try:
                MetaAgentConfig.create(**({"cost_bps": 3.0, "random_state": args.seed} | dict(options)))
            except (EnsembleTraderError, TypeError, ValueError) as exc:
                raise ValueError(f"--candidates {label}: {exc}") from None
    except ValueError as exc:
        parser.error(str(exc))
    if args.split in REPORT_SPLITS and len(candidates) != 1:
        parser.error(f"--split {args.split} reports exactly one configuration: choose it on validation first")
    if args.img_dir is not None and args.split != "test":
        parser.error("--img-dir goes with --split test (the figures of the reported configuration)")
    if args.paired is not None and args.paired not in candidates:
        parser.error(f"--paired {args.paired!r} must be one of the candidates")
    sets = SPLITS[args.split]
    refusal, regime_version = check_overlap(sets, args.split, args.models, args.regime_model, args.allow_overlap)
    if refusal is not None:
        parser.error(refusal)
    warm_up = warm_up_notes(sets, args.models, args.regime_model)
    for note in warm_up:  # reported, not refused: the warm-up sees nothing of the window
        print(f"note: {note}", file=sys.stderr)
    reports, version = evaluate_candidates(
        sets, candidates, models=args.models, regime_model=args.regime_model, seed=args.seed,
        progress=sys.stderr.isatty() or not args.json, img_dir=args.img_dir, paired=args.paired,
    )
    scores = {
        label: {
            "options": candidates[label],
            "sets": {name: r["target"] for name, r in per_set.items()},
            "summary": summarise({name: r["target"] for name, r in per_set.items()}),
        }
        for label, per_set in reports.items()
    }
    if args.paired is not None:
        for label, per_set in reports.items():
            if label != args.paired:
                scores[label]["paired"] = paired_summary(per_set) | {"baseline": args.paired}
    if args.json:
        out: dict[str, Any] = {"split": args.split, "agent_version": version, "regime_version": regime_version,
                               "candidates": scores, "warm_up_notes": warm_up}
        if args.split == "test":
            (label,) = reports
            out["reports"] = reports[label]
        print(json_text(out, indent=2, sort_keys=True))  # a figure that cannot be given (NaN) as null
    elif args.split == "test":
        (label,) = reports
        print(f"test split, agent set {version}, regime model {regime_version}, configuration {label}: "
              f"{json.dumps(candidates[label])}")
        print(format_test(reports[label]))
        summary = scores[label]["summary"]
        print(f"mean margin {summary['mean_margin']:+.3f} (standard error {figure(summary['mean_margin_se'], '.3f')})")
    else:
        print(f"{args.split} split, agent set {version}, regime model {regime_version}")
        print(format_validation(scores, sets))
        if args.paired is not None:
            print(format_paired(reports, args.paired, sets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
