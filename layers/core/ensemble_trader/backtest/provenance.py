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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble_trader.domain import fitted

PARTS = {"train": "training", "validation": "validation"}


@dataclass(frozen=True)
class Provenance:
    """``in_sample``: the entries of :func:`in_sample`; ``notes``: what could not be checked, in words."""

    in_sample: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def assess(spec: str, start: Any, end: Any, windows: Sequence[fitted.FittedWindow]) -> Provenance:
    """The fitted windows the evaluated window ``[start, end]`` (its first and last bar) of the
    data spec or file ``spec`` meets, and notes on what could not be checked: windows the
    manifests do not record, and — for a file — that its provenance is unknown."""
    found = fitted.find_overlaps(spec, start, end, windows, selected=True)
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
    return Provenance(entries, notes)


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
        return f"{whose} of {entry['data']} (synthetic seed {entry['seed']}, the evaluated series' seed: the same regime path, and at equal length the same draws)"
    first, last = (w[:10] for w in entry["window"])
    lo, hi = (w[:10] for w in entry["overlap"])
    return f"{whose} of {entry['data']} ({first} → {last}; overlap {lo} → {hi})"
