"""The backtest's report on what its figures were shaped by (review of 2026-11-29).

It said "Out of sample: the window overlaps none of …" for ``synth:realistic:202:2500``, a
validation series the default meta-agent configuration was chosen on; and it checked only the
evaluated window, not the bars before it that warm the learners up (on the indexes: the agents'
training and validation years).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest import selection
from ensemble_trader.backtest.provenance import assess, choice_note, describe_warm_up
from ensemble_trader.backtest.report import _sample_note
from ensemble_trader.domain import fitted

TRAINING = {
    "data": ["arch:sp500", "synth:realistic:11:5000"],
    "validation_data": [],
    "windows": {
        "arch:sp500": {"train": ["1999-09-09T00:00:00", "2012-12-31T00:00:00"],
                       "validation": ["2013-01-02T00:00:00", "2014-12-30T00:00:00"],
                       "test": ["2014-12-31T00:00:00", "2018-12-31T00:00:00"]},
        "synth:realistic:11:5000": {"train": ["2000-06-23T00:00:00", "2009-08-02T00:00:00"]},
    },
}
WINDOWS = fitted.agent_windows(TRAINING, "agents-x", ("a",))


def ns(text: str) -> np.datetime64:
    return np.datetime64(text, "ns")


def test_select_reads_its_sets_from_the_one_constant_the_report_uses() -> None:
    from training.meta import select

    assert select.VALIDATION_SETS is selection.VALIDATION_SETS and select.CONFIRM_SETS is selection.CONFIRM_SETS
    assert select.SPLITS is selection.SPLITS and select.EvalSet is selection.EvalSet
    seeds = sorted(fitted.synthetic_seed(s.spec) for split in selection.CHOOSING_SPLITS
                   for s in selection.SPLITS[split] if fitted.data_kind(s.spec) == "synthetic")
    assert seeds == list(range(201, 211))  # docs/meta-agent.md §6


@pytest.mark.parametrize(("spec", "split", "same_preset", "same_prices"), [
    ("synth:realistic:202:2500", "validation", True, True),
    ("synth:realistic:202:2500:ABC", "validation", True, True),  # the symbol changes no price
    ("synth:realistic:202:300:ABC", "validation", True, False),  # another length: the regime path only
    ("synth:realistic:202", "validation", True, False),  # 2,000 bars by default
    ("synth:easy:202:2500", "validation", False, False),  # another preset: the seed's correlated path
    ("synth:hard:210:2500", "confirm", True, True),
])
def test_a_synthetic_series_the_configuration_was_chosen_on_is_named(spec, split, same_preset, same_prices) -> None:
    got = assess(spec, ns("2001-01-01"), ns("2009-01-01"), WINDOWS)
    assert got.in_sample == [] and got.notes == []
    assert [(c["split"], c["match"], c["same_preset"], c["same_prices"]) for c in got.choice] == [
        (split, "seed", same_preset, same_prices)]
    page = _sample_note({"in_sample": got.in_sample, "in_sample_notes": got.notes,
                         "configuration_choice": {"default": True, "sets": got.choice}})
    assert "Out of sample" not in page and "Configuration chosen on this data:" in page
    assert f"the {split} set" in page and "its figures here are in sample for that choice" in page


def test_series_of_other_seeds_and_the_report_splits_are_not_flagged() -> None:
    for spec in ("synth:realistic:101:1500", "synth:realistic:302:3000", "synth:realistic:321:3000"):
        assert assess(spec, None, None, WINDOWS).choice == []


def test_index_bars_of_the_validation_years_are_flagged_by_date_of_any_series() -> None:
    got = assess("arch:nasdaq", ns("2014-06-02"), ns("2016-01-04"), WINDOWS)
    assert [(c["set"], c["overlap"]) for c in got.choice] == [
        ("S&P 500 2013-14", ["2014-06-02T00:00:00", "2014-12-31T23:59:59"]),
        ("NASDAQ 2013-14", ["2014-06-02T00:00:00", "2014-12-31T23:59:59"])]
    assert assess("arch:sp500", ns("2015-01-02"), ns("2018-12-31"), WINDOWS).choice == []


def test_a_run_under_another_configuration_is_told_apart() -> None:
    entries = assess("synth:realistic:202:2500", None, None, WINDOWS).choice
    assert "This run uses that configuration" in choice_note(entries, True)
    assert "This run's configuration is not the default" in choice_note(entries, False)


def test_the_learners_warm_up_on_fitted_years_is_said_apart_from_the_window() -> None:
    got = assess("arch:sp500", ns("2015-01-02"), ns("2018-12-31"), WINDOWS,
                 warm_up=(ns("1999-01-04"), ns("2014-12-31")))
    assert got.in_sample == [] and got.choice == []
    assert [(e["part"], e["overlap"]) for e in got.warm_up] == [
        ("train", ["1999-09-09T00:00:00", "2012-12-31T00:00:00"]),
        ("validation", ["2013-01-02T00:00:00", "2014-12-30T00:00:00"])]
    text = describe_warm_up(got.warm_up, window_in_sample=False)
    assert text.startswith("The window itself is out of sample for the agents and the regime model, but the "
                           "meta-agent's learners were warmed up on the bars from 1999-01-04 to 2014-12-31")
    page = _sample_note({"in_sample": [], "in_sample_notes": [], "warm_up_in_sample": got.warm_up,
                         "configuration_choice": {"default": True, "sets": []}})
    assert "Out of sample: the window overlaps none of" in page and "Warm-up in sample:" in page
    # a warm-up that ends before every fitted window, or none at all, says nothing
    assert assess("arch:sp500", ns("1999-06-01"), ns("1999-08-01"), WINDOWS,
                  warm_up=(ns("1999-01-04"), ns("1999-05-28"))).warm_up == []
    assert assess("arch:sp500", ns("2015-01-02"), ns("2018-12-31"), WINDOWS).warm_up == []


def test_the_backtest_reports_the_choice_and_the_warm_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:realistic:202:300", "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["in_sample"] == [] and printed["warm_up_in_sample"] == []
    choice = printed["configuration_choice"]
    assert choice["default"] is True
    assert [(c["split"], c["set"], c["seed"]) for c in choice["sets"]] == [("validation", "synth realistic 202", 202)]
    page = (tmp_path / "report.html").read_text()
    assert "Out of sample" not in page and "Configuration chosen on this data:" in page

    assert main(["backtest", "--bars", "synth:realistic:202:300", "--policy", "ucb"]) == 0
    out = capsys.readouterr().out
    assert "CONFIGURATION CHOSEN HERE:" in out and "This run's configuration is not the default" in out


def test_the_backtest_of_the_index_test_window_names_the_warm_up(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    argv = ["backtest", "--bars", "arch:sp500", "--start", "2018-10-01"]
    assert main([*argv, "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["in_sample"] == [] and printed["configuration_choice"]["sets"] == []
    assert {(e["model"], e["part"], e["data"]) for e in printed["warm_up_in_sample"]} >= {
        ("agents", "train", "arch:sp500"), ("agents", "validation", "arch:sp500"), ("regime", "train", "arch:sp500")}
    # from the first bar whose features are ready (bar 172), where the learners first decide
    assert {tuple(e["warm_up"]) for e in printed["warm_up_in_sample"]} == {
        ("1999-09-09T00:00:00", "2018-09-28T00:00:00")}
    page = (tmp_path / "report.html").read_text()
    assert "Out of sample: the window overlaps none of" in page
    assert "Warm-up in sample:</b> The window itself is out of sample" in page


def test_select_reports_the_index_sets_warm_up() -> None:
    from training.meta import select

    notes = select.warm_up_overlaps(selection.TEST_SETS, WINDOWS)
    assert len(notes) == 2 and notes[0].startswith(
        "the learners of the set 'S&P 500 2015-18' are warmed up on arch:sp500 from 1999-09-09 (its first bar "
        "whose features are ready) to 2014-12-31 (the last before its window's start, 2015-01-01)")
    assert "agent set agents-x train window of arch:sp500 (1999-09-09 → 2012-12-31)" in notes[0]
    assert "validation window of arch:sp500 (2013-01-02 → 2014-12-30)" in notes[0]
    # NASDAQ bars meet the S&P 500 windows too (the rule is by date, across series); the synthetic sets have none
    assert select.warm_up_overlaps(selection.VALIDATION_SETS, WINDOWS)[1].startswith(
        "the learners of the set 'NASDAQ 2013-14'")


def test_select_prints_the_warm_up_notes_and_puts_them_in_its_json(monkeypatch, capsys) -> None:
    from tests.unit.test_meta_overlap import fake_reports
    from training.meta import select

    monkeypatch.setattr(select, "evaluate_candidates", fake_reports)
    assert select.main(["--split", "test", "--json"]) == 0
    out, err = capsys.readouterr()
    notes = json.loads(out)["warm_up_notes"]
    assert [n.split("'")[1] for n in notes] == ["S&P 500 2015-18", "NASDAQ 2015-18"]
    assert err.splitlines() == [f"note: {n}" for n in notes] and "warning" not in err


# ---- the warm-up begins where the learners first learn (review of the notes above) ----------------


def test_the_learners_first_reward_is_for_the_first_ready_bars_decision() -> None:
    """What :func:`warm_up_span` rests on: a reward is booked at bar k exactly when bar k - 1 was
    ready, and the weights stay equal until the first ready bar."""
    from ensemble_trader.backtest.ensemble import run_meta, run_pipeline
    from ensemble_trader.domain.meta_agent import MetaAgentConfig
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.synthetic import generate

    from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

    pipeline = run_pipeline(generate("easy", 260, seed=4).series, RuleAgents(), RegimeStep(hand_regime_model()))
    run = run_meta(pipeline, MetaAgentConfig.create())
    first = int(np.argmax(pipeline.ready))
    assert first == 172 and not pipeline.ready[:first].any()
    booked = ~np.isnan(run.meta_rewards)
    assert not booked[0] and np.array_equal(booked[1:], pipeline.ready[:-1])
    assert np.allclose(run.weights[: first + 1], 0.25)  # nothing learned through the first ready bar's decision
    assert not np.allclose(run.weights[first + 2], 0.25)


def test_the_warm_up_span_runs_from_the_first_ready_bar_to_the_bar_before_the_window() -> None:
    from ensemble_trader.backtest.provenance import warm_up_span
    from ensemble_trader.domain.errors import DataError

    times = np.arange("2001-01-01", "2001-01-11", dtype="datetime64[D]").astype("datetime64[ns]")
    ready = np.arange(10) >= 3
    assert warm_up_span(times, ready, 3) is None  # the window starts at the first ready bar: no warm-up
    assert warm_up_span(times, ready, 0) is None and warm_up_span(times, ready, 2) is None
    assert warm_up_span(times, ready, 4) == (times[3], times[3])
    assert warm_up_span(times, ready, 8) == (times[3], times[7])
    for bad in (-1, 11, 2.0, True):
        with pytest.raises(DataError, match="the window's first bar"):
            warm_up_span(times, ready, bad)
    with pytest.raises(DataError, match="ready has 9 entries for 10 bars"):
        warm_up_span(times, ready[:9], 4)


def test_a_backtest_without_start_names_no_warm_up(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed 'WARM-UP IN SAMPLE: ... warmed up on the bars from 1999-01-04 to 1999-09-08', the
    features' warm-up, on which the learners learn nothing."""
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "arch:sp500", "--end", "2000-06-01", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"]["start"].startswith("1999-09-09") and printed["warm_up_in_sample"] == []
    assert main(["backtest", "--bars", "arch:sp500", "--end", "2000-06-01"]) == 0
    assert "WARM-UP" not in capsys.readouterr().out


