"""``ScenarioSpec.intrabar_steps`` has an upper limit (INTRABAR_STEPS_MAX, 100,000), and the
Brownian-bridge paths are drawn in chunks of a bounded number of values whatever the step count.

Before, any integer >= 2 was taken and the paths were drawn 16,384 bars at a time: memory grew
with steps x bars without bound (5,000 bars of 1,440 steps peaked at 231 MB, 10**9 steps would
need some 40 GB for a single bar). The refusal and chunking tests failed on the code before; the
presets' draws are unchanged (the same 16,384-bar chunks at their 24 steps, and the draws do not
depend on the chunking).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from ensemble_trader.domain import synthetic
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import INTRABAR_STEPS_MAX, SCENARIOS, generate

EASY = SCENARIOS["easy"]


@pytest.mark.parametrize("steps", [INTRABAR_STEPS_MAX + 1, 10**9, 10**30, np.int64(2**62)])
def test_more_steps_than_the_limit_are_refused_naming_the_value(steps):
    expected = f"scenario 'easy': intrabar_steps={steps!r}: must be an integer >= 2 and at most 100,000 (the presets use 24"
    with pytest.raises(DataError, match="^" + re.escape(expected)):
        dataclasses.replace(EASY, intrabar_steps=steps)


@pytest.mark.parametrize("steps", [2, 24, 390, INTRABAR_STEPS_MAX])
def test_the_limit_and_the_values_below_it_generate(steps, monkeypatch):
    monkeypatch.setitem(SCENARIOS, "stepped", dataclasses.replace(EASY, name="stepped", intrabar_steps=steps))
    bars = generate("stepped", 3, seed=1).series
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert INTRABAR_STEPS_MAX == 100_000


class _Recording:
    """A generator that records the shape of every standard-normal draw."""

    def __init__(self, seed: int):
        self.rng, self.shapes = np.random.default_rng(seed), []

    def standard_normal(self, shape):
        self.shapes.append(shape)
        return self.rng.standard_normal(shape)


def _paths(steps: int, n: int, rng, **kw):
    spec = dataclasses.replace(EASY, intrabar_steps=steps)
    base = np.random.default_rng(9)
    log_open = np.log(100.0) + base.normal(0, 0.01, n)
    log_close = log_open + base.normal(0, 0.01, n)
    sigma = np.full(n, 0.01)
    return synthetic._intrabar_extremes(spec, log_open, log_close, sigma, rng, **kw)


@pytest.mark.parametrize(("steps", "n", "rows"), [
    (24, 40_000, 16_384),  # the presets: the chunks they were always drawn in
    (1_440, 1_000, 273),
    (INTRABAR_STEPS_MAX, 7, 3),
    (50_000, 20, 7),
])
def test_the_paths_are_drawn_in_chunks_of_bounded_size(steps, n, rows):
    rng = _Recording(3)
    _paths(steps, n, rng)
    assert {shape[1] for shape in rng.shapes} == {steps}
    assert [shape[0] for shape in rng.shapes] == [rows] * (n // rows) + ([n % rows] if n % rows else [])
    assert max(r * steps for r, _ in rng.shapes) <= 16_384 * 24


@pytest.mark.parametrize("steps", [24, 390])
def test_the_draws_do_not_depend_on_the_chunking(steps):
    whole = _paths(steps, 600, np.random.default_rng(4), chunk_values=600 * steps)
    for chunk_values in (1, steps * 7 + 1, 16_384 * 24):
        high, low = _paths(steps, 600, np.random.default_rng(4), chunk_values=chunk_values)
        assert np.array_equal(high, whole[0]) and np.array_equal(low, whole[1])
