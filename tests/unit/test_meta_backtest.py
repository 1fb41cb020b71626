"""Ensemble backtest: pipeline with the stages' own steps, evaluation, HTML report.

The agents here are simple rules behind the AgentPool interface and the regime model is built
by hand, so the test needs no trained artifact; the committed ONNX set is exercised by the
integration tests and the CLI.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ensemble_trader.backtest.engine import CostModel, asset_returns, strategy_returns
from ensemble_trader.backtest.ensemble import (
    compare_policies,
    ensemble_net_returns,
    evaluate,
    run_meta,
    run_pipeline,
    until,
)
from ensemble_trader.backtest.metrics import performance, periods_per_year, sharpe_margin_se
from ensemble_trader.backtest.report import write_report
from ensemble_trader.domain.errors import DataError, InvalidMessageError
from ensemble_trader.domain.features import FEATURE_NAMES, FEATURE_VERSION, WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import Regime
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel
from ensemble_trader.domain.synthetic import generate


class RuleAgents:
    """Four hand-written rules with the AgentPool interface (targets from features)."""

    names = ("conservative", "aggressive", "balanced", "contrarian")
    version = "rules-1"
    feature_names = FEATURE_NAMES
    feature_version = FEATURE_VERSION

    def __init__(self) -> None:
        self._i = {n: i for i, n in enumerate(FEATURE_NAMES)}

    def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64)
        trend, ret20, z = f[self._i["trend_10_50"]], f[self._i["ret_20"]], f[self._i["zscore_20"]]
        return np.array([
            0.5 * np.sign(trend),
            float(np.clip(trend * 50.0, -2.0, 2.0)),
            float(np.clip(ret20 * 20.0, -1.0, 1.0)),
            float(np.clip(-z / 2.0, -1.0, 1.0)),
        ])


def hand_regime_model() -> RegimeModel:
    means = np.array([[1.0, -0.5], [-1.0, 0.5], [0.0, -1.0], [-0.3, 1.5]])
    return RegimeModel(
        features=(
            FeatureSpec("ret_20", "identity", 0.0, 0.05),
            FeatureSpec("realized_vol_20", "log", math.log(0.01), 0.5),
        ),
        start_prob=np.full(4, 0.25),
        transmat=np.full((4, 4), 0.02) + np.eye(4) * 0.92,
        means=means,
        covariances=np.full((4, 2), 0.5),
        covariance_type="diag",
        state_regimes=(Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE),
        info={"note": "hand-made for tests"},
    )


def assert_lambda_step_decides_alike(pipeline, config: MetaAgentConfig, agents) -> None:
    """run_meta over the pipeline gives, bar by bar, the intents of MetaAgentStep.__call__ (the
    Lambda's step, which asks the agents itself)."""
    run = run_meta(pipeline, config)
    step = MetaAgentStep(config, agents)
    state = None
    for market, expected in zip(pipeline.market_states, run.intents, strict=True):
        state, decision = step(state, market)
        assert decision.intent == expected


@pytest.fixture(scope="module")
def pipeline():
    series = generate("easy", 500, seed=4).series
    return run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))


