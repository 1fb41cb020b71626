"""Historical validation on real bars: S&P 500 daily (arch, 1999-2018) and BTC-USD hourly.

The detector labels the bars causally (:func:`label_series`: online features, forward filter,
transition rule), so every label uses only the bars up to its own. For each known episode we
report the first day the detector reported one of the expected regimes on or after the episode
began (and how many trading days / bars that took), and the share of the episode's bars so
labelled. Plots with regime shading go to ``docs/img/regime_*.png``.

S&P 500 uses the committed default model, trained on 1999-2006: the 2000-02 bear market lies
inside its training window (the labels are still causal), every later episode is out of sample.
BTC-USD uses a model fitted on its first 12,000 hourly bars (2017-07-01 11:00 to 2018-11-13 10:00)
with the same hyperparameters, since hourly crypto volatility has another scale than daily index
volatility: the February crash, the quiet range and most of the 2018 bear market lie inside that
window (labels still causal), the November 2018 capitulation and 2019 are out of sample.

An episode's date-only end includes that whole day (intraday bars up to 23:59:59).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.models import REGIMES, Regime
from ensemble_trader.domain.regime import Labels, RegimeDetector, RegimeModel, label_series

COLORS = {
    Regime.BULL: "#4caf50",
    Regime.BEAR: "#e53935",
    Regime.SIDEWAYS: "#9e9e9e",
    Regime.VOLATILE: "#ff9800",
}
STRESS = (Regime.BEAR, Regime.VOLATILE)


@dataclass(frozen=True)
class Episode:
    name: str
    start: str
    end: str
    expected: tuple[Regime, ...]


SP500_EPISODES = (
    Episode("2000-02 bear market (in training window)", "2000-03-24", "2002-10-09", STRESS),
    Episode("2007-09 bear market", "2007-10-09", "2009-03-09", STRESS),
    Episode("2008 Q4 crash (Lehman)", "2008-09-15", "2008-12-31", (Regime.VOLATILE,)),
    Episode("2011 Aug debt-ceiling / downgrade", "2011-07-25", "2011-10-31", (Regime.VOLATILE,)),
    Episode("2015 Aug devaluation selloff", "2015-08-18", "2015-09-30", (Regime.VOLATILE,)),
    Episode("2018 Feb volatility spike", "2018-01-29", "2018-03-29", (Regime.VOLATILE,)),
    Episode("2018 Q4 selloff", "2018-10-03", "2018-12-24", (Regime.VOLATILE,)),
    Episode("2003-07 calm bull market", "2003-06-01", "2007-02-26", (Regime.BULL, Regime.SIDEWAYS)),
    Episode("2013-17 calm bull market", "2013-01-01", "2017-12-31", (Regime.BULL, Regime.SIDEWAYS)),
)

BTC_EPISODES = (
    Episode("2018 bear market", "2018-01-06", "2018-12-15", STRESS),
    Episode("2018 Feb crash", "2018-02-01", "2018-02-10", (Regime.VOLATILE,)),
    Episode("2018 Nov capitulation", "2018-11-14", "2018-11-26", (Regime.VOLATILE,)),
    Episode("2018 Jul-Oct quiet range", "2018-08-15", "2018-10-31", (Regime.SIDEWAYS, Regime.BULL)),
)

BTC_TRAIN_BARS = 12_000


def _in_episode(ts: np.ndarray, ep: Episode) -> np.ndarray:
    """Bars from the episode's start to its end inclusive. A date-only end (``2018-02-10``)
    includes that whole day: intraday bars up to 23:59:59 count (``ts <= 2018-02-10`` stopped at
    midnight and dropped the last day's other 23 hours); an end with a time of day is the last
    bar time included."""
    end = np.datetime64(ep.end)
    unit = np.datetime_data(end.dtype)[0]
    if unit in ("Y", "M", "W", "D"):
        return (ts >= np.datetime64(ep.start)) & (ts < end + np.timedelta64(1, unit))
    return (ts >= np.datetime64(ep.start)) & (ts <= end)


def episode_table(series: BarSeries, labels: Labels, episodes: tuple[Episode, ...]) -> list[dict[str, Any]]:
    """Detection day, delay (bars) and coverage of each episode (its end day included whole)."""
    ts = series.timestamp.astype("datetime64[s]")
    out = []
    for ep in episodes:
        mask = _in_episode(ts, ep)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        expected = [REGIMES.index(r) for r in ep.expected]
        hit = np.isin(labels.regime[idx], expected)
        stress = np.isin(labels.regime[idx], [REGIMES.index(r) for r in STRESS])
        first = int(idx[np.argmax(hit)]) if hit.any() else None
        out.append(
            {
                "episode": ep.name,
                "start": ep.start,
                "end": ep.end,
                "expected": "/".join(r.value for r in ep.expected),
                "detected_on": None if first is None else str(ts[first])[:16].replace("T00:00", ""),
                "delay_bars": None if first is None else int(first - idx[0]),
                "coverage": float(hit.mean()),
                "stress_share": float(stress.mean()),
                "bars": int(idx.size),
            }
        )
    return out


def plot(series: BarSeries, labels: Labels, path: Path, title: str, log_price: bool = True) -> Path:
    """Price with the reported regime as background shading, and the regime probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t = series.timestamp.astype("datetime64[s]").astype("O")
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    ax.plot(t, series.close, color="black", lw=0.7)
    if log_price:
        ax.set_yscale("log")
    regime = labels.regime
    change = np.flatnonzero(np.diff(regime)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(regime)]])
    for s, e in zip(starts, ends, strict=True):
        ax.axvspan(t[s], t[min(e, len(t) - 1)], color=COLORS[REGIMES[regime[s]]], alpha=0.35, lw=0)
    ax.set_title(title)
    ax.legend(handles=[Patch(color=COLORS[r], alpha=0.5, label=r.value) for r in REGIMES], loc="upper left", ncol=4)
    axp.stackplot(t, labels.probabilities.T, colors=[COLORS[r] for r in REGIMES], alpha=0.8)
    axp.set_ylim(0, 1)
    axp.set_ylabel("filtered P(regime)")
    fig.tight_layout()
    from ensemble_trader.marketdata import save_figure

    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def markdown(rows: list[dict[str, Any]], unit: str) -> str:
    lines = [
        f"| episode | from | to | expected | first detected | delay ({unit}) | share so labelled | share BEAR or VOLATILE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delay = "never" if r["delay_bars"] is None else str(r["delay_bars"])
        lines.append(
            f"| {r['episode']} | {r['start']} | {r['end']} | {r['expected']} | {r['detected_on'] or '—'} | "
            f"{delay} | {r['coverage']:.0%} | {r['stress_share']:.0%} |"
        )
    return "\n".join(lines)


def run_history(model_dir: Path, out: Path, progress: bool = False) -> dict[str, Any]:
    """Label S&P 500 (and BTC-USD when the shared data exists), write plots, return the tables.

    ``progress``: draw the BTC model fit's progress bar on stderr (the fit takes minutes; the CLI
    passes whether stderr is a terminal, as ``regime fit`` does)."""
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.marketdata import load_arch, load_shared

    from training.regime.train import fit_model

    model = RegimeModel.load(model_dir)
    spx = load_arch("sp500")
    spx_labels = label_series(RegimeDetector(model), spx)
    spx_rows = episode_table(spx, spx_labels, SP500_EPISODES)
    window = model.info.get("training_window") or []
    trained = f"trained {window[0]['start'][:4]}-{window[-1]['end'][:4]}" if window else "training window unknown"
    plot(spx, spx_labels, out / "regime_sp500.png", f"S&P 500, causal regime labels (model {model.version}, {trained})")
    result: dict[str, Any] = {"sp500": {"model": model.version, "episodes": spx_rows}}
    text = [f"S&P 500 daily, model {model.version}", markdown(spx_rows, "trading days")]
    try:
        btc = load_shared("btcusd_1h")
    except DataError as exc:
        result["btc"] = {"skipped": str(exc)}
        text.append(f"BTC-USD skipped: {exc}")
    else:
        _, btc_model = fit_model([btc[:BTC_TRAIN_BARS]], seed=0, progress=progress)
        btc_labels = label_series(RegimeDetector(btc_model), btc)
        btc_rows = episode_table(btc, btc_labels, BTC_EPISODES)
        plot(btc, btc_labels, out / "regime_btcusd.png", f"BTC-USD hourly, causal regime labels (model fitted on the first {BTC_TRAIN_BARS:,} bars)")
        result["btc"] = {"model": btc_model.version, "episodes": btc_rows}
        text += [f"BTC-USD hourly, model {btc_model.version}", markdown(btc_rows, "hours")]
    result["text"] = "\n\n".join(text)
    return result
