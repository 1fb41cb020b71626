"""Parity: the local stack (features λ → regime λ → meta_agent λ through the ESM emulator) makes
exactly the decisions of the in-process backtest on the same bars — same intent ids, targets,
weights and explanations.

Both sides load the same artifacts from ``ET_MODELS_DIR``: the committed regime model and a
small agent set written here with ``onnx.helper`` (linear policies over every feature and the
agent's own position, clipped to its leverage), so the test depends on the code paths, not on
a training run.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from ensemble_trader.backtest.ensemble import run_meta, run_pipeline
from ensemble_trader.domain.agents import AGENT_NAMES, DEFAULT_LEVERAGE, AgentPool
from ensemble_trader.domain.features import FEATURE_NAMES, WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.regime_model import RegimeModel
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime.settings import Settings, get_settings
from onnx import TensorProto, helper, numpy_helper

from training.agents.modelset import write_model_set

pytestmark = pytest.mark.slow

BARS = WARMUP_BARS + 80  # 80 ready bars: the agents act only on ready vectors


def linear_policy(w: np.ndarray, limit: float) -> onnx.ModelProto:
    """action = clip(obs @ w, -limit, limit), obs (n, F + 1) = features + own position."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["raw"]), helper.make_node("Clip", ["raw", "lo", "hi"], ["action"])],
        "agent",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", len(w)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["n", 1])],
        [
            numpy_helper.from_array(w.reshape(-1, 1).astype(np.float32), "w"),
            numpy_helper.from_array(np.array(-limit, np.float32), "lo"),
            numpy_helper.from_array(np.array(limit, np.float32), "hi"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    entries = {}
    for name in AGENT_NAMES:
        w = rng.normal(scale=0.3, size=len(FEATURE_NAMES) + 1)
        onnx.save(linear_policy(w, DEFAULT_LEVERAGE[name]), agents_dir / f"{name}.onnx")
        entries[name] = {"file": f"{name}.onnx", "leverage": DEFAULT_LEVERAGE[name]}
    write_model_set(agents_dir, agents=entries, feature_names=FEATURE_NAMES, training={"note": "parity test"})
    shutil.copytree(Settings().models_dir / "regime", tmp_path / "regime")
    monkeypatch.setenv("ET_MODELS_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_local_stack_decides_exactly_like_the_backtest(clean_stack, models_dir) -> None:
    stack = clean_stack.stack
    settings = stack.settings
    assert settings.models_dir == models_dir
    series = generate("realistic", BARS, seed=21, symbol="PARITY").series

    pipeline = run_pipeline(
        series, AgentPool.load(models_dir / "agents"), RegimeStep(RegimeModel.load(models_dir / "regime"))
    )
    expected = run_meta(pipeline, MetaAgentConfig.create(strategy_id=settings.strategy_id)).intents

    esm = clean_stack.emulator(["features", "regime", "meta_agent"])
    clean_stack.put_bars("market-data", list(series.bars()))
    esm.run_until_drained()
    got = sorted((OrderIntent.model_validate(m) for m in stack.read_queue("order-intents")),
                 key=lambda i: i.timestamp)

    assert len(got) == len(expected) == BARS
    assert any(i.target_position != 0.0 for i in got)
    for live, offline in zip(got, expected, strict=True):
        assert live.intent_id == offline.intent_id
        assert live.target_position == offline.target_position
        assert live.agent_weights == offline.agent_weights
        assert live.explanation == offline.explanation
