"""Whether a backtest's evaluated window is out of sample for the models it runs.

The meta-agent learns online, from past bars only, so it is out of sample on any window. The
agents and the regime model were fitted offline; their manifests record what on
(:mod:`ensemble_trader.domain.fitted`, the rule ``training.meta.select`` and ``bounds`` refuse
by): a synthetic series matches every fitted series of its seed, whatever the preset, length or
symbol; real bars match, by date, every real window any model was fitted on, of any series; a
bars file's provenance is unknown, so its bars are compared by date with every real fitted
window. Unlike select's validation split, the agents' validation windows always count here.
:func:`assess` lists the fitted windows the evaluated one meets — metrics measured there flatter
what those models do on data they never saw — and what it could not check.

Two more things it says apart from that list. The meta-agent's learners are warmed up on the
bars before the window from the first whose features are ready (:func:`warm_up_span`; before
it they learn nothing): on the indexes that warm-up covers the agents' training (1999-2012) and
validation (2013-14) years, where the agents look better than they will out of sample, so the
learners start the window trusting them more (``warm_up``: the fitted windows the warm-up
meets, by date; the window itself may be out of sample). And the
meta-agent learns online, but its default configuration was chosen by ``training.meta.select``
on the series of :mod:`ensemble_trader.backtest.selection` (``choice``: the sets of the
validation and confirm splits the window meets, by the same rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ensemble_trader.backtest.selection import choice_uses
from ensemble_trader.domain import fitted
from ensemble_trader.domain.errors import DataError

PARTS = {"train": "training", "validation": "validation"}

SHARED_SEED = ("under the same preset the same regime path, and at equal length the same draws; under "
               "another preset a correlated path")
"""What a synthetic series shares with one of the same seed (the generator draws from the seed)."""


@dataclass(frozen=True)
class Provenance:
    """``in_sample``: the entries of :func:`in_sample`; ``notes``: what could not be checked, in words;
    ``warm_up``: the fitted windows the learners' warm-up meets by date (entries as ``in_sample``'s,
    each with ``"warm_up": [first, last]``, the warm-up's bars); ``choice``: the sets the default
    meta-agent configuration was chosen on that the window meets
    (:func:`~ensemble_trader.backtest.selection.choice_uses`)."""

    in_sample: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warm_up: list[dict[str, Any]] = field(default_factory=list)
    choice: list[dict[str, Any]] = field(default_factory=list)


def fitted_windows(
    *,
    agents_version: str,
    agent_names: Sequence[str],
    agents_training: Mapping[str, Any],
    regime_version: str,
    regime_info: Mapping[str, Any],
) -> list[fitted.FittedWindow]:
    """The agent set's and the regime model's fitted windows, as their manifests record them."""
    return (fitted.agent_windows(agents_training, agents_version, agent_names)
            + fitted.regime_windows(regime_info, regime_version))


def _entry(found: fitted.Overlap) -> dict[str, Any]:
    w = found.window
    entry: dict[str, Any] = {"model": w.kind, "version": w.version, "part": "validation" if w.selected else "train"}
    if w.kind == "agents":
        entry["agents"] = list(w.agents)
    entry |= {"data": w.data, "match": found.by, "window": None if w.first is None else [w.first, w.last],
              "overlap": None if found.by != "date" else [found.first, found.last]}
    if found.by == "seed":
        entry["seed"] = w.seed
    return entry


def warm_up_span(timestamps: np.ndarray, ready: np.ndarray, i0: int) -> tuple[Any, Any] | None:
    """The learners' warm-up before an evaluated window that starts at bar ``i0``: the times of
    the first ready bar (``ready``: the features' mask) and of bar ``i0 - 1``; None when no bar
    before ``i0`` is ready.

    The meta-agent draws an arm only on a ready bar and books that decision's reward at the next
    bar (``MetaAgentStep.decide``): on a bar whose features are not ready it draws none, learns
    nothing at the next bar, and its weights stay equal. So the first reward its learners take is
    for the first ready bar's decision, booked at the bar after it, and the last before the
    window is for bar ``i0 - 1``'s, booked at ``i0`` before the window's first decision: the
    warm-up is the bars whose decisions were rewarded before the window. Without ``--start`` the
    window starts at the first ready bar, and there is none."""
    if isinstance(i0, bool) or not isinstance(i0, int | np.integer) or not 0 <= i0 <= len(timestamps):
        raise DataError(f"i0={i0!r}: the window's first bar must be an index of the {len(timestamps)} bars")
    if len(ready) != len(timestamps):
        raise DataError(f"ready has {len(ready)} entries for {len(timestamps)} bars")
    before = np.flatnonzero(np.asarray(ready[:i0], dtype=bool))
    if before.size == 0:
        return None
    return timestamps[int(before[0])], timestamps[int(i0) - 1]


def assess(spec: str, start: Any, end: Any, windows: Sequence[fitted.FittedWindow],
           warm_up: tuple[Any, Any] | None = None) -> Provenance:
    """The fitted windows the evaluated window ``[start, end]`` (its first and last bar) of the
    data spec or file ``spec`` meets, and notes on what could not be checked: windows the
    manifests do not record, and — for a file — that its provenance is unknown. ``warm_up``: the
    first and last bar of the learners' warm-up before the window (:func:`warm_up_span`; None:
    they learned nothing before it); the fitted windows it meets by date are listed apart (a synthetic series' seed matches are
    already in ``in_sample``: they hold for its every bar). ``choice``: the selection sets the
    window meets."""
    found = fitted.find_overlaps(spec, start, end, windows, selected=True)
    warmed = []
    if warm_up is not None:
        first, last = warm_up
        span = [str(np.datetime64(t, "s")) for t in (first, last)]
        warmed = [_entry(f) | {"warm_up": span}
                  for f in fitted.find_overlaps(spec, first, last, windows, selected=True) if f.by == "date"]
    entries = [_entry(f) for f in found if f.by != "unrecorded"]
    notes = []
    for f in found:
        if f.by == "unrecorded":
            w = f.window
            users = f" ({', '.join(w.agents)})" if w.agents else ""
            notes.append(f"the manifest of the {w.model} records no {PARTS.get(w.part, w.part)} window of "
                         f"{w.data}{users}: not checked against it")
    if fitted.data_kind(spec) == "file":
        seeds = sorted({w.seed for w in windows if w.seed is not None})
        notes.append("provenance unknown for a file: its bars were compared by date with every real fitted window"
                     + (f"; whether they are the synthetic series of seed {', '.join(map(str, seeds))} the models "
                        "were fitted on cannot be told" if seeds else ""))
    return Provenance(entries, notes, warmed, choice_uses(spec, start, end))


def in_sample(
    spec: str,
    symbol: str,
    start: Any,
    end: Any,
    *,
    agents_version: str,
    agent_names: Sequence[str],
    agents_training: Mapping[str, Any],
    regime_version: str,
    regime_info: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The fitted windows that the evaluated window ``[start, end]`` (its first and last bar) of
    ``spec`` meets: one entry per model and window, ``{"model": "agents" | "regime", "version",
    "part": "train" | "validation", "agents" (agents only), "data": the data spec (or the symbol of
    a regime model that records no spec), "match": "date" | "seed", "window": [first, last] (None:
    a synthetic series with no recorded window), "overlap": [first, last] (by date; None by seed),
    "seed" (by seed)}``. ``symbol`` is not used: the rule matches data, not names."""
    del symbol
    windows = fitted_windows(agents_version=agents_version, agent_names=agent_names, agents_training=agents_training,
                             regime_version=regime_version, regime_info=regime_info)
    return assess(spec, start, end, windows).in_sample


