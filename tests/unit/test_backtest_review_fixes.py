"""Defects a review of the backtest tools found on 2026-11-29, each with what it did before."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest import report
from ensemble_trader.backtest.engine import CostModel
from ensemble_trader.backtest.ensemble import check_price_moves, evaluate, run_meta, run_pipeline
from ensemble_trader.backtest.metrics import performance
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.meta_agent import MetaAgentConfig
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate

from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model


def test_sortino_of_a_strategy_that_earned_and_never_lost_is_not_given() -> None:
    """It was 0.0, which ranked a strategy that never lost below every one that did."""
    gains = performance(np.array([0.01, 0.0, 0.02]), np.ones(3), 252)
    assert math.isnan(gains.sortino) and gains.sharpe > 0
    assert performance(np.zeros(3), np.zeros(3), 252).sortino == 0.0  # never in the market: 0/0, 0 by convention
    assert performance(np.array([0.01]), np.ones(1), 252).sortino == 0.0  # one period: no ratio, as Sharpe
    assert performance(np.array([0.01, -0.01, 0.02]), np.ones(3), 252).sortino > 0


@pytest.fixture(scope="module")
def run():
    series = generate("easy", 400, seed=4).series
    return run_meta(run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model())), MetaAgentConfig.create())


def test_the_backtest_table_shows_such_a_sortino_as_not_given(run, capsys: pytest.CaptureFixture[str]) -> None:
    """The table printed it with '9.2f': 'nan', or 0.00 before the metric gave NaN."""
    from ensemble_trader.cli.backtest import _print_table

    result = evaluate(run)
    result["ensemble"]["overall"]["sortino"] = math.nan
    _print_table(result)
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("ensemble "))
    assert line.split()[2] == "n/a" and "nan" not in line


def test_the_drawdown_plot_draws_the_best_agent_in_its_own_colour(run, monkeypatch) -> None:
    """It was always the first colour (the Conservative's in the other plots)."""
    figures = []
    monkeypatch.setattr(report, "_png", lambda fig: figures.append(fig) or "")
    names = list(run.pipeline.agent_names)
    for best in ("balanced", "contrarian"):
        report.plot_drawdowns_and_regret(run, CostModel(), 200, best)
        report.plot_equity(run, CostModel(), 200)
        drawdown, equity = figures[-2], figures[-1]
        colour = {line.get_label(): line.get_color() for line in drawdown.axes[0].get_lines()}
        assert colour[f"{best} (best agent)"] == report.AGENT_COLOURS[names.index(best)]
        assert colour[f"{best} (best agent)"] == {line.get_label(): line.get_color()
                                                  for line in equity.axes[0].get_lines()}[best]


def test_the_compare_table_is_sized_to_its_labels(capsys: pytest.CaptureFixture[str]) -> None:
    """Labels over 24 characters pushed their row's figures out of the columns."""
    from ensemble_trader.cli.backtest import _print_policies

    entry = {"ensemble": {"sharpe": 1.0, "max_drawdown": 0.1, "total_return": 0.2}, "regret": 1.5,
             "target": {"ensemble_sharpe": 1.0, "sharpe_goal": 0.5}}
    _print_policies({"ucb/regime/blend/full": entry, "thompson/probability/select/bandit": entry})
    lines = capsys.readouterr().out.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert len({line.index("1.00") for line in lines[1:]}) == 1
    assert lines[0].index("sharpe") + len("sharpe") == lines[1].index("1.00") + len("1.00")


def jumped(series, factor: float, at: int):
    """``series`` with every price from bar ``at`` on multiplied by ``factor``."""
    scale = np.where(np.arange(len(series)) >= at, factor, 1.0)
    return dataclasses.replace(series, open=series.open * scale, high=series.high * scale, low=series.low * scale,
                               close=series.close * scale)


def test_a_bad_print_is_named_before_any_run() -> None:
    series = dataclasses.replace(generate("easy", 300, seed=1).series, symbol="JMP")
    check_price_moves(series)
    with pytest.raises(DataError, match=r"JMP: bar 250 \(2000-09-09T00:00:00\): close .* is 2.0\de\+03 times the previous close .* bad print"):
        check_price_moves(jumped(series, 2000.0, 250))
    with pytest.raises(DataError, match="bar 120 "):
        check_price_moves(jumped(series, 1 / 2000.0, 120))
    check_price_moves(jumped(series, 900.0, 250))  # within the factor the meta-agent takes


def test_one_bad_symbol_stops_the_file_before_any_symbol_is_reported(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The first symbol's report was written, then the run stopped at the second's bad print and
    --json printed nothing."""
    from ensemble_trader.cli import main
    from ensemble_trader.marketdata import write_bars_csv

    good = dataclasses.replace(generate("easy", 300, seed=1).series, symbol="AAA")
    bad = jumped(dataclasses.replace(generate("easy", 300, seed=2).series, symbol="JMP"), 1200.0, 260)
    csv = tmp_path / "two.csv"
    write_bars_csv(csv, [good, bad])
    out = tmp_path / "out"
    assert main(["backtest", "--bars", str(csv), "--json", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "JMP: bar 260" in captured.err and "bad print" in captured.err
    assert not (out / "AAA").exists()


def test_costs_beyond_the_meta_agents_bound_name_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """The error named MetaAgentConfig's cost_bps=20002.0, an option the user never typed."""
    from ensemble_trader.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["backtest", "--bars", "synth:easy:1:200", "--cost-bps", "20000"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--cost-bps 20000 plus --slippage-bps 2 is 20002 basis points" in err and "MetaAgentConfig" not in err


@pytest.mark.parametrize("text", ["[1]", "1", '"default"', "null"])
def test_select_says_a_candidate_that_is_json_but_no_object_must_be_one(text: str) -> None:
    """'[1]' was an 'unknown candidate'."""
    from training.meta.select import parse_candidates

    with pytest.raises(ValueError, match="must be a JSON object of MetaAgentConfig options"):
        parse_candidates([text])
    with pytest.raises(ValueError, match="unknown candidate 'hedge-nope'"):
        parse_candidates(["hedge-nope"])
