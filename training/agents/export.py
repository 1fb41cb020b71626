"""ONNX export of trained policies, with a parity check against torch.

Each stable-baselines3 PPO policy is wrapped as one deterministic function of the raw
observation: the features extractor (which holds the observation standardisation, see
:class:`StandardizedObservation`) → ``mlp_extractor.forward_actor`` → ``action_net`` (the
Gaussian mean, i.e. ``predict(deterministic=True)``) → clamp to ``[-L, L]``. The wrappers are
exported with the dynamo exporter (opset 18, dynamic batch; the exporter's per-node debugging
metadata, which holds absolute source paths, is stripped). A fused graph evaluates all four
agents in one call for serving, with the member networks stacked into batched matrix products
(:class:`StackedPolicies`). An agent bagged over seeds (:class:`AveragedPolicy`) is still one
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


class StackedPolicies(nn.Module):
    """The fused graph served by :class:`AgentPool`, with every member network stacked.

    Same function as :class:`FusedPolicies` — features (n, F), positions (n, A) → actions
    (n, A) — but the M member MLPs of the A agents (M > A when agents bag seeds) run as batched
    matrix products over a leading member axis instead of M separate chains of Gemm nodes: each
    member's observation (the features and its agent's position) is standardised with the
    member's own statistics, goes through the stacked layers, is clamped to its leverage limit,
    and an (M, A) averaging matrix turns member actions into agent actions (then clamped to
    the agent's limit, as :class:`AveragedPolicy` does). 26 ONNX nodes instead of 113 for twelve
    members: the onnxruntime call takes ~40 % less time, a whole decision about a third less
    (docs/agents.md, *Serving*).

    Every member must be a :class:`DeterministicPolicy` with a :class:`StandardizedObservation`
    extractor and an MLP of Linear layers with the same shapes and activation as the others
    (stable-baselines3's ``MlpExtractor``); :func:`stackable` says whether a set qualifies.
    """

    ACTIVATIONS = {nn.Tanh: torch.tanh, nn.ReLU: torch.relu}

    def __init__(self, policies: Sequence[nn.Module]):
        super().__init__()
        members: list[DeterministicPolicy] = []
        owner: list[int] = []
        for i, policy in enumerate(policies):
            group = list(policy.members) if isinstance(policy, AveragedPolicy) else [policy]
            members += group
            owner += [i] * len(group)
        layers, activation = _mlp_layout(members)
        self.activation = self.ACTIVATIONS[activation]
        self.n_layers = len(layers[0])
        average = torch.zeros(len(members), len(policies))
        for m, i in enumerate(owner):
            average[m, i] = 1.0 / owner.count(i)
        self.register_buffer("owner", torch.tensor(owner, dtype=torch.int64))
        self.register_buffer("mean", torch.stack([m.extractor.mean for m in members])[:, None, :])
        self.register_buffer("scale", torch.stack([m.extractor.scale for m in members])[:, None, :])
        for k in range(self.n_layers):
            self.register_buffer(f"weight{k}", torch.stack([ls[k].weight.detach().T for ls in layers]))
            self.register_buffer(f"bias{k}", torch.stack([ls[k].bias.detach() for ls in layers])[:, None, :])
        self.register_buffer("member_limit", torch.tensor([m.leverage for m in members])[:, None, None])
        self.register_buffer("average", average)
        self.register_buffer("agent_limit", torch.tensor([float(p.leverage) for p in policies]))

    def forward(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        n, a = features.shape[0], positions.shape[1]
        obs = torch.cat((features.unsqueeze(1).expand(n, a, features.shape[1]), positions.unsqueeze(2)), dim=2)
        x = obs[:, self.owner, :].transpose(0, 1)  # (M, n, F+1): each member sees its agent's position
        x = torch.clamp((x - self.mean) / self.scale, -OBS_CLIP, OBS_CLIP)
        for k in range(self.n_layers):
            x = torch.matmul(x, getattr(self, f"weight{k}")) + getattr(self, f"bias{k}")
            if k < self.n_layers - 1:
                x = self.activation(x)
        x = torch.minimum(torch.maximum(x, -self.member_limit), self.member_limit)  # (M, n, 1)
        actions = torch.matmul(x.squeeze(2).transpose(0, 1), self.average)  # (n, A)
        return torch.minimum(torch.maximum(actions, -self.agent_limit), self.agent_limit)


def _mlp_layout(members: Sequence[nn.Module]) -> tuple[list[list[nn.Linear]], type[nn.Module]]:
    """Each member's Linear layers (hidden ones, then the action head) and the one activation
    they share; ValueError naming what differs when the members cannot be stacked."""
    layers: list[list[nn.Linear]] = []
    activations: set[type[nn.Module]] = set()
    for k, member in enumerate(members):
        if not isinstance(member, DeterministicPolicy) or not isinstance(member.extractor, StandardizedObservation):
            raise ValueError(f"member {k} is not a DeterministicPolicy with a StandardizedObservation extractor")
        policy_net = getattr(member.mlp_extractor, "policy_net", None)
        if not isinstance(policy_net, nn.Sequential):
            raise ValueError(f"member {k}: its mlp_extractor has no policy_net Sequential")
        hidden = list(policy_net)
        linear, acts = hidden[0::2], [type(m) for m in hidden[1::2]]
        if (len(linear) != len(acts) or not all(isinstance(m, nn.Linear) for m in linear)
                or any(act not in StackedPolicies.ACTIVATIONS for act in acts)):
            raise ValueError(f"member {k}: the policy net must be Linear, Tanh/ReLU, Linear, ...; got {hidden}")
        if not isinstance(member.action_net, nn.Linear):
            raise ValueError(f"member {k}: the action head is not a Linear layer")
        if any(layer.bias is None for layer in [*linear, member.action_net]):
            raise ValueError(f"member {k}: every Linear layer needs a bias")
        layers.append([*linear, member.action_net])
        activations.update(acts)
    shapes = {tuple(tuple(layer.weight.shape) for layer in ls) for ls in layers}
    if len(shapes) != 1:
        raise ValueError(f"the members' layer shapes differ: {sorted(shapes)}")
    if len(activations) > 1:
        raise ValueError(f"the members use different activations: {sorted(a.__name__ for a in activations)}")
    return layers, activations.pop() if activations else nn.Tanh


def stackable(policies: Sequence[nn.Module]) -> bool:
    """Whether :class:`StackedPolicies` can serve ``policies`` (same MLP layout everywhere)."""
    members = [m for p in policies for m in (p.members if isinstance(p, AveragedPolicy) else [p])]
    try:
        _mlp_layout(members)
    except ValueError:
        return False
    return True


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
    """Export the fused graph of ``policies`` and return its parity error.

    The graph is :class:`StackedPolicies` when the policies share one MLP layout (checked to
    equal the agents' own modules, :class:`FusedPolicies`, to ``PARITY_ATOL`` in torch before
    export), else :class:`FusedPolicies`; onnxruntime's output must equal torch's either way."""
    f = np.ascontiguousarray(features, dtype=np.float32)
    p = np.ascontiguousarray(positions, dtype=np.float32)
    reference = FusedPolicies(policies).eval()
    fused: nn.Module = reference
    if stackable(policies):
        fused = StackedPolicies(policies).eval()
        with torch.no_grad():
            args = (torch.as_tensor(f), torch.as_tensor(p))
            error = float(torch.max(torch.abs(fused(*args) - reference(*args))))
        if not error <= PARITY_ATOL:
            raise ModelArtifactError(
                f"{path.name}: the stacked graph differs from the agents by {error:.2e} > {PARITY_ATOL:.0e}"
            )
    _export(fused, (torch.as_tensor(f[:2]), torch.as_tensor(p[:2])), path, ["features", "positions"], "actions")
    return checked_parity(fused, path, {"features": f, "positions": p})