def _whose(model: str, agents: Sequence[str], part: str) -> str:
    """``the conservative and aggressive agents' training window`` / ``the regime model's ...``."""
    if model != "agents":
        return "the regime model's training window"
    names = list(agents)
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    owner = "agents'" if len(names) > 1 else "agent's"
    return f"the {who} {owner} {PARTS[part]} window"


def describe(entry: Mapping[str, Any]) -> str:
    """One entry of :func:`in_sample` in words."""
    whose = _whose(entry["model"], entry.get("agents", ()), entry["part"])
    if entry.get("match") == "seed":
        return f"{whose} of {entry['data']} (synthetic seed {entry['seed']}, the evaluated series' seed: {SHARED_SEED})"
    first, last = (w[:10] for w in entry["window"])
    lo, hi = (w[:10] for w in entry["overlap"])
    return f"{whose} of {entry['data']} ({first} → {last}; overlap {lo} → {hi})"


def describe_warm_up(entries: Sequence[Mapping[str, Any]], window_in_sample: bool) -> str:
    """The fitted windows the learners' warm-up meets (:attr:`Provenance.warm_up`), in words."""
    first, last = (t[:10] for t in entries[0]["warm_up"])
    listed = "; ".join(describe(e) for e in entries)
    lead = ("The window is in sample (above); besides," if window_in_sample
            else "The window itself is out of sample for the agents and the regime model, but")
    return (f"{lead} the meta-agent's learners were warmed up on the bars from {first} to {last} (from the "
            f"first whose features are ready to the last before the window), which cover {listed}. The fitted models do better there than they will out of sample, so the learners "
            "start the window trusting the agents that fit those years best: the window's figures depend on "
            "that warm-up.")


def describe_choice(entry: Mapping[str, Any]) -> str:
    """One entry of :attr:`Provenance.choice` in words."""
    use = "chosen" if entry["split"] == "validation" else "its ranking checked"
    where = f"the {entry['split']} set {entry['set']!r} ({entry['data']}"
    if entry["match"] == "seed":
        if not entry["same_preset"]:
            same = "under another preset: a correlated path"
        elif "same_prices" not in entry:  # an entry written before same_prices was
            same = "the same regime path, and the same prices only at the same length"
        elif entry["same_prices"]:
            same = "the same preset and length: the same prices"
        else:  # the shocks follow the chain's draws, so another length draws other ones
            same = "the same preset at another length: the same regime path over the shorter's bars, other prices"
        return f"{where}, synthetic seed {entry['seed']}, {same}), where the configuration was {use}"
    lo, hi = (t[:10] if t else "?" for t in entry["overlap"])
    start, end = entry["window"]
    return f"{where} {start} → {end}; overlap {lo} → {hi}), where the configuration was {use}"


def choice_note(entries: Sequence[Mapping[str, Any]], default: bool, differs: Sequence[str] = ()) -> str:
    """Why the window is in sample for the choice of the meta-agent's default configuration
    (``default``: whether the run uses it; ``differs``: the options in which it does not, named
    when given — ``cost_bps``, the reward's cost, among them)."""
    how = f" (it differs in {', '.join(differs)})" if differs else ""
    which = ("This run uses that configuration: its figures here are in sample for that choice." if default
             else f"This run's configuration is not the default{how}; the default's figures here would be in "
                  "sample for that choice.")
    return ("The meta-agent learns online, but its default configuration was chosen by training.meta.select "
            f"on this data: {'; '.join(describe_choice(e) for e in entries)}. {which}")
