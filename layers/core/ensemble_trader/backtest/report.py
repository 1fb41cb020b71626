"""HTML report of an ensemble backtest: plots (embedded PNG) with the tables beside them.

``write_report(run, result, out_dir)`` writes ``out_dir/report.html`` (self-contained: every plot
is a base64 PNG in the page) and ``out_dir/report.json`` (the same dict the CLI prints with
``--json``; a figure that cannot be given, NaN, is null there and "n/a" in the tables). Plots: equity curves over the detected regimes (shaded, opacity = confidence),
regime probabilities, the meta-agent's weights and leading agent, its position and the scale of the
volatility overlay, drawdowns, cumulative regret.
matplotlib is imported inside the functions (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_trader.backtest.engine import CostModel, asset_returns, strategy_returns
from ensemble_trader.backtest.ensemble import EnsembleRun, as_json, switches_from
from ensemble_trader.backtest.metrics import drawdowns, log_wealth
from ensemble_trader.backtest.provenance import choice_note, describe, describe_warm_up
from ensemble_trader.domain.models import REGIMES
from ensemble_trader.marketdata import write_text_atomic

REGIME_COLOURS = {"BULL": "#2ca02c", "BEAR": "#d62728", "SIDEWAYS": "#7f7f7f", "VOLATILE": "#ff7f0e"}
AGENT_COLOURS = ("#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
METRIC_COLUMNS = (
    ("sharpe", "Sharpe", ".2f"),
    ("sortino", "Sortino", ".2f"),
    ("max_drawdown", "Max DD", ".1%"),
    ("total_return", "Return", ".1%"),
    ("annual_return", "Annual", ".1%"),
    ("annual_vol", "Vol", ".1%"),
    ("win_rate", "Win rate", ".1%"),
    ("turnover", "Turnover/yr", ".1f"),
)
"""(metric, column title, format spec) of the metrics table; a figure not given is "n/a" (:func:`figure`)."""

NOT_GIVEN = "n/a"
"""How a table shows a figure that cannot be given (NaN: :mod:`ensemble_trader.backtest.metrics`)."""


def json_safe(value: Any) -> Any:
    """``value`` with every NaN and infinity as None, for JSON (strict JSON has no NaN): an
    ``annual_return`` beyond a float, the margin's standard errors over fewer than three periods
    (:mod:`ensemble_trader.backtest.metrics`). Dicts and lists are copied; the rest is unchanged.
    Every writer of these figures uses it (``evaluate agents --json``, ``backtest --json``,
    ``report.json``, ``training.meta.select --json``, the ``regime evaluate`` JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)`` (NaN as null), refusing any NaN left."""
    return json.dumps(json_safe(value), allow_nan=False, **options)


FIGURE_WIDTH = 16
"""The longest fixed-point figure :func:`figure` writes; a longer one is written in exponent form."""


def figure(value: float, spec: str, suffix: str = "") -> str:
    """``format(value, spec) + suffix``, or :data:`NOT_GIVEN` when ``value`` is NaN or infinite
    (never 'nan%' or '± nan'). A figure longer than :data:`FIGURE_WIDTH` characters in ``spec``
    is written with 3 significant digits in exponent form, keeping ``spec``'s sign flag and
    percent (one hourly period of +1 % annualised over 8,760 periods a year is an
    ``annual_return`` of 7.2e37: 43 characters as ``.1%``, ``7.17e+39%`` here). Pad the result to a column width
    outside (``f"{figure(v, '.2f'):>8}"`` is ``f"{v:8.2f}"`` for a finite v)."""
    if not math.isfinite(value):
        return NOT_GIVEN
    text = format(value, spec)
    if len(text) > FIGURE_WIDTH:
        percent = spec.endswith("%")
        sign = "+" if "+" in spec else ""
        text = format(value * 100 if percent else value, f"{sign}.2e") + ("%" if percent else "")
    return text + suffix


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _shade_regimes(ax: Any, times: np.ndarray, regimes: np.ndarray, confidence: np.ndarray) -> None:
    """Background spans per run of equal regime, opacity proportional to mean confidence."""
    start = 0
    for i in range(1, len(regimes) + 1):
        if i == len(regimes) or regimes[i] != regimes[start]:
            end = times[min(i, len(times) - 1)]
            alpha = 0.08 + 0.25 * float(np.mean(confidence[start:i]))
            ax.axvspan(times[start], end, color=REGIME_COLOURS.get(regimes[start], "#cccccc"), alpha=alpha, lw=0)
            start = i


def wealth_curves(curves: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """The wealth each series of net returns in ``curves`` compounds to (1 at the start), for the
    equity plots (this report's and ``evaluate agents``'), and whether it is given as log10 wealth.

    Wealth is the product of ``1 + r``, drawn on a log-scale axis. When any curve's wealth is
    beyond a float (log-wealth past ~709.8: 5,000 periods of +20 %), its product reads inf (NaN
    after a later ruin) and would not be drawn from there on; then every curve is given as
    ``log10`` of its wealth instead (True), from
    :func:`~ensemble_trader.backtest.metrics.log_wealth`), for a linear axis labelled so: 400 is
    1e400 times the start, and a ruined curve stops at its ruin (-inf, not drawn, as wealth 0 is
    not drawn on a log-scale axis). Otherwise (False) every curve is the product, bit for bit."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf, or inf * 0 (NaN) at a ruin: checked below
        wealth = {name: np.concatenate(([1.0], np.cumprod(1.0 + r))) for name, r in curves.items()}
    if all(np.all(np.isfinite(w)) for w in wealth.values()):
        return wealth, False
    return {name: log_wealth(r) / math.log(10.0) for name, r in curves.items()}, True


