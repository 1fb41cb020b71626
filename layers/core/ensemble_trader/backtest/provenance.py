"""Whether a backtest's evaluated window is out of sample for the models it runs.

The meta-agent learns online, from past bars only, so it is out of sample on any window. The
agents and the regime model were fitted offline: their manifests record the windows they were
fitted on — the agent set's per data spec (``training.windows[spec]``: the ``train`` window of
the specs each agent trained on, ``training.agent_data``, and the ``validation`` window of the
specs it was selected on, ``training.agent_validation_data``), the regime model's per symbol
(``training_window``: ``{"symbol", "start", "end"}``; it names no data spec, so a series is
matched by its symbol). :func:`in_sample` lists the fitted windows the evaluated one overlaps:
metrics measured there flatter what those models do on data they never saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PARTS = {"train": "training", "validation": "validation"}


def _instant(value: Any) -> np.datetime64 | None:
    """A recorded time (naive ISO text, as the manifests and the report write them) or None."""
    try:
        instant = np.datetime64(value if isinstance(value, np.datetime64) else str(value), "ns")
    except (ValueError, TypeError):
        return None
    return None if np.isnat(instant) else instant


def _overlap(start: np.datetime64, end: np.datetime64, window: Sequence[Any]) -> tuple[str, str] | None:
    """The overlap of [start, end] with a recorded [first, last] window (ISO strings), or None."""
    if len(window) != 2:
        return None
    first, last = _instant(window[0]), _instant(window[1])
    if first is None or last is None:
        return None
    lo, hi = max(start, first), min(end, last)
    if lo > hi:
        return None
    return str(lo)[:19], str(hi)[:19]


def _agent_windows(training: Mapping[str, Any], names: Sequence[str], spec: str) -> dict[tuple[str, str], list[str]]:
    """``{(part, window key): [agents]}``: which agents were fitted on which window of ``spec``."""
    windows = training.get("windows", {}).get(spec) or {}
    data = list(training.get("data", []))
    validation_data = list(training.get("validation_data", []))
    trained_on = training.get("agent_data") or {}
    selected_on = training.get("agent_validation_data") or {}
    out: dict[tuple[str, str], list[str]] = {}
    for name in names:
        trained = spec in trained_on.get(name, data)
        if trained and "train" in windows:
            out.setdefault(("train", "train"), []).append(name)
        if spec in selected_on.get(name, validation_data or data):
            if "validation" in windows:
                out.setdefault(("validation", "validation"), []).append(name)
            elif not trained and "train" in windows:  # a separate validation source is recorded whole
                out.setdefault(("validation", "train"), []).append(name)
    return out


def in_sample(
    spec: str,
    symbol: str,
    start: str,
    end: str,
    *,
    agents_version: str,
    agent_names: Sequence[str],
    agents_training: Mapping[str, Any],
    regime_version: str,
    regime_info: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The fitted windows that the evaluated window ``[start, end]`` (its first and last bar)
    overlaps: one entry per model and window, ``{"model": "agents" | "regime", "version",
    "part": "train" | "validation", "agents" (agents only), "data": the data spec or symbol,
    "window": [first, last], "overlap": [first, last]}``. Empty: out of sample for every model
    whose manifest records its windows."""
    lo, hi = _instant(start), _instant(end)
    if lo is None or hi is None:
        return []
    found: list[dict[str, Any]] = []
    windows = agents_training.get("windows", {}).get(spec) or {}
    for (part, key), names in _agent_windows(agents_training, agent_names, spec).items():
        overlap = _overlap(lo, hi, windows[key])
        if overlap is not None:
            found.append({"model": "agents", "version": agents_version, "part": part, "agents": names,
                          "data": spec, "window": [str(w)[:19] for w in windows[key]], "overlap": list(overlap)})
    for window in regime_info.get("training_window") or []:
        if not isinstance(window, Mapping) or window.get("symbol") != symbol:
            continue
        overlap = _overlap(lo, hi, [window.get("start"), window.get("end")])
        if overlap is not None:
            found.append({"model": "regime", "version": regime_version, "part": "train", "data": symbol,
                          "window": [str(window["start"])[:19], str(window["end"])[:19]], "overlap": list(overlap)})
    return found


def describe(entry: Mapping[str, Any]) -> str:
    """One entry of :func:`in_sample` in words."""
    first, last = (w[:10] for w in entry["window"])
    lo, hi = (w[:10] for w in entry["overlap"])
    if entry["model"] == "agents":
        names = list(entry["agents"])
        who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        owner = "agents'" if len(names) > 1 else "agent's"
        whose = f"the {who} {owner} {PARTS[entry['part']]} window"
    else:
        whose = "the regime model's training window"
    return f"{whose} of {entry['data']} ({first} → {last}; overlap {lo} → {hi})"
