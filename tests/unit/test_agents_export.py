"""ONNX export: the exported graph equals the SB3 policy's deterministic action (torch) to 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ensemble_trader.backtest.engine import prepare  # noqa: E402
from ensemble_trader.domain.errors import ModelArtifactError  # noqa: E402
from ensemble_trader.domain.features import FEATURE_NAMES  # noqa: E402
from ensemble_trader.domain.synthetic import generate  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

from training.agents.env import TradingEnv  # noqa: E402
from training.agents.export import (  # noqa: E402
    AveragedPolicy,
    DeterministicPolicy,
    FusedPolicies,
    StackedPolicies,
    StandardizedObservation,
    export_fused,
    export_policy,
    max_parity_error,
    stackable,
)
from training.agents.rewards import AggressiveReward  # noqa: E402
from training.agents.train import observation_stats  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _ppo(series, seed=0):
    mean, scale = observation_stats([series], 2.0)
    env = TradingEnv([series], AggressiveReward(), leverage=2.0, random_state=0)
    return PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=32,
        seed=seed,
        device="cpu",
        policy_kwargs=dict(
            net_arch=[16, 16],
            features_extractor_class=StandardizedObservation,
            features_extractor_kwargs=dict(mean=mean.tolist(), scale=scale.tolist()),
        ),
    )


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    series = prepare(generate("realistic", 300, seed=9).series)
    return _ppo(series), series


def _observations(series, n=200, leverage=2.0):
    rng = np.random.default_rng(1)
    feats = series.features[rng.choice(len(series.features), n)]
    return np.hstack((feats, rng.uniform(-leverage, leverage, (n, 1)))).astype(np.float32)


def test_wrapper_equals_predict_deterministic(model):
    ppo, series = model
    obs = _observations(series)
    wrapper = DeterministicPolicy(ppo.policy, 2.0).eval()
    with torch.no_grad():
        ours = wrapper(torch.as_tensor(obs)).numpy()
    sb3, _ = ppo.predict(obs, deterministic=True)
    np.testing.assert_allclose(ours, sb3, atol=1e-6)


def test_onnx_parity_single_and_fused(model, tmp_path):
    ppo, series = model
    obs = _observations(series)
    wrapper = DeterministicPolicy(ppo.policy, 2.0).eval()
    error = export_policy(wrapper, tmp_path / "a.onnx", obs)
    assert error <= 1e-5
    # the batch dimension is dynamic: one row works as well as 200
    assert max_parity_error(wrapper, tmp_path / "a.onnx", {"obs": obs[:1]}) <= 1e-5
    features = obs[:, : len(FEATURE_NAMES)]
    positions = np.repeat(obs[:, -1:], 2, axis=1)
    error = export_fused([wrapper, wrapper], tmp_path / "pool.onnx", features, positions)
    assert error <= 1e-5
    assert (tmp_path / "a.onnx").stat().st_size < 200_000  # weights inline, no external data file
    assert not list(tmp_path.glob("*.data"))
    # no exporter debugging metadata: it holds absolute source paths of this checkout
    for name in ("a.onnx", "pool.onnx"):
        data = (tmp_path / name).read_bytes()
        assert b"stack_trace" not in data and str(REPO).encode() not in data


def test_standardisation_is_inside_the_graph(model):
    ppo, series = model
    extractor = ppo.policy.pi_features_extractor
    obs = torch.as_tensor(_observations(series)[:5])
    expected = torch.clamp((obs - extractor.mean) / extractor.scale, -10, 10)
    torch.testing.assert_close(extractor(obs), expected)


def test_parity_failure_is_reported(model, tmp_path, monkeypatch):
    ppo, series = model
    obs = _observations(series)
    wrapper = DeterministicPolicy(ppo.policy, 2.0).eval()
    export_policy(wrapper, tmp_path / "a.onnx", obs)
    with torch.no_grad():
        wrapper.action_net.bias.add_(0.5)  # torch changes after export: the check must catch it
    assert max_parity_error(wrapper, tmp_path / "a.onnx", {"obs": obs}) > 1e-3
    import training.agents.export as export

    monkeypatch.setattr(export, "PARITY_ATOL", -1.0)  # nothing passes: the export must refuse
    with pytest.raises(ModelArtifactError, match="differs from torch"):
        export_policy(wrapper, tmp_path / "b.onnx", obs)
    with pytest.raises(ValueError):
        StandardizedObservation(ppo.observation_space, [0.0] * 3, [1.0] * 3)


def test_averaged_policy_is_the_clipped_mean_of_its_members_and_exports_as_one_graph(model, tmp_path):
    ppo, series = model
    obs = _observations(series)
    members = [DeterministicPolicy(ppo.policy, 2.0).eval(), DeterministicPolicy(_ppo(series, seed=1).policy, 2.0).eval()]
    with torch.no_grad():
        members[1].action_net.bias.add_(3.0)  # push the second member against the limit: clipping matters
        each = [member(torch.as_tensor(obs)).numpy() for member in members]
        averaged = AveragedPolicy(members).eval()
        ours = averaged(torch.as_tensor(obs)).numpy()
    assert np.all(each[1] == 2.0) and not np.allclose(each[0], each[1])
    np.testing.assert_allclose(ours, (each[0] + each[1]) / 2, atol=1e-6)
    assert np.all(np.abs(ours) <= 2.0)
    assert export_policy(averaged, tmp_path / "bag.onnx", obs) <= 1e-5
    features = obs[:, : len(FEATURE_NAMES)]
    positions = np.repeat(obs[:, -1:], 2, axis=1)
    assert export_fused([averaged, members[0]], tmp_path / "pool.onnx", features, positions) <= 1e-5
    with pytest.raises(ValueError, match="leverage"):
        AveragedPolicy([members[0], DeterministicPolicy(ppo.policy, 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        AveragedPolicy([])


def _onnx_ops(path):
    import onnx

    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_stacked_graph_equals_the_agents_and_serves_with_far_fewer_nodes(model, tmp_path):
    ppo, series = model
    obs = _observations(series)
    members = [DeterministicPolicy(_ppo(series, seed=k).policy, 2.0).eval() for k in range(3)]
    one = DeterministicPolicy(_ppo(series, seed=5).policy, 1.0).eval()
    with torch.no_grad():
        members[2].action_net.bias.add_(3.0)  # a member at its limit: the member clamp matters
        one.action_net.bias.sub_(2.0)  # an agent at its own (smaller) limit
        one.extractor.mean.add_(0.3)  # its own statistics
    policies = [AveragedPolicy(members).eval(), one, members[0]]
    assert stackable(policies)
    features = obs[:, : len(FEATURE_NAMES)]
    rng = np.random.default_rng(3)
    positions = rng.uniform(-1, 1, (len(obs), 3)).astype(np.float32)
    args = (torch.as_tensor(features), torch.as_tensor(positions))
    with torch.no_grad():
        reference = FusedPolicies(policies).eval()(*args).numpy()
        stacked = StackedPolicies(policies).eval()(*args).numpy()
    np.testing.assert_allclose(stacked, reference, atol=1e-6)
    assert np.any(reference[:, 1] == -1.0)  # the limits were reached, and kept
    assert export_fused(policies, tmp_path / "pool.onnx", features, positions) <= 1e-5
    ops = _onnx_ops(tmp_path / "pool.onnx")
    assert "Gemm" not in ops and ops.count("MatMul") >= 3  # batched layers, not one chain per member
    assert len(ops) < 60


def test_members_with_other_layouts_fall_back_to_one_chain_per_agent(model, tmp_path):
    ppo, series = model
    obs = _observations(series)
    small = DeterministicPolicy(ppo.policy, 2.0).eval()
    other = PPO("MlpPolicy", TradingEnv([series], AggressiveReward(), leverage=2.0, random_state=0), n_steps=64,
                batch_size=32, seed=0, device="cpu", policy_kwargs=dict(
                    net_arch=[8], features_extractor_class=StandardizedObservation,
                    features_extractor_kwargs=dict(mean=[0.0] * obs.shape[1], scale=[1.0] * obs.shape[1])))
    wide = DeterministicPolicy(other.policy, 2.0).eval()
    assert not stackable([small, wide])
    with pytest.raises(ValueError, match="layer shapes differ"):
        StackedPolicies([small, wide])
    features = obs[:, : len(FEATURE_NAMES)]
    positions = np.repeat(obs[:, -1:], 2, axis=1)
    assert export_fused([small, wide], tmp_path / "pool.onnx", features, positions) <= 1e-5
    assert "Gemm" in _onnx_ops(tmp_path / "pool.onnx")
    # a policy net out of the Linear, activation, Linear, ... order cannot be stacked
    shuffled = DeterministicPolicy(_ppo(series, seed=2).policy, 2.0).eval()
    net = shuffled.mlp_extractor.policy_net
    shuffled.mlp_extractor.policy_net = torch.nn.Sequential(net[1], net[0], net[3], net[2])
    assert not stackable([small, shuffled])
    with pytest.raises(ValueError, match="Linear, Tanh/ReLU, Linear"):
        StackedPolicies([shuffled])