def _curves(run: EnsembleRun, costs: CostModel, i0: int) -> dict[str, np.ndarray]:
    """Net return series of the ensemble, each agent and buy-and-hold over the evaluated window."""
    p = run.pipeline
    r = asset_returns(p.close[i0:])
    prev = i0 - 1
    out = {
        "ensemble": strategy_returns(run.positions[i0:-1], r, costs, run.positions[prev] if prev >= 0 else 0.0)
    }
    for k, name in enumerate(p.agent_names):
        initial = p.agent_targets[prev, k] if prev >= 0 else 0.0
        out[name] = strategy_returns(p.agent_targets[i0:-1, k], r, costs, initial)
    out["buy_and_hold"] = strategy_returns(np.ones_like(r), r, costs)
    return out


def plot_equity(run: EnsembleRun, costs: CostModel, i0: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = run.pipeline
    times = p.timestamp[i0:]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    _shade_regimes(ax, times, p.regimes[i0:], p.confidence[i0:])
    wealth, in_log10 = wealth_curves(_curves(run, costs, i0))
    for name, curve in wealth.items():
        style = {"lw": 2.4, "color": "black"} if name == "ensemble" else {"lw": 1.1}
        if name == "buy_and_hold":
            style = {"lw": 1.1, "color": "#555555", "ls": "--"}
        elif name != "ensemble":
            style["color"] = agent_colour(wealth, name)
        ax.plot(times, curve, label=name, **style)
    if in_log10:  # wealth beyond a float: its log10, on a linear axis (wealth_curves)
        ax.set_ylabel("log10 wealth (wealth beyond a float)")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("wealth (log scale)")
    ax.set_title("Equity curves over the detected regimes (shade opacity = confidence)")
    handles, labels = ax.get_legend_handles_labels()
    import matplotlib.patches as mpatches

    handles += [mpatches.Patch(color=c, alpha=0.3, label=r) for r, c in REGIME_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_regimes_and_weights(run: EnsembleRun, i0: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = run.pipeline
    times = p.timestamp[i0:]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 7), sharex=True, height_ratios=(1.2, 1.4, 1.0))
    probs = p.probabilities[i0:]
    ax1.stackplot(times, probs.T, colors=[REGIME_COLOURS[r.value] for r in REGIMES],
                  labels=[r.value for r in REGIMES], alpha=0.75)
    ax1.plot(times, p.confidence[i0:], color="black", lw=0.8, label="confidence")
    ax1.set_ylabel("regime prob.")
    ax1.set_ylim(0, 1)
    ax1.legend(loc="upper left", fontsize=7, ncol=5)
    ax1.set_title("Regime probabilities, the meta-agent's weights and its position")
    ax2.stackplot(times, run.weights[i0:].T, labels=list(p.agent_names),
                  colors=[agent_colour(p.agent_names, n) for n in p.agent_names], alpha=0.85)
    for s in run.switches:
        ts = np.datetime64(s.timestamp.replace(tzinfo=None), "ns")
        if ts >= times[0]:
            ax2.axvline(ts, color="black", lw=0.4, alpha=0.5)
    ax2.set_ylabel("agent weight")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="upper left", fontsize=7, ncol=4)
    ax3.plot(times, run.positions[i0:], color="black", lw=1.0, label="ensemble position")
    ax3.axhline(0, color="#999999", lw=0.6)
    ax3.set_ylabel("position")
    ax3.legend(loc="upper left", fontsize=7)
    if run.config.vol_target != "none":
        twin = ax3.twinx()
        twin.plot(times, run.vol_scales[i0:], color="#d62728", lw=0.8, alpha=0.8, label="vol-target scale")
        twin.set_ylabel("vol-target scale", color="#d62728")
        twin.set_ylim(0, max(1.05, float(run.vol_scales[i0:].max()) * 1.05))
        twin.legend(loc="upper right", fontsize=7)
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    return _png(fig)


