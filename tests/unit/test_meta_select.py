"""The selection script's pure parts: margin, candidate parsing, summary, ranking, tables."""

from __future__ import annotations

import math

import pytest
from ensemble_trader.domain.meta_agent import MetaAgentConfig

from training.meta.select import (
    CANDIDATES,
    CONFIRM_SETS,
    SPREAD_SETS,
    TEST_SETS,
    VALIDATION_SETS,
    EvalSet,
    format_paired,
    format_test,
    format_validation,
    main,
    margin,
    paired_summary,
    parse_candidates,
    rank,
    summarise,
)


def target(ens: float, best: float, ens_dd: float = 0.1, best_dd: float = 0.2) -> dict:
    goal = best + 0.2 * abs(best)
    return {
        "best_agent": "balanced",
        "best_sharpe": best,
        "ensemble_sharpe": ens,
        "sharpe_goal": goal,
        "sharpe_met": ens >= goal,
        "best_max_drawdown": best_dd,
        "ensemble_max_drawdown": ens_dd,
        "drawdown_met": ens_dd <= best_dd,
        "margin_se": 0.25,
    }


def test_margin_is_sharpe_minus_goal_for_positive_and_negative_best():
    assert margin(target(1.3, 1.0)) == pytest.approx(0.1)
    assert margin(target(-0.5, -1.0)) == pytest.approx(-0.5 - (-1.0 + 0.2))


def test_named_and_json_candidates_are_parsed_and_every_named_one_builds():
    parsed = parse_candidates(["default", '{"policy": "ucb"}'])
    assert parsed == {"default": {}, '{"policy": "ucb"}': {"policy": "ucb"}}
    assert parse_candidates(None) == CANDIDATES
    for options in CANDIDATES.values():
        MetaAgentConfig.create(**options)


@pytest.mark.parametrize("bad", ["nope", "{not json", "[1, 2]"])
def test_bad_candidates_are_named_in_the_error(bad):
    with pytest.raises(ValueError, match="candidate"):
        parse_candidates([bad])


@pytest.mark.parametrize("options", ['{"random_state": 5, "policy": "thompson"}', '{"cost_bps": 0}'])
def test_a_candidate_may_not_set_what_the_run_sets_for_all(options):
    """Its random_state overrode --seed, its cost_bps the costs it is scored at, silently."""
    with pytest.raises(ValueError, match="which the run sets for every candidate"):
        parse_candidates([options])
    from training.meta.select import evaluate_candidates

    with pytest.raises(ValueError, match="sets random_state"):  # before loading anything
        evaluate_candidates([], {"seeded": {"random_state": 5}}, seed=1)


def test_summary_and_ranking():
    a = {"x": target(1.3, 1.0), "y": target(0.0, 1.0, ens_dd=0.3)}
    b = {"x": target(1.0, 1.0), "y": target(1.0, 1.0)}
    sa, sb = summarise(a), summarise(b)
    assert sa["mean_margin"] == pytest.approx((0.1 - 1.2) / 2)
    assert sa["mean_margin_se"] == pytest.approx(math.sqrt(2 * 0.25**2) / 2)
    assert (sa["sharpe_met"], sa["drawdown_met"], sa["both_met"], sa["sets"]) == (1, 1, 1, 2)
    assert sb["mean_margin"] == pytest.approx(-0.2)
    assert rank({"a": {"summary": sa}, "b": {"summary": sb}}) == ["b", "a"]


def test_tables_show_every_set_and_candidate():
    sets = [EvalSet("x", "synth:easy:1"), EvalSet("y", "synth:hard:2")]
    per_set = {"x": target(1.3, 1.0), "y": target(0.0, 1.0, ens_dd=0.3)}
    scores = {"cand": {"sets": per_set, "summary": summarise(per_set)}}
    text = format_validation(scores, sets)
    assert "cand" in text and "+0.100*" in text and "-1.200 " in text
    report = {"target": per_set["x"], "buy_and_hold": {"overall": {"sharpe": 0.5}}, "regret": {"overall": 2.0}}
    assert "balanced 1.00" in format_test({"x": report})
    assert "+0.10  0.25" in format_test({"x": report})


def test_splits_follow_the_protocol():
    assert [s.spec.split(":")[2] for s in VALIDATION_SETS[:4]] == ["201", "202", "203", "204"]
    assert [s.spec.split(":")[2] for s in TEST_SETS[:4]] == ["301", "302", "303", "304"]
    assert [s.spec.split(":")[2] for s in CONFIRM_SETS] == [str(seed) for seed in range(205, 211)]
    assert all(s.end == "2015-01-01" for s in VALIDATION_SETS[4:])
    assert all(s.start == "2015-01-01" and s.end is None for s in TEST_SETS[4:])
    seeds = [int(s.spec.split(":")[2]) for s in SPREAD_SETS]
    # twenty series, twenty seeds: the generator's shocks come from the seed alone, so a seed shared
    # by two presets would give two correlated paths
    assert len(SPREAD_SETS) == 20 and len(set(seeds)) == 20
    used = {int(s.spec.split(":")[2]) for s in VALIDATION_SETS[:4] + TEST_SETS[:4] + CONFIRM_SETS}
    assert not used & set(seeds)  # the spread's series are in no other split


@pytest.mark.parametrize("split", ["test", "spread"])
def test_report_splits_refuse_several_configurations(capsys, split):
    with pytest.raises(SystemExit):
        main(["--split", split, "--candidates", "default", "ucb-global"])
    assert "exactly one configuration" in capsys.readouterr().err


def test_paired_comparison_summary_and_table():
    sets = [EvalSet("x", "synth:easy:1"), EvalSet("y", "synth:hard:2")]
    base = {"x": {}, "y": {}}
    other = {"x": {"paired": {"baseline": "base", "difference": 0.04, "se": 0.01, "se_hac": 0.03}},
             "y": {"paired": {"baseline": "base", "difference": -0.01, "se": 0.02, "se_hac": 0.04}}}
    sm = paired_summary(other)
    assert sm["mean_difference"] == pytest.approx(0.015)
    assert sm["se"] == pytest.approx(math.sqrt(0.01**2 + 0.02**2) / 2)
    assert sm["se_hac"] == pytest.approx(math.sqrt(0.03**2 + 0.04**2) / 2)
    assert (sm["positive"], sm["sets"]) == (1, 2)
    text = format_paired({"base": base, "other": other}, "base", sets)
    assert "against base" in text and "+0.040 (0.010/0.030)" in text and "1/2" in text
    assert "0.025" in text  # the pooled Newey-West error
    assert "\nbase" not in text  # the baseline gets no row of its own


def test_paired_baseline_must_be_a_candidate(capsys):
    with pytest.raises(SystemExit):
        main(["--split", "confirm", "--candidates", "default", "ucb-global", "--paired", "hedge-global"])
    assert "--paired" in capsys.readouterr().err
