"""What the offline models were fitted on, and whether an evaluated window overlaps it.

One rule for every tool that scores the agents or the regime model: ``ensemble-trader backtest``
(the report's ``in_sample``) and ``training.meta.select`` / ``training.meta.bounds`` (which refuse
before any work). The meta-agent learns online, from past bars only, and is out of sample anywhere.

**Fitted windows** (:class:`FittedWindow`) come from the manifests: the agent set's
``training.windows`` — per data spec, the ``train`` window of the agents that trained on it
(``training.agent_data``) and the ``validation`` window of those selected on it
(``training.agent_validation_data``; ``selected``: checkpoints were chosen there, nothing fitted) —
and the regime model's ``training_window`` / ``training_data``.

**The rule** (:func:`find_overlaps`), by the kind of data (:func:`data_kind`):

* *synthetic* (``synth:<scenario>[:<seed>...]``): by seed. The generator draws a path from its seed
  alone: every series of that seed — any preset, any length, any symbol — shares its regime path,
  and at equal length its random draws too (daily returns correlated at about 0.8 across presets);
  its dates mean nothing, so a synthetic series never matches real bars by date, nor they it.
* *real* (``arch:``, ``shared:``): by calendar date, **across series**: a real fitted window of any
  series that overlaps the evaluated window (``first <= evaluated last`` and ``last >= evaluated
  first``) counts, whichever series is evaluated. The indexes move together and markets share
  shocks; the agents' trainer cuts every real series at the same calendar dates for that reason,
  so no series' training window reaches another's test window. (A model fitted on BTC-USD
  2017-2019 is in sample on S&P 500 2015-2018.)
* *file* (a bars CSV path): its provenance is unknown — the file's bars are taken as real and
  compared by date with every real fitted window (a CSV exported from a synthetic spec can
  therefore neither be recognised as its seed nor be told from real bars of the same dates). A
  model fitted on a file is likewise taken as fitted on real bars of the file's dates.

A manifest that records no window for data a model learned from gives an *unrecorded* window
(``recorded=False``): nothing can be said about it, and :func:`find_overlaps` reports it against
every real or file window (and every window when even the data is unknown).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ensemble_trader.domain.bars import parse_datetime64
from ensemble_trader.domain.errors import DataError

Kind = Literal["synthetic", "real", "file"]

_SYNTH = re.compile(r"synth:([^:]+)(?::([0-9]+)(?::[0-9]+(?::[^:]*)?)?)?")


def synthetic_seed(spec: str) -> int | None:
    """The seed of a ``synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]`` spec (0 when it names none,
    as the loaders read it); None for any other spec or a malformed one."""
    match = _SYNTH.fullmatch(str(spec))
    if match is None:
        return None
    return int(match.group(2)) if match.group(2) is not None else 0


def data_kind(spec: str) -> Kind:
    """``synthetic`` (a well-formed ``synth:`` spec), ``real`` (``arch:``, ``shared:``) or ``file``
    (anything else: a bars CSV path, whose bars are of unknown provenance)."""
    if synthetic_seed(spec) is not None:
        return "synthetic"
    kind, sep, _ = str(spec).partition(":")
    return "real" if sep and kind in ("arch", "shared") else "file"


@dataclass(frozen=True)
class FittedWindow:
    """A stretch of data a model learned from, as its manifest records it.

    ``model`` names it in messages (``agent set <version>`` / ``regime model <version>``);
    ``kind`` is ``agents`` or ``regime``; ``data`` the data spec (or, for a regime model that names
    no spec, the symbol); ``part`` ``train`` / ``validation`` (agents) or ``training`` (regime);
    ``first`` / ``last`` the first and last bar (ISO text; None when not recorded); ``seed`` the
    seed of a synthetic series; ``selected`` marks the agents' validation windows; ``agents`` the
    agents that used the window; ``recorded=False`` a window the manifest does not record."""

    model: str
    data: str
    part: str
    first: str | None = None
    last: str | None = None
    seed: int | None = None
    selected: bool = False
    kind: str = "agents"
    version: str = ""
    agents: tuple[str, ...] = ()
    recorded: bool = True


@dataclass(frozen=True)
class Overlap:
    """A fitted window the evaluated one meets: ``by`` ``seed`` (same synthetic seed), ``date``
    (``first`` / ``last``: the overlap, ISO text) or ``unrecorded`` (the window is not recorded:
    cannot be checked)."""

    window: FittedWindow
    by: Literal["seed", "date", "unrecorded"]
    first: str | None = None
    last: str | None = None


def _iso(value: np.datetime64) -> str:
    return str(np.datetime64(value, "s"))


def _instant(value: Any) -> np.datetime64 | None:
    """A recorded time (ISO text with or without an offset, or a datetime64) or None."""
    if value is None:
        return None
    try:
        return parse_datetime64(value if isinstance(value, np.datetime64) else str(value))
    except DataError:
        return None


def _dated(model: str, data: str, part: str, window: Any, **fields: Any) -> FittedWindow:
    """A window recorded as ``[first, last]``; unrecorded when either end is missing or unreadable."""
    pair = list(window) if isinstance(window, (list, tuple)) else []
    first, last = (_instant(pair[0]), _instant(pair[-1])) if pair else (None, None)
    if first is None or last is None:
        return FittedWindow(model, data, part, recorded=False, **fields)
    return FittedWindow(model, data, part, _iso(first), _iso(last), **fields)


def agent_windows(training: Mapping[str, Any], version: str, names: Sequence[str]) -> list[FittedWindow]:
    """The train and validation windows of an agent set (its manifest's ``training``), one per
    data spec and part, each naming the agents that used it.

    An agent trained on the specs of ``agent_data`` (default: ``data``) and was selected on those
    of ``agent_validation_data`` (default: ``validation_data``, else ``data``). A separate validation
    source recorded whole as ``train`` (older manifests) is a validation window. A spec without a
    recorded window is a synthetic series' seed window (its dates do not matter) or, real, an
    unrecorded one; a manifest with neither windows nor data gives one unrecorded window. Without
    ``data``, the specs of ``windows`` (less ``validation_data``) are the training data; without
    ``names``, the agents ``agent_data`` names (or one, ``all``)."""
    model, fields = f"agent set {version}", {"kind": "agents", "version": version}
    windows = training.get("windows") or {}
    validation_data = [str(d) for d in training.get("validation_data") or ()]
    data = [str(d) for d in training.get("data") or ()] or [s for s in windows if s not in validation_data]
    trained_on = training.get("agent_data") or {}
    selected_on = training.get("agent_validation_data") or {}
    names = tuple(names) or tuple(dict.fromkeys([*trained_on, *selected_on])) or ("all",)
    specs = list(dict.fromkeys([*data, *validation_data, *windows]))
    if not specs:
        return [FittedWindow(model, "its training data", "train", recorded=False, agents=tuple(names), **fields)]
    out: list[FittedWindow] = []
    for spec in specs:
        parts = windows.get(spec) if isinstance(windows.get(spec), Mapping) else {}
        trained = tuple(n for n in names if spec in trained_on.get(n, data))
        selected = tuple(n for n in names if spec in selected_on.get(n, validation_data or data))
        seed = synthetic_seed(spec)
        for part, who, key in (("train", trained, "train"), ("validation", selected, "validation")):
            if part == "validation" and "validation" not in parts and not trained and "train" in parts:
                key = "train"  # a separate validation source, recorded whole
            if not who or (parts and key not in parts):
                continue  # nobody used it, or the manifest records the spec without this part
            extra = {**fields, "agents": who, "selected": part == "validation", "seed": seed}
            if key in parts:
                window = _dated(model, spec, part, parts[key], **extra)
                if seed is not None and not window.recorded:
                    window = FittedWindow(model, spec, part, **extra)
                out.append(window)
            elif seed is not None:
                out.append(FittedWindow(model, spec, part, **extra))
            else:
                out.append(FittedWindow(model, spec, part, recorded=False, **extra))
    return out


WINDOW_FIELDS = ("training_data", "training_window", "symbols")
"""The manifest fields that say what a regime model was fitted on (:func:`regime_windows`)."""


def inherited_windows(info: Mapping[str, Any], version: str) -> list[dict[str, Any]]:
    """What a refit of the model ``version`` (manifest ``info``) inherits for its
    ``inherited_windows``: that model's own window fields (with ``"version": version``), then the
    windows it inherited itself. A refit keeps its ancestor's standardisation, log floor and
    (for the states its rows hardly visit) parameters, so the ancestor's data shaped it too. An
    ancestor refit whose manifest predates ``inherited_windows`` gives ``{"version": <the model
    it was refit from>}`` alone: that window is not recorded."""
    own = {"version": version, **{k: info[k] for k in WINDOW_FIELDS if k in info}}
    earlier = info.get("inherited_windows")
    if not isinstance(earlier, list):
        earlier = [{"version": str(info["refit_of"])}] if info.get("refit_of") else []
    return [own, *earlier]


def regime_windows(info: Mapping[str, Any], version: str) -> list[FittedWindow]:
    """The training windows of a regime model (its manifest's descriptive fields).

    ``training_data`` (the specs or files it was fitted on, when recorded) decides the kind: a
    synthetic spec gives its seed window. The dated ``training_window`` entries (``{"symbol",
    "start", "end"}``, one per fitted series, in the order of the data) are paired with the specs
    when there are as many; otherwise every dated entry counts (a conservative reading: a
    synthetic series' entry may then flag real dates). The refit job's ``[first, last]`` with
    ``symbols`` is one dated window. Nothing recorded: one unrecorded window.

    A refit's ``inherited_windows`` (:func:`inherited_windows`: the models it descends from,
    newest first) add each of those models' windows, named ``regime model <version> (refit of
    <ancestor>)``. A refit whose manifest predates that field (``refit_of`` without it) adds one
    unrecorded window for the model it was refit from."""
    out = _own_regime_windows(info, f"regime model {version}", version)
    inherited = info.get("inherited_windows")
    if isinstance(inherited, list):
        for item in inherited:
            entry = item if isinstance(item, Mapping) else {}
            ancestor = str(entry.get("version") or "?")
            out.extend(_own_regime_windows(entry, f"regime model {version} (refit of {ancestor})", version))
    elif info.get("refit_of"):
        ancestor = str(info["refit_of"])
        out.append(FittedWindow(f"regime model {version} (refit of {ancestor})", f"the training data of {ancestor}",
                                "training", recorded=False, kind="regime", version=version))
    return out


def _own_regime_windows(info: Mapping[str, Any], model: str, version: str) -> list[FittedWindow]:
    """The windows one manifest (or one inherited entry) records itself (:func:`regime_windows`)."""
    fields = {"kind": "regime", "version": version}
    data = [str(d) for d in info.get("training_data") or ()]
    raw = info.get("training_window") or []
    out: list[FittedWindow] = [FittedWindow(model, d, "training", seed=synthetic_seed(d), **fields)
                               for d in data if synthetic_seed(d) is not None]
    real = [d for d in data if synthetic_seed(d) is None]
    if data and not real:
        return out
    if raw and all(isinstance(w, Mapping) for w in raw):
        paired = len(raw) == len(data)
        for i, w in enumerate(raw):
            if paired and synthetic_seed(data[i]) is not None:
                continue
            name = data[i] if paired else str(w.get("symbol", "?"))
            out.append(_dated(model, name, "training", [w.get("start"), w.get("end")], **fields))
    elif len(raw) == 2 and not any(isinstance(w, Mapping) for w in raw):  # the refit job's [first, last]
        symbols = info.get("symbols") or []
        name = ", ".join(map(str, symbols)) if symbols else "its history"
        out.append(_dated(model, name, "training", raw, **fields))
    else:
        out.append(FittedWindow(model, ", ".join(real) or "its training data", "training", recorded=False,
                                **fields))
    return out


def find_overlaps(
    data: str,
    first: np.datetime64 | str | None,
    last: np.datetime64 | str | None,
    windows: Sequence[FittedWindow],
    *,
    selected: bool = True,
) -> list[Overlap]:
    """The fitted windows the evaluated window of ``data`` (a data spec or a file) meets.

    ``first`` / ``last`` are its first and last evaluated bar (None: unbounded on that side); a
    synthetic spec is matched by seed and its dates are ignored. ``selected=False`` leaves out the
    agents' validation windows. See the module's docstring for the rule."""
    kind = data_kind(data)
    seed = synthetic_seed(data)
    lo = None if first is None else parse_datetime64(first)
    hi = None if last is None else parse_datetime64(last)
    found: list[Overlap] = []
    for w in windows:
        if w.selected and not selected:
            continue
        if not w.recorded:
            if kind != "synthetic" or data_kind(w.data) != "real":
                found.append(Overlap(w, "unrecorded"))
            continue
        if w.seed is not None:
            if kind == "synthetic" and w.seed == seed:
                found.append(Overlap(w, "seed"))
            continue
        if kind == "synthetic" or w.first is None or w.last is None:
            continue
        w_first, w_last = parse_datetime64(w.first), parse_datetime64(w.last)
        start = w_first if lo is None else max(lo, w_first)
        end = w_last if hi is None else min(hi, w_last)
        if start <= end:
            found.append(Overlap(w, "date", _iso(start), _iso(end)))
    return found