def test_select_names_no_warm_up_for_a_set_whose_window_starts_at_the_first_ready_bar() -> None:
    from training.meta import select

    early = selection.EvalSet("S&P 500 1999", "arch:sp500", "1999-02-01", "2000-01-01")
    assert select.learners_warm_up("arch:sp500", "1999-02-01") is None
    assert select.warm_up_overlaps([early], WINDOWS) == []
    first, last = select.learners_warm_up("arch:sp500", "1999-10-01")
    assert (str(first)[:10], str(last)[:10]) == ("1999-09-09", "1999-09-30")


def test_the_choice_note_says_the_same_prices_only_at_the_sets_length() -> None:
    """It said 'the same path' for synth:easy:201:700 against the set synth:easy:201:2500: the same
    regime path, but closes up to 22 % apart."""
    from ensemble_trader.backtest.provenance import describe_choice
    from ensemble_trader.domain.synthetic import generate

    whole, short = generate("easy", 2500, 201), generate("easy", 700, 201)
    assert np.array_equal(short.regimes, whole.regimes[:700])
    assert np.max(np.abs(short.series.close / whole.series.close[:700] - 1)) > 0.2
    (entry,) = assess("synth:easy:201:700", None, None, WINDOWS).choice
    text = describe_choice(entry)
    assert "the same regime path over the shorter's bars, other prices" in text and "the same path" not in text
    assert np.array_equal(generate("easy", 2500, 201, symbol="ABC").series.close, whole.series.close)
    (entry,) = assess("synth:easy:201:2500:ABC", None, None, WINDOWS).choice
    assert "synthetic seed 201, the same preset and length: the same prices)" in describe_choice(entry)
    (entry,) = assess("synth:hard:201:2500", None, None, WINDOWS).choice
    assert "synthetic seed 201, under another preset: a correlated path)" in describe_choice(entry)
    # a report.json written before same_prices existed claims no more than the generator keeps
    old = {k: v for k, v in assess("synth:easy:201:700", None, None, WINDOWS).choice[0].items() if k != "same_prices"}
    assert "the same regime path, and the same prices only at the same length" in describe_choice(old)