def test_pipeline_uses_the_stage_steps_and_warms_up(pipeline) -> None:
    n = len(pipeline.close)
    assert pipeline.agent_targets.shape == (n, 4)
    first = int(np.argmax(pipeline.ready))
    assert first == WARMUP_BARS - 1  # the feature engine's warm-up
    assert np.all(pipeline.agent_targets[:first] == 0.0)
    assert np.any(pipeline.agent_targets[first:] != 0.0)
    assert set(pipeline.regimes) <= {r.value for r in Regime}
    np.testing.assert_allclose(pipeline.probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_backtest_equals_the_lambda_step_bar_by_bar(pipeline) -> None:
    """run_meta (targets precomputed) gives the intents MetaAgentStep.__call__ (pool inside) gives."""
    config = MetaAgentConfig.create(policy="thompson")
    assert_lambda_step_decides_alike(pipeline, config, RuleAgents())


class Accumulating(RuleAgents):
    """Rules whose targets build on the agent's own position (0.3 more each bar along the trend),
    so what the agents are fed back decides every later target."""

    version = "accumulating-1"

    def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
        trend = float(np.asarray(features)[self._i["trend_10_50"]])
        return np.asarray(positions, dtype=np.float64) + 0.3 * (1.0 if trend >= 0 else -1.0)


def test_a_position_bound_bounds_the_ensemble_not_what_the_agents_are_fed() -> None:
    """With a position bound below the agents' reach, each agent is still fed back its own
    targets (as MetaAgentStep books them), the ensemble holds at most the bound, and one
    pipeline serves configurations of any bound: the same intents bar by bar as the Lambda."""
    series = generate("easy", 300, seed=5).series
    pipeline = run_pipeline(series, Accumulating(), RegimeStep(hand_regime_model()))
    assert np.abs(pipeline.agent_targets).max() > 1.5  # the agents accumulate past the bound
    for bound in (0.5, 2.0):
        config = MetaAgentConfig.create(policy="hedge", max_position=bound)
        assert_lambda_step_decides_alike(pipeline, config, Accumulating())
        run = run_meta(pipeline, config)
        assert np.abs(run.positions).max() <= bound + 1e-12


def test_evaluate_reports_every_strategy_with_the_engine_conventions(pipeline) -> None:
    costs = CostModel()
    run = run_meta(pipeline, MetaAgentConfig.create(policy="hedge"))
    result = evaluate(run, costs)
    assert set(result) >= {"ensemble", "agents", "buy_and_hold", "regret", "target", "run"}
    assert set(result["agents"]) == set(RuleAgents.names)
    i0 = result["run"]["start_index"]
    r = asset_returns(pipeline.close[i0:])
    ppy = periods_per_year(pipeline.timestamp[i0:])
    held = run.positions[i0:-1]
    expected = performance(strategy_returns(held, r, costs), held, ppy).as_dict()
    assert result["ensemble"]["overall"] == pytest.approx(expected)
    k = 2
    path = pipeline.agent_targets[i0:-1, k]
    expected = performance(strategy_returns(path, r, costs), path, ppy).as_dict()
    assert result["agents"]["balanced"]["overall"] == pytest.approx(expected)
    assert result["buy_and_hold"]["overall"]["turnover"] == pytest.approx(ppy / len(r))
    regret = result["regret"]
    assert set(regret["by_regime"]) <= {r.value for r in Regime}
    assert regret["overall"] == pytest.approx(run.regret_curve(i0)[-1])
    t = result["target"]
    assert t["best_agent"] in RuleAgents.names
    k_best = list(pipeline.agent_names).index(t["best_agent"])
    best_path = pipeline.agent_targets[i0:-1, k_best]
    c = 1.2 if t["best_sharpe"] >= 0 else 0.8
    assert t["margin_se"] == pytest.approx(sharpe_margin_se(
        strategy_returns(held, r, costs), strategy_returns(best_path, r, costs), c, ppy))
    assert t["margin_se"] > 0
    net, ppy_net = ensemble_net_returns(run, costs)
    assert ppy_net == ppy
    assert performance(net, held, ppy).sharpe == pytest.approx(result["ensemble"]["overall"]["sharpe"])
    json.dumps(result)


def test_walk_forward_start_evaluates_only_later_bars(pipeline) -> None:
    run = run_meta(pipeline, MetaAgentConfig.create())
    start = str(pipeline.timestamp[300])[:10]
    result = evaluate(run, start=start)
    assert result["run"]["start_index"] == 300
    assert result["run"]["periods"] == len(pipeline.close) - 301
    # the plotted regret curve ends where the ledger does (the reward at bar 300 is for the
    # period before the window, and is a number here, not NaN)
    assert np.isfinite(run.meta_rewards[300])
    curve = run.regret_curve(300)
    assert curve[0] == 0.0 and len(curve) == len(pipeline.close) - 300
    assert curve[-1] == pytest.approx(result["regret"]["overall"])
    with pytest.raises(DataError, match="fewer than two warm bars"):
        evaluate(run, start="2100-01-01")


def test_compare_policies_runs_every_configuration(pipeline) -> None:
    configs = [MetaAgentConfig.create(policy=p) for p in ("ucb", "exp3", "dts")]
    table = compare_policies(pipeline, configs)
    assert list(table) == ["ucb/regime/blend/full", "exp3/regime/blend/full", "dts/regime/blend/full"]
    assert all(math.isfinite(v["ensemble"]["sharpe"]) for v in table.values())


def test_a_short_window_is_annualised_at_the_series_frequency(pipeline) -> None:
    """Three daily bars over a weekend once gave 126 bars a year (their median step alone)."""
    run = run_meta(pipeline, MetaAgentConfig.create())
    result = evaluate(run, start=str(pipeline.timestamp[-3])[:10])
    assert result["run"]["periods"] == 2
    assert result["run"]["periods_per_year"] == periods_per_year(pipeline.timestamp)


def test_one_period_meets_no_target(pipeline) -> None:
    """Every Sharpe of a single period is 0 by convention, so the goal (0) read as met."""
    run = run_meta(pipeline, MetaAgentConfig.create())
    result = evaluate(run, start=str(pipeline.timestamp[-2])[:10])
    assert result["run"]["periods"] == 1
    assert result["target"]["sharpe_met"] is False
    assert all(m["overall"]["sortino"] == 0.0 for m in [result["ensemble"], *result["agents"].values()])


def test_compare_prints_the_policies_table(capsys) -> None:
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:easy:1:300", "--compare"]) == 0
    out = capsys.readouterr().out
    assert "policies on the same run" in out
    for policy in ("ucb", "ducb", "swucb", "thompson", "dts", "exp3", "hedge"):
        assert f"  {policy}/regime/blend/full" in out


def test_compare_gives_policy_params_to_the_chosen_policy_only(capsys) -> None:
    """Hedge's ``eta`` was handed to every compared policy (``ucb: bad hyperparameters``); each
    compared configuration is now built by ``MetaAgentConfig.create``, the chosen policy's with
    its ``policy_params``, so the chosen policy's row is the main run."""
    from ensemble_trader.cli import main

    argv = ["backtest", "--bars", "synth:easy:1:300", "--json", "--meta-config", '{"policy_params": {"eta": 0.2}}']
    assert main([*argv, "--compare"]) == 0
    printed = json.loads(capsys.readouterr().out)
    hedge = printed["policies"]["hedge/regime/blend/full"]
    assert hedge["ensemble"] == printed["ensemble"] and hedge["regret"] == printed["regret"]["overall"]
    assert printed["run"]["config"]["policy_params"] == {"eta": 0.2}
    from ensemble_trader.cli.backtest import POLICY_CHOICES, compared_configs

    configs = compared_configs(MetaAgentConfig.create(policy="hedge", policy_params={"eta": 0.2}))
    assert [c.policy_params for c in configs] == [None] * (len(configs) - 1) + [{"eta": 0.2}]
    assert [c.policy for c in configs] == list(POLICY_CHOICES) and POLICY_CHOICES[-1] == "hedge"
    unchecked = MetaAgentConfig.create().model_copy(update={"max_position": 9.0})  # model_copy checks nothing
    with pytest.raises(InvalidMessageError, match="max_position"):  # each compared one is checked as it is built
        compared_configs(unchecked)


def test_report_is_self_contained_html_with_plots(pipeline, tmp_path) -> None:
    run = run_meta(pipeline, MetaAgentConfig.create(policy="ducb", mode="select"))
    result = evaluate(run)
    path = write_report(run, result, tmp_path / "out")
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 3
    for text in ("Performance", "Sharpe by regime", "regret", "switches", "buy_and_hold"):
        assert text in page
    assert json.loads((tmp_path / "out" / "report.json").read_text())["run"]["policy"] == "ducb"
    assert "Policies on the same run" not in page
    result["policies"] = compare_policies(pipeline, [MetaAgentConfig.create(policy="exp3")])
    assert "<th>exp3/regime/blend/full</th>" in write_report(run, result, tmp_path / "cmp").read_text()


def test_end_equals_running_on_the_shorter_series(pipeline) -> None:
    """Every stage is causal: cutting a run at ``end`` equals running on the cut series."""
    config = MetaAgentConfig.create(policy="dts")
    full = run_meta(pipeline, config)
    n = 400
    end = str(pipeline.timestamp[n])[:10]
    series = generate("easy", 500, seed=4).series[:n]
    short = run_meta(run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model())), config)
    assert evaluate(full, end=end) == evaluate(short)
    assert evaluate(full, start=str(pipeline.timestamp[200])[:10], end=end)["run"]["periods"] == n - 201