def agent_colour(names: Any, name: str) -> str:
    """The colour of agent ``name`` among ``names`` (the run's agents, in order; other entries of
    :func:`_curves`, the ensemble and buy-and-hold, are skipped), the same in every plot."""
    agents = [n for n in names if n not in ("ensemble", "buy_and_hold")]
    return AGENT_COLOURS[agents.index(name) % len(AGENT_COLOURS)]


def plot_drawdowns_and_regret(run: EnsembleRun, costs: CostModel, i0: int, best: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = run.pipeline
    times = p.timestamp[i0:]
    curves = _curves(run, costs, i0)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
    for name, style in (("ensemble", {"color": "black", "lw": 1.8}),
                        (best, {"color": agent_colour(curves, best), "lw": 1.0}),
                        ("buy_and_hold", {"color": "#555555", "lw": 1.0, "ls": "--"})):
        dd = 0.0 - drawdowns(curves[name])  # a fall below 0; in log space when wealth is beyond a float
        ax1.plot(times, dd, label=f"{name}" + (" (best agent)" if name == best else ""), **style)
    ax1.set_ylabel("drawdown")
    ax1.set_title("Drawdowns, and cumulative regret against the best agent in hindsight")
    ax1.legend(loc="lower left", fontsize=8)
    regret = run.regret_curve(i0)
    units = "net return" if run.config.risk_adjustment == "none" else "risk-adjusted units"
    ax2.plot(times, regret, color="#d62728", lw=1.2, label=f"regret ({units})")
    ax2.axhline(0, color="#999999", lw=0.6)
    ax2.set_ylabel("regret")
    ax2.legend(loc="upper left", fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _png(fig)


def _metrics_table(result: dict[str, Any]) -> str:
    rows = [("ensemble", result["ensemble"]["overall"])]
    rows += [(name, m["overall"]) for name, m in result["agents"].items()]
    rows.append(("buy_and_hold", result["buy_and_hold"]["overall"]))
    best = result["target"]["best_agent"]
    head = "".join(f"<th>{label}</th>" for _, label, _ in METRIC_COLUMNS)
    body = []
    for name, m in rows:
        cls = ' class="ens"' if name == "ensemble" else (' class="best"' if name == best else "")
        cells = "".join(f"<td>{figure(m[key], spec)}</td>" for key, _, spec in METRIC_COLUMNS)
        body.append(f"<tr{cls}><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def _regime_sharpe_table(result: dict[str, Any]) -> str:
    names = ["ensemble", *result["agents"], "buy_and_hold"]
    lookup = {"ensemble": result["ensemble"], "buy_and_hold": result["buy_and_hold"], **result["agents"]}
    regimes = [r.value for r in REGIMES if r.value in result["ensemble"]["by_regime"]]
    head = "".join(f"<th>{r}</th>" for r in regimes)
    body = "".join(
        f"<tr><th>{html.escape(n)}</th>"
        + "".join(f"<td>{figure(lookup[n]['by_regime'].get(r, {}).get('sharpe', math.nan), '.2f')}</td>" for r in regimes)
        + "</tr>"
        for n in names
    )
    return f"<table><tr><th>Sharpe by regime</th>{head}</tr>{body}</table>"


def _regret_table(result: dict[str, Any]) -> str:
    reg = result["regret"]
    rows = "".join(
        f"<tr><th>{r}</th><td>{v['bars']}</td><td>{html.escape(v['best_agent'])}</td><td>{v['regret']:.2f}</td></tr>"
        for r, v in reg["by_regime"].items()
    )
    best = html.escape(str(reg["best_agent"]))
    return (
        "<table><tr><th>regime</th><th>bars</th><th>best agent</th><th>regret</th></tr>"
        f"{rows}<tr class='ens'><th>overall</th><td></td><td>{best}</td><td>{reg['overall']:.2f}</td></tr>"
        f"<tr><th>vs regime oracle</th><td></td><td></td><td>{reg['vs_regime_oracle']:.2f}</td></tr></table>"
        f"<p class='note'>Units: {html.escape(reg['units'])}. Negative = the meta-agent beat that benchmark.</p>"
    )


def _target_table(result: dict[str, Any]) -> str:
    t = result["target"]

    def ok(flag: bool) -> str:
        return "<b class='ok'>met</b>" if flag else "<b class='no'>not met</b>"

    return (
        "<table>"
        f"<tr><th>best single agent (Sharpe)</th><td>{html.escape(t['best_agent'])}: {t['best_sharpe']:.2f}</td></tr>"
        f"<tr><th>goal: best + 0.2·|best|</th><td>{t['sharpe_goal']:.2f}</td></tr>"
        f"<tr><th>ensemble Sharpe</th><td>{t['ensemble_sharpe']:.2f} {ok(t['sharpe_met'])}</td></tr>"
        f"<tr><th>margin over the goal (standard error)</th><td>{t['ensemble_sharpe'] - t['sharpe_goal']:+.2f} "
        f"(± {figure(t['margin_se'], '.2f')})</td></tr>"
        f"<tr><th>max drawdown: ensemble vs best</th><td>{t['ensemble_max_drawdown']:.1%} vs "
        f"{t['best_max_drawdown']:.1%} {ok(t['drawdown_met'])}</td></tr></table>"
        + _breaker_table(result.get("risk"))
    )


def _breaker_table(risk: dict[str, Any] | None) -> str:
    """Where the orders stage's circuit breaker would have acted (the backtest does not apply it)."""
    if not risk:
        return ""
    limits = risk["limits"]

    def at(key: str) -> str:
        return html.escape(risk[key][:16].replace("T", " ")) if risk[key] else "never"

    return (
        "<table>"
        f"<tr><th>drawdown &ge; {limits['drawdown_reduce']:.0%} (reduce-only)</th><td>{at('drawdown_reduce_at')}</td></tr>"
        f"<tr><th>drawdown &ge; {limits['drawdown_halt']:.0%} (halt)</th><td>{at('drawdown_halt_at')}</td></tr>"
        f"<tr><th>days with a loss &ge; {limits['daily_loss_reduce']:.0%}</th><td>{risk['daily_loss_reduce_days']} "
        f"of {risk['days']} (first {at('first_daily_loss_reduce_at')})</td></tr>"
        f"<tr><th>days with a loss &ge; {limits['daily_loss_halt']:.0%}</th><td>{risk['daily_loss_halt_days']}</td></tr>"
        "</table><p class='note'>Where the orders stage's circuit breaker would have acted on this curve, the symbol "
        "taken as the whole account. The backtest ends at the intents and does not apply it.</p>"
    )


def _policies_table(result: dict[str, Any]) -> str:
    """``--compare``: each policy's ensemble on the same pipeline run (empty without it)."""
    policies = result.get("policies")
    if not policies:
        return ""
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{e['ensemble']['sharpe']:.2f}</td>"
        f"<td>{e['ensemble']['max_drawdown']:.1%}</td><td>{e['ensemble']['total_return']:.1%}</td>"
        f"<td>{e['regret']:.2f}</td><td>{e['target']['ensemble_sharpe'] - e['target']['sharpe_goal']:+.2f}</td></tr>"
        for label, e in policies.items()
    )
    return (
        "<h2>Policies on the same run</h2><table><tr><th>policy/context/mode/feedback</th><th>Sharpe</th>"
        f"<th>max DD</th><th>return</th><th>regret</th><th>margin over the goal</th></tr>{rows}</table>"
    )


def _switches_table(run: EnsembleRun, i0: int, limit: int = 25) -> str:
    rows = switches_from(run, i0)
    body = "".join(
        f"<tr><td>{s.timestamp.date().isoformat()}</td><td>{html.escape(s.from_agent)} → "
        f"{html.escape(s.to_agent)}</td><td>{s.regime.value} ({s.confidence:.0%})</td>"
        f"<td>{html.escape(s.reason)}</td></tr>"
        for s in rows[-limit:]
    )
    return (
        f"<p>{len(rows)} switches of the leading agent; the last {min(limit, len(rows))}:</p>"
        f"<table><tr><th>bar</th><th>switch</th><th>regime</th><th>why</th></tr>{body}</table>"
    )


def _explanations(run: EnsembleRun, limit: int = 8) -> str:
    lines = "".join(f"<li><code>{html.escape(i.timestamp.date().isoformat())}</code> "
                    f"{html.escape(i.explanation)}</li>" for i in run.intents[-limit:])
    return f"<ul class='expl'>{lines}</ul>"


def _sample_note(result: dict[str, Any]) -> str:
    """Whether the window is out of sample: for the agents and the regime model as
    ``result["in_sample"]`` says (:func:`provenance.assess`; absent: not checked, nothing claimed),
    with ``result["in_sample_notes"]``: what could not be checked (a file's unknown provenance,
    windows a manifest does not record). The meta-agent learns online, but two more things are
    said apart: the fitted windows its learners' warm-up covers (``warm_up_in_sample``), and the
    sets its default configuration was chosen on that the window meets (``configuration_choice``)."""
    note = "The meta-agent learns online from past bars only."
    found = result.get("in_sample")
    if found is None:
        return note
    caveats = result.get("in_sample_notes") or []
    warmed = result.get("warm_up_in_sample") or []
    choice = result.get("configuration_choice") or {}
    unchecked = "".join(f" Not checked: {html.escape(c)}." for c in caveats)
    if not found and not caveats and not choice.get("sets"):
        text = (f"{note} Out of sample: the window overlaps none of the agents' training or validation "
                "windows, nor the regime model's training window, as their manifests record them, nor the "
                "series the meta-agent's default configuration was chosen on.")
    elif not found:
        text = (f"{note}</p><p class='warn'>The window overlaps none of the fitted windows the manifests "
                f"record.{unchecked}")
    else:
        listed = "; ".join(html.escape(describe(entry)) for entry in found)
        text = (f"{note}</p><p class='warn'><b>In sample for:</b> {listed}. The metrics of these models "
                f"here flatter what they do on data they never saw.{unchecked}")
    if warmed:
        text += (f"</p><p class='warn'><b>Warm-up in sample:</b> "
                 f"{html.escape(describe_warm_up(warmed, bool(found)))}")
    if choice.get("sets"):
        text += (f"</p><p class='warn'><b>Configuration chosen on this data:</b> "
                 f"{html.escape(choice_note(choice['sets'], bool(choice.get('default')), choice.get('differs') or ()))}")
    return text


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
.row{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
.row img{max-width:880px;width:100%;border:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin-bottom:10px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f6f6f6}
tr.ens th,tr.ens td{font-weight:bold;background:#eef5ff}tr.best th{color:#1f77b4}
.ok{color:#2ca02c}.no{color:#d62728}.note{font-size:12px;color:#666}
.expl{font-size:12px}code{font-size:12px}
.warn{background:#fff4e5;border-left:4px solid #ff7f0e;padding:6px 10px}
"""


def render_html(run: EnsembleRun, result: dict[str, Any], costs: CostModel) -> str:
    """The report page as one self-contained HTML string."""
    i0 = int(result["run"]["start_index"])
    info = result["run"]
    best = result["target"]["best_agent"]
    equity = plot_equity(run, costs, i0)
    weights = plot_regimes_and_weights(run, i0)
    drawdowns = plot_drawdowns_and_regret(run, costs, i0, best)
    config = html.escape(json.dumps(info["config"], indent=1))
    title = f"Ensemble backtest — {info['symbol']} — policy {info['policy']}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{info['start'][:10]} → {info['end'][:10]} · {info['periods']} periods · agents {html.escape(info['agent_version'])}
· regime model {html.escape(info['regime_version'])} · costs {info['cost_bps']:.1f} bp per unit traded
· {info['switches']} switches of the leading agent · volatility overlay {html.escape(run.config.vol_target)}
(mean scale {info['vol_scale_mean']:.2f}). {_sample_note(result)}</p>
<h2>Performance</h2>
<div class="row"><img src="data:image/png;base64,{equity}" alt="equity curves">
<div>{_metrics_table(result)}{_target_table(result)}{_regime_sharpe_table(result)}</div></div>
<h2>Regimes, weights and position</h2>
<div class="row"><img src="data:image/png;base64,{weights}" alt="regimes and weights">
<div>{_switches_table(run, i0)}</div></div>
<h2>Drawdowns and regret</h2>
<div class="row"><img src="data:image/png;base64,{drawdowns}" alt="drawdowns and regret">
<div>{_regret_table(result)}</div></div>
{_policies_table(result)}
<h2>Latest decisions</h2>{_explanations(run)}
<h2>Configuration</h2><pre>{config}</pre>
</body></html>"""


def write_report(run: EnsembleRun, result: dict[str, Any], out_dir: str | Path,
                 costs: CostModel | None = None) -> Path:
    """Write ``report.html`` and ``report.json`` into ``out_dir``; return the HTML path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    page = render_html(run, result, costs or CostModel())
    path = folder / "report.html"
    write_text_atomic(path, page)  # each file whole or not replaced (Ctrl-C, full disk)
    write_text_atomic(folder / "report.json", json_text(as_json(result), indent=2, sort_keys=True))
    return path