# ---- whether the run uses the default configuration: its reward cost counts -----------------------


def test_a_run_at_other_costs_does_not_use_the_chosen_configuration() -> None:
    """The meta-agent's cost_bps (--cost-bps plus --slippage-bps) nets its learners' rewards, and
    select chose the default at the default costs; is_default left it aside and said "This run uses
    that configuration" for a run whose learners were rewarded otherwise."""
    from ensemble_trader.backtest.engine import CostModel
    from ensemble_trader.cli.backtest import _SET_ELSEWHERE, default_differences, is_default
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

    select_costs = CostModel()  # what training.meta.select scores with
    assert MetaAgentConfig.create().cost_bps == select_costs.cost_bps + select_costs.slippage_bps
    assert is_default(MetaAgentConfig.create(random_state=7, strategy_id="other", cost_bps=3.0))
    assert default_differences(MetaAgentConfig.create(cost_bps=12.0)) == ["cost_bps"]
    assert not is_default(MetaAgentConfig.create(cost_bps=12.0))
    assert default_differences(MetaAgentConfig.create(policy="ucb", cost_bps=0.0)) == ["cost_bps", "policy"]
    assert set(_SET_ELSEWHERE) >= {"cost_bps", "random_state", "strategy_id"}
    entries = assess("synth:realistic:202:2500", None, None, WINDOWS).choice
    assert "This run's configuration is not the default (it differs in cost_bps); the default's" in choice_note(
        entries, False, ["cost_bps"])


def test_the_backtest_at_other_costs_says_its_configuration_is_not_the_default(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    argv = ["backtest", "--bars", "synth:realistic:202:300", "--cost-bps", "5"]
    assert main([*argv, "--json", "--out", str(tmp_path)]) == 0
    choice = json.loads(capsys.readouterr().out)["configuration_choice"]
    assert choice["default"] is False and choice["differs"] == ["cost_bps"]
    page = (tmp_path / "report.html").read_text()
    assert "This run&#x27;s configuration is not the default (it differs in cost_bps)" in page
    # the same costs split otherwise: the same reward cost, the default configuration
    assert main([*argv[:-2], "--cost-bps", "0.5", "--slippage-bps", "2.5"]) == 0
    assert "This run uses that configuration" in capsys.readouterr().out
