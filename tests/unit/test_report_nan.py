"""Figures that cannot be given (NaN, :mod:`ensemble_trader.backtest.metrics`): null in every JSON
writer, "n/a" in every table. The margin's standard errors over fewer than three periods and an
``annual_return`` beyond a float were printed as a bare ``NaN`` token (not JSON), 'nan%' and
'± nan s.e.'."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from ensemble_trader.backtest.report import figure, json_safe, json_text

SYNTH = "synth:easy:1:300"  # daily bars from 2000-01-03; 2000-10-13 → 10-14 is a +2.1 % day
ONE_UP_PERIOD = ["--start", "2000-10-13", "--end", "2000-10-15"]
TWO_PERIODS = ["--start", "2000-10-13", "--end", "2000-10-16"]


def strict_json(text: str):
    """``json.loads`` refusing NaN and infinities (which strict JSON, and most parsers, lack)."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_safe_turns_every_non_finite_float_into_null_and_keeps_the_rest() -> None:
    value = {"a": math.nan, "b": [1.0, np.float64("inf"), (-math.inf, 2)], "c": {"d": "x", "e": None, "f": True},
             "g": np.float64(0.5), 3: 0}
    assert json_safe(value) == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": "x", "e": None, "f": True},
                                "g": 0.5, 3: 0}
    assert strict_json(json_text(value, sort_keys=False)) == {"a": None, "b": [1.0, None, [None, 2]],
                                                              "c": {"d": "x", "e": None, "f": True}, "g": 0.5, "3": 0}
    finite = {"x": [1.5, 2, "y"], "z": {"w": -0.25}}
    assert json_text(finite, indent=2, sort_keys=True) == json.dumps(finite, indent=2, sort_keys=True)


def test_figure_is_the_format_or_not_given() -> None:
    assert figure(0.1234, ".1%") == format(0.1234, ".1%") == "12.3%"
    assert figure(12.34, ".1f", "%") == "12.3%"
    assert f"{figure(-1.5, '.2f'):>8}" == f"{-1.5:8.2f}"
    for bad in (math.nan, math.inf, -math.inf):
        assert figure(bad, ".2f") == "n/a" and figure(bad, ".1f", "%") == "n/a"


def test_a_huge_finite_figure_is_written_in_exponent_form() -> None:
    """One hourly period of +1 % annualised over 8,760 periods a year: 43 characters as '.1%'."""
    annual = 1.01**8760 - 1.0
    assert figure(annual, ".1%") == "7.17e+39%" and figure(annual, "+.1%") == "+7.17e+39%"
    assert figure(-3e20, ".2f", " x") == "-3.00e+20 x"
    assert figure(123_456.0, ".1%") == "12345600.0%"  # up to FIGURE_WIDTH characters: unchanged


def test_backtest_over_two_periods_writes_null_and_n_a(tmp_path, capsys) -> None:
    """Two periods: the margin has no standard error. ``--json`` and report.json were not JSON
    (``"margin_se": NaN``); the table said '± nan s.e.' and the HTML '(± nan)'."""
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", SYNTH, *TWO_PERIODS, "--json", "--out", str(tmp_path)]) == 0
    printed = strict_json(capsys.readouterr().out)
    assert printed["run"]["periods"] == 2
    assert printed["target"]["margin_se"] is None and printed["target"]["margin_se_hac"] is None
    assert strict_json((tmp_path / "report.json").read_text()) == printed
    page = re.sub(r"base64,[^\"]*", "", (tmp_path / "report.html").read_text())  # the text, not the PNGs
    assert "(± n/a)" in page and "nan" not in page
    assert main(["backtest", "--bars", SYNTH, *TWO_PERIODS]) == 0
    out = capsys.readouterr().out
    assert "± n/a s.e.)" in out and "nan" not in out


def test_evaluate_agents_with_an_annual_return_beyond_a_float_writes_null_and_n_a(capsys) -> None:
    """One +2 % period compounded over a million bars a year is beyond a float: ``annual_return``
    is NaN, printed as a bare NaN in --json and 'nan%' in the table."""
    from ensemble_trader.cli import main

    argv = ["evaluate", "agents", "--bars", SYNTH, *ONE_UP_PERIOD, "--bars-per-year", "1e6"]
    assert main([*argv, "--json"]) == 0
    printed = strict_json(capsys.readouterr().out)
    assert printed["run"]["periods"] == 1
    hold = printed["baselines"]["buy_and_hold"]
    assert hold["overall"]["total_return"] > 0 and hold["overall"]["annual_return"] is None
    assert [m["annual_return"] for m in hold["by_regime"].values()] == [None]
    assert printed["baselines"]["cash"]["overall"]["annual_return"] == 0.0  # a flat year is given
    for markdown in ([], ["--markdown"]):
        assert main([*argv, *markdown]) == 0
        out = capsys.readouterr().out
        assert "nan" not in out
        row = next(line for line in out.splitlines() if "buy_and_hold" in line)
        assert "n/a" in row and "n/a%" not in row


