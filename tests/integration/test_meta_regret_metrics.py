"""The meta_agent Lambda's regret metrics on the local stack: the runner ``build_runner`` wires with
the handler's own Powertools metrics publishes each symbol's regret in a metric set of its own,
with a ``symbol`` dimension beside ``service`` and ``stage`` (one series per symbol: values of
several symbols under one series averaged to nothing on the dashboard)."""

from __future__ import annotations

import json

import pytest
from ensemble_trader.backtest.ensemble import run_pipeline
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.meta_agent_stage import build_runner
from ensemble_trader.runtime.observability import METRICS_NAMESPACE
from ensemble_trader.runtime.stage import StageStats

from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

pytestmark = pytest.mark.slow


def test_each_symbols_regret_is_a_metric_set_with_its_symbol(clean_stack, capsys) -> None:
    stack = clean_stack.stack
    handler = load_module("meta_agent")
    states = []
    for symbol, seed in (("REGA", 5), ("REGB", 9)):
        series = generate("realistic", WARMUP_BARS + 40, seed=seed, symbol=symbol).series  # 40 ready bars
        states.extend(run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model())).market_states)
    runner = build_runner(stack.settings, RuleAgents(), metrics=handler.metrics, config=MetaAgentConfig.create())
    runner.stats = StageStats()
    records = [kinesis_record(s.model_dump_json().encode(), partition_key=s.symbol,
                              sequence_number=f"{i:020d}", stream="market-state") for i, s in enumerate(states)]
    capsys.readouterr()
    assert runner.process(kinesis_event(records)) == {"batchItemFailures": []}
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    regret = [b for b in blobs if "meta_agent_regret" in b]
    assert sorted(b["symbol"] for b in regret) == ["REGA", "REGB"]  # one set per symbol of the batch
    for blob in regret:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE
        assert sorted(directive["Dimensions"][0]) == ["service", "stage", "symbol"]
        assert blob["service"] == "meta_agent" and blob["stage"] == stack.settings.stage
    assert regret[0]["meta_agent_regret"] != regret[1]["meta_agent_regret"]
    assert not any(name.startswith("meta_agent_regret") for name in handler.metrics.metric_set)