def test_vol_overlay_scales_are_recorded_and_sliced(pipeline) -> None:
    run = run_meta(pipeline, MetaAgentConfig.create(vol_target="market", vol_target_max_scale=1.0))
    scales = [
        i.explanation_detail["vol_target"]["scale"] if i.explanation_detail.get("vol_target") else 1.0
        for i in run.intents
    ]
    np.testing.assert_array_equal(run.vol_scales, scales)
    assert run.vol_scales.max() <= 1.0 and run.vol_scales.min() < 1.0
    result = evaluate(run)
    assert result["run"]["vol_scale_mean"] == pytest.approx(run.vol_scales[result["run"]["start_index"]:].mean())
    end = str(pipeline.timestamp[400])[:10]
    assert len(until(run, end).vol_scales) == 400
    off = run_meta(pipeline, MetaAgentConfig.create(vol_target="none"))
    assert np.all(off.vol_scales == 1.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shrinkage", "1.5"], "argument --shrinkage: expected a number in [0, 1], got '1.5'"),
        (["--meta-config", "{bad"], "argument --meta-config: not valid JSON"),
        (["--meta-config", "[1]"], "argument --meta-config: expected a JSON object"),
        (["--vol-target", "vix"], "argument --vol-target: invalid choice: 'vix'"),
        # set by the backtest's own flags: given twice they crashed MetaAgentConfig.create
        (["--meta-config", '{"cost_bps": 10}'], "cost_bps is set by --cost-bps and --slippage-bps, not here"),
        (["--meta-config", '{"random_state": 3, "strategy_id": "x"}'],
         "random_state is set by --seed, not here; strategy_id is set by the ET_STRATEGY_ID setting"),
    ],
)
def test_backtest_cli_refuses_bad_meta_options(argv, message, capsys) -> None:
    from ensemble_trader.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["backtest", "--bars", "synth:easy:1:200", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_backtest_json_is_the_issue_contract(tmp_path, capsys) -> None:
    """``--json``: {"ensemble": M, "agents": {name: M}, "buy_and_hold": M, "regret": {...}} with M
    the metrics themselves; the per-regime metrics under ``by_regime``; report.json the same."""
    from ensemble_trader.backtest.metrics import METRIC_NAMES
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:realistic:7:700", "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"ensemble", "agents", "buy_and_hold", "regret", "by_regime", "target", "run"}
    assert set(printed["ensemble"]) == set(METRIC_NAMES) == set(printed["buy_and_hold"])
    assert all(set(m) == set(METRIC_NAMES) for m in printed["agents"].values())
    assert set(printed["by_regime"]) == {"ensemble", "agents", "buy_and_hold"}
    assert set(printed["by_regime"]["agents"]) == set(printed["agents"])
    for regime, m in printed["by_regime"]["ensemble"].items():
        assert regime in {r.value for r in Regime} and set(m) == set(METRIC_NAMES)
    assert printed["target"]["ensemble_sharpe"] == printed["ensemble"]["sharpe"]
    assert json.loads((tmp_path / "report.json").read_text()) == printed