def test_evaluate_tables_keep_the_column_width_for_n_a() -> None:
    from ensemble_trader.backtest.metrics import METRIC_NAMES
    from ensemble_trader.cli.evaluate import format_report

    m = dict.fromkeys(METRIC_NAMES, 0.5)
    report = {"agents": {"a": {"overall": m | {"annual_return": math.nan}, "by_regime": {}}},
              "baselines": {"b": {"overall": m, "by_regime": {}}}}
    lines = format_report(report).splitlines()
    assert len(lines[2]) == len(lines[3])
    assert lines[2].split() == ["a", "50.0%", "n/a", "50.0%", "0.50", "0.50", "50.0%", "50.0%", "0.50"]


@pytest.fixture(scope="module")
def short_result():
    """``evaluate`` of a two-period window of a small pipeline (hand-made agents and regime model)."""
    from ensemble_trader.backtest.ensemble import evaluate, run_meta, run_pipeline
    from ensemble_trader.domain.meta_agent import MetaAgentConfig
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.synthetic import generate

    from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

    pipeline = run_pipeline(generate("easy", 300, seed=4).series, RuleAgents(), RegimeStep(hand_regime_model()))
    run = run_meta(pipeline, MetaAgentConfig.create())
    return evaluate(run, start=str(pipeline.timestamp[-3])[:10])


def test_the_target_over_two_periods_has_no_standard_error_and_the_html_says_n_a(short_result) -> None:
    from ensemble_trader.backtest.report import _metrics_table, _target_table

    t = short_result["target"]
    assert short_result["run"]["periods"] == 2
    assert math.isnan(t["margin_se"]) and math.isnan(t["margin_se_hac"])
    # sharpe_met compares the Sharpe ratios as measured, without the error: still decided
    assert t["sharpe_met"] is (t["ensemble_sharpe"] >= t["sharpe_goal"])
    assert "(± n/a)" in _target_table(short_result) and "nan" not in _target_table(short_result)
    result = json.loads(json.dumps(short_result))  # a copy
    result["ensemble"]["overall"]["annual_return"] = math.nan
    table = _metrics_table(result)
    assert "<td>n/a</td>" in table and "nan" not in table


def test_select_reports_no_mean_margin_error_when_a_set_has_none(capsys, monkeypatch) -> None:
    """A set of fewer than three periods has no margin error, so neither has the mean margin
    (leaving the set out would understate it): null in --json, n/a in the tables."""
    import training.meta.select as select
    from tests.unit.test_meta_select import target

    short = target(1.3, 1.0) | {"margin_se": math.nan, "margin_se_hac": math.nan}
    per_set = {"x": target(1.3, 1.0), "y": short}
    summary = select.summarise(per_set)
    assert math.isnan(summary["mean_margin_se"])
    sets = [select.EvalSet("x", "synth:easy:1"), select.EvalSet("y", "synth:hard:2")]
    table = select.format_validation({"cand": {"sets": per_set, "summary": summary}}, sets)
    row = table.splitlines()[1]
    assert "    n/a" in row and "nan" not in table
    report = {"target": short, "buy_and_hold": {"overall": {"sharpe": 0.5}}, "regret": {"overall": 2.0}}
    assert "+0.10   n/a   n/a" in select.format_test({"y": report})
    paired = {name: {"paired": {"difference": 0.1, "se": t["margin_se"], "se_hac": t.get("margin_se_hac", 0.3)}}
              for name, t in per_set.items()}
    assert math.isnan(select.paired_summary(paired)["se"])
    text = select.format_paired({"base": paired, "other": paired}, "base", sets)
    assert "(n/a/n/a)" in text and "nan" not in text

    reports = {"default": {name: {"target": t, "ensemble": {"overall": {"annual_return": math.nan}}}
                           for name, t in per_set.items()}}
    monkeypatch.setattr(select, "check_overlap", lambda *a, **k: (None, "regime-x"))
    monkeypatch.setattr(select, "evaluate_candidates", lambda *a, **k: (reports, "agents-x"))
    assert select.main(["--split", "test", "--candidates", "default", "--json"]) == 0
    printed = strict_json(capsys.readouterr().out)
    assert printed["candidates"]["default"]["summary"]["mean_margin_se"] is None
    assert printed["candidates"]["default"]["sets"]["y"]["margin_se"] is None
    assert printed["reports"]["y"]["ensemble"]["overall"]["annual_return"] is None
