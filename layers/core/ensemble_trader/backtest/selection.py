"""The series the meta-agent's configuration is chosen and reported on, and which of them a window meets.

``training.meta.select`` scores candidate configurations on these sets (docs/meta-agent.md §6):
the default ``MetaAgentConfig`` was chosen on the ``validation`` split and its ranking checked on
``confirm``; ``test`` and ``spread`` report the one configuration chosen and never choose. They
live here, in one place, so that ``ensemble-trader backtest`` can tell (:func:`choice_uses`)
when it evaluates a series the default configuration was chosen on: the meta-agent learns
online and is out of sample on any window, but the choice of its configuration is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ensemble_trader.domain import fitted
from ensemble_trader.domain.bars import parse_datetime64
from ensemble_trader.marketdata import parse_synth_spec


@dataclass(frozen=True)
class EvalSet:
    """One evaluation series: a ``load_bars`` spec and the evaluated window [start, end)."""

    name: str
    spec: str
    start: str | None = None
    end: str | None = None


VALIDATION_SETS: tuple[EvalSet, ...] = (
    EvalSet("synth easy 201", "synth:easy:201:2500"),
    EvalSet("synth realistic 202", "synth:realistic:202:2500"),
    EvalSet("synth hard 203", "synth:hard:203:2500"),
    EvalSet("synth mean-rev 204", "synth:mean_reverting:204:2500"),
    EvalSet("S&P 500 2013-14", "arch:sp500", "2013-01-01", "2015-01-01"),
    EvalSet("NASDAQ 2013-14", "arch:nasdaq", "2013-01-01", "2015-01-01"),
)
TEST_SETS: tuple[EvalSet, ...] = (
    EvalSet("synth easy 301", "synth:easy:301:3000"),
    EvalSet("synth realistic 302", "synth:realistic:302:3000"),
    EvalSet("synth hard 303", "synth:hard:303:3000"),
    EvalSet("synth mean-rev 304", "synth:mean_reverting:304:3000"),
    EvalSet("S&P 500 2015-18", "arch:sp500", "2015-01-01"),
    EvalSet("NASDAQ 2015-18", "arch:nasdaq", "2015-01-01"),
)
CONFIRM_SETS: tuple[EvalSet, ...] = (
    EvalSet("synth easy 205", "synth:easy:205:2500"),
    EvalSet("synth realistic 206", "synth:realistic:206:2500"),
    EvalSet("synth hard 207", "synth:hard:207:2500"),
    EvalSet("synth mean-rev 208", "synth:mean_reverting:208:2500"),
    EvalSet("synth realistic 209", "synth:realistic:209:2500"),
    EvalSet("synth hard 210", "synth:hard:210:2500"),
)
"""More validation-type series (never test data) to check that a ranking is not the noise of six sets."""
SPREAD_SETS: tuple[EvalSet, ...] = tuple(
    EvalSet(f"synth {label} {seed}", f"synth:{preset}:{seed}:3000")
    for first, (label, preset) in zip((311, 321, 331, 341), (("easy", "easy"), ("realistic", "realistic"),
                                                             ("hard", "hard"), ("mean-rev", "mean_reverting")),
                                      strict=True)
    for seed in range(first, first + 5)
)
"""Five more unseen synthetic series per preset (easy 311-315, realistic 321-325, hard 331-335,
mean-reverting 341-345): the spread behind the single test series of each preset, for one
configuration, as a report (never to choose). Each preset has its own seeds: the generator draws
its shocks from the seed alone, so one seed under two presets gives correlated paths."""
SPLITS = {"validation": VALIDATION_SETS, "confirm": CONFIRM_SETS, "test": TEST_SETS, "spread": SPREAD_SETS}
REPORT_SPLITS = ("test", "spread")
"""Splits that report one configuration already chosen."""
CHOOSING_SPLITS = ("validation", "confirm")
"""Splits the default configuration was chosen (``validation``) or its ranking checked (``confirm``) on."""


def choice_uses(spec: str, first: Any, last: Any) -> list[dict[str, Any]]:
    """The sets of :data:`CHOOSING_SPLITS` that the evaluated window ``[first, last]`` (its first and
    last bar) of the data spec or file ``spec`` meets, by the rule of
    :mod:`ensemble_trader.domain.fitted`: a synthetic spec meets every synthetic set of its seed,
    whatever the preset (the generator draws the path from the seed alone); real bars and a file's
    meet, by date, every real set whose window [start, end) they overlap, of any series.

    How much a seed match shares (``domain.synthetic.generate``): under the set's preset, the
    regime path (a shorter series' is the first bars of a longer one's), and the prices only at
    the set's length (the shocks are drawn after the chain's one uniform a bar, so another length
    draws other shocks: ``synth:easy:201:700``'s closes differ from the first 700 of
    ``synth:easy:201:2500`` by up to 22 %); under another preset, correlated paths.

    One entry per set: ``{"split", "set": its name, "data": its spec, "match": "seed" | "date",
    "seed", "same_preset" and "same_prices" (by seed: the set's preset; its preset and length),
    "window": [start, end) as given and "overlap": [first, last] (by date)}``."""
    kind = fitted.data_kind(spec)
    seed = fitted.synthetic_seed(spec)
    mine = parse_synth_spec(str(spec)) if kind == "synthetic" else None
    lo = None if first is None else parse_datetime64(first)
    hi = None if last is None else parse_datetime64(last)
    out: list[dict[str, Any]] = []
    for split in CHOOSING_SPLITS:
        for s in SPLITS[split]:
            entry: dict[str, Any] = {"split": split, "set": s.name, "data": s.spec}
            set_seed = fitted.synthetic_seed(s.spec)
            if set_seed is not None:
                if mine is not None and set_seed == seed:
                    theirs = parse_synth_spec(s.spec)
                    same_preset = theirs.scenario == mine.scenario
                    out.append(entry | {"match": "seed", "seed": seed, "same_preset": same_preset,
                                        "same_prices": same_preset and theirs.bars == mine.bars})
                continue
            if kind == "synthetic":
                continue
            s_lo = None if s.start is None else parse_datetime64(s.start)
            s_hi = None if s.end is None else parse_datetime64(s.end)  # exclusive
            if (s_hi is not None and lo is not None and lo >= s_hi) or (s_lo is not None and hi is not None
                                                                        and hi < s_lo):
                continue
            start = lo if s_lo is None else (s_lo if lo is None else max(lo, s_lo))
            if s_hi is None:
                end = hi
            else:
                before = s_hi - np.timedelta64(1, "ns")
                end = before if hi is None else min(hi, before)
            out.append(entry | {"match": "date", "window": [s.start, s.end],
                                "overlap": [None if start is None else str(np.datetime64(start, "s")),
                                            None if end is None else str(np.datetime64(end, "s"))]})
    return out
