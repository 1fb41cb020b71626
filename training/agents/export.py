"""ONNX export of trained policies, with a parity check against torch.

Each stable-baselines3 PPO policy is wrapped as one deterministic function of the raw
observation: the features extractor (which holds the observation standardisation, see
:class:`StandardizedObservation`) → ``mlp_extractor.forward_actor`` → ``action_net`` (the
Gaussian mean, i.e. ``predict(deterministic=True)``) → clamp to ``[-L, L]``. The wrappers are
exported with the dynamo exporter (opset 18, dynamic batch; the exporter's per-node debugging
metadata, which holds absolute source paths, is stripped). A fused graph evaluates all four
agents in one call for serving. An agent bagged over seeds (:class:`AveragedPolicy`) is still one
graph whose action is the mean of its members' actions. Every exported file is checked: onnxruntime's output must equal
torch's to ``PARITY_ATOL`` on held-out observations, or the export fails.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from ensemble_trader.domain.agents import inference_session
from ensemble_trader.domain.errors import ModelArtifactError
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

OPSET = 18
PARITY_ATOL = 1e-5
OBS_CLIP = 10.0


class StandardizedObservation(BaseFeaturesExtractor):
    """Features extractor: ``clip((obs - mean) / scale, -10, 10)`` with fixed statistics.

    The statistics come from the training data (features) and the leverage limit (position),
    are stored as buffers and therefore travel inside the exported ONNX graph: serving feeds raw
    features.
    """

    def __init__(self, observation_space: gym.spaces.Box, mean: Sequence[float], scale: Sequence[float]):
        super().__init__(observation_space, features_dim=int(observation_space.shape[0]))
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        scale_t = torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if mean_t.shape != observation_space.shape or scale_t.shape != observation_space.shape:
            raise ValueError(f"mean/scale must have shape {observation_space.shape}")
        if torch.any(scale_t <= 0):
            raise ValueError("every scale must be > 0")
        self.register_buffer("mean", mean_t)
        self.register_buffer("scale", scale_t)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.clamp((observations - self.mean) / self.scale, -OBS_CLIP, OBS_CLIP)


class DeterministicPolicy(nn.Module):
    """obs (n, F+1) → clamp(mean action, -L, L) (n, 1): what :class:`AgentPool` serves."""

    def __init__(self, policy: nn.Module, leverage: float):
        super().__init__()
        self.extractor = policy.pi_features_extractor
        self.mlp_extractor = policy.mlp_extractor
        self.action_net = policy.action_net
        self.leverage = float(leverage)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        latent = self.mlp_extractor.forward_actor(self.extractor(obs))
        return torch.clamp(self.action_net(latent), -self.leverage, self.leverage)


class AveragedPolicy(nn.Module):
    """obs (n, F+1) → clamp(mean of the members' deterministic actions, -L, L) (n, 1).

    Bagging over seeds: the members are the same agent trained with different seeds (each with
    its own validation checkpoint); averaging their actions cuts the seed-to-seed variance of PPO.
    It is one module, so it exports as one graph and serving sees one action per agent.
    """

    def __init__(self, members: Sequence[DeterministicPolicy]):
        super().__init__()
        if not members:
            raise ValueError("AveragedPolicy needs at least one member")
        leverages = {m.leverage for m in members}
        if len(leverages) != 1:
            raise ValueError(f"members have different leverage limits {sorted(leverages)}")
        self.members = nn.ModuleList(members)
        self.leverage = leverages.pop()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([member(obs) for member in self.members], dim=0).mean(dim=0)
        return torch.clamp(mean, -self.leverage, self.leverage)


class FusedPolicies(nn.Module):
    """features (n, F), positions (n, A) → actions (n, A): every agent in one graph."""

    def __init__(self, policies: Sequence[nn.Module]):
        super().__init__()
        self.policies = nn.ModuleList(policies)

    def forward(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        outs = [
            policy(torch.cat((features, positions[:, i : i + 1]), dim=1))
            for i, policy in enumerate(self.policies)
        ]
        return torch.cat(outs, dim=1)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], output: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dynamic = tuple({0: batch} for _ in args)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            input_names=inputs,
            output_names=[output],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            verbose=False,
        )
    _strip_metadata(path)


def _strip_metadata(path: Path) -> None:
    """Drop the exporter's per-node metadata (Python stack traces with absolute source paths,
    FX node dumps): it is debugging noise, makes files depend on where the code was checked out
    and would leak the machine's paths into the committed model set."""
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
    del model.metadata_props[:]
    onnx.save(model, str(path))


def max_parity_error(module: nn.Module, path: Path, feeds: Mapping[str, np.ndarray]) -> float:
    """Largest |onnxruntime - torch| over ``feeds`` (float32 arrays, in input order)."""
    with torch.no_grad():
        expected = module(*(torch.as_tensor(v) for v in feeds.values())).numpy()
    got = inference_session(path).run(None, dict(feeds))[0]
    if got.shape != expected.shape:
        raise ModelArtifactError(f"{path.name}: onnxruntime output shape {got.shape} != torch {expected.shape}")
    return float(np.max(np.abs(got - expected)))


def checked_parity(module: nn.Module, path: Path, feeds: Mapping[str, np.ndarray]) -> float:
    """:func:`max_parity_error`, raising ModelArtifactError when it exceeds ``PARITY_ATOL``."""
    error = max_parity_error(module, path, feeds)
    if not error <= PARITY_ATOL:
        raise ModelArtifactError(f"{path.name}: onnxruntime differs from torch by {error:.2e} > {PARITY_ATOL:.0e}")
    return error


def export_policy(policy: nn.Module, path: Path, heldout_obs: np.ndarray) -> float:
    """Export one agent to ``path`` and return its parity error on ``heldout_obs`` (n, F+1)."""
    obs = np.ascontiguousarray(heldout_obs, dtype=np.float32)
    _export(policy, (torch.as_tensor(obs[:2]),), path, ["obs"], "action")
    return checked_parity(policy, path, {"obs": obs})


def export_fused(
    policies: Sequence[nn.Module], path: Path, features: np.ndarray, positions: np.ndarray
) -> float:
    """Export the fused graph of ``policies`` and return its parity error."""
    fused = FusedPolicies(policies).eval()
    f = np.ascontiguousarray(features, dtype=np.float32)
    p = np.ascontiguousarray(positions, dtype=np.float32)
    _export(fused, (torch.as_tensor(f[:2]), torch.as_tensor(p[:2])), path, ["features", "positions"], "actions")
    return checked_parity(fused, path, {"features": f, "positions": p})
