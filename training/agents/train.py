"""Training job of the four agents (SageMaker training-container contract, runs locally too).

One job trains every agent with stable-baselines3 PPO on torch CPU (one thread), selects each
agent's checkpoint on the validation window only, exports the set to ONNX (parity-checked),
measures it on the test window with the served code (:class:`AgentPool`) and writes the model
set with its manifest.

Walk-forward split: the real series that begins first is cut by time into train (first
``train_fraction`` of its bars), validation (next ``validation_fraction``) and test (the rest),
and every other real series at the same calendar dates (:func:`calendar_cuts`), so every
validation and test window lies strictly after everything the agents trained on, in any series.
The S&P 500 shipped with arch (1999-2018) gives train 1999-09-09 (after the features' 173-bar
warm-up) … 2012-12-31, validation 2013-01-02 … 2014-12-30, test 2014-12-31 … 2018-12-31; the
BTC-USD hourly bars (2017-19) then lie wholly in the test period. Synthetic series are cut at
their own fractions. Features are computed over the whole series (they are causal), rewards
inside a window use only that window's prices.

Data per agent: the Contrarian trains on the mean-reverting series (``synth:mean_reverting...``)
— mean reversion is what it learns to exploit — and, by default (:data:`AGENT_DATA`), on the
real series too; the other three train on everything but the mean-reverting series (real bars
and trending synthetic scenarios).

Seeds: each agent trains ``n_seeds`` times (3 by default, 5 for the Balanced:
:data:`AGENT_OVERRIDES`) and its action is the mean of the seeds' selected policies (bagging, one
exported graph per agent).

Entry points
    ``ensemble-trader train agents --bars SPEC... --out DIR [--quick] [--seed N]``
    ``python -m training.agents.train`` — SageMaker: hyperparameters from
    ``/opt/ml/input/config/hyperparameters.json`` or ``$SM_HPS``; bars CSVs from
    ``$SM_CHANNEL_TRAIN`` (and ``$SM_CHANNEL_VALIDATION``, which then replaces the validation
    window), subfolders included, one series per symbol: a symbol split over several files is
    joined in time order into one data spec ``file1 + file2`` (``training.sagemaker.read_channel``;
    overlapping bar times fail the job); a channel and the hyperparameter it replaces (``bars``,
    ``validation_bars``) are refused together; the model set goes to ``$SM_MODEL_DIR``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ensemble_trader.backtest.engine import (
    CostModel,
    PreparedSeries,
    evaluate_agents,
    load_series,
    prepare,
    run_pool,
)
from ensemble_trader.domain.agents import AGENT_NAMES, DEFAULT_LEVERAGE, MAX_NO_TRADE_BAND, AgentPool
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError, EnsembleTraderError, ModelArtifactError
from ensemble_trader.domain.features import FEATURE_NAMES, compute_features
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from training.sagemaker import (
    HYPERPARAMETERS_FILE,
    ChannelSeries,
    UnexpectedJobError,
    channel_files,
    check_no_arguments,
    read_channel,
    read_hyperparameters,
    refuse_channel_beside,
    report_failure,
    validation_problems,
)

DEFAULT_BARS: tuple[str, ...] = (
    "arch:sp500",
    "arch:nasdaq",
    "synth:realistic:11:5000",
    "synth:mean_reverting:12:5000",
)
QUICK_BARS: tuple[str, ...] = ("synth:realistic:11:1200", "synth:mean_reverting:12:1200")
SHARED_BTC = "btcusd_1h"
SYNTH_DEFAULT_BARS = 5000
SEED_STRIDE = 100
"""Seed k of an agent is ``seed + index of the agent + 100 k``."""
MAX_SEED = 2**32 - 1
"""The largest seed numpy takes (``np.random.seed``, which PPO calls with each agent's seed)."""
CONTRARIAN_DATA = "mean_reverting"
AGENT_OVERRIDES: dict[str, dict[str, Any]] = {
    # Chosen on the validation split of training/agents/evaluate.py (never on test data; the
    # candidates and their validation scores are in docs/agents.md). Every agent trains with a
    # longer horizon (gamma 0.95) and a wider training slippage, a regulariser against
    # flip-flopping (selection and evaluation use the real costs). The Aggressive kept one seed
    # (bagging shrank its positions and its BULL returns on validation) until the calendar cut
    # below, and gets more steps
    # (1.2M: smaller validation shortfall than 400k, its checkpoint chosen at 438k); the
    # Balanced is selected on the mean of the per-series validation Sharpe ratios. The no-trade
    # bands were chosen last, for the trained policies (`evaluate --split validation --bands`);
    # the Aggressive and the Contrarian are then trained and selected with their band in the
    # environment (smaller validation shortfall than the band put on afterwards; the other two
    # were not better with it). The Balanced bags five seeds (one more validation check than
    # three). The bands were searched again with the validation score (pass rates over 30
    # validation paths per preset): the Balanced's became 0.05 (was 0.2), and the Aggressive
    # trained with 0.25 scored higher than with 0.15. The entropy bonuses were chosen by the
    # same score: the Aggressive's (0.03) among 0, 0.003, 0.01, 0.03, 0.06 and 0.1, the
    # Balanced's (0.01) among 0, 0.01 and 0.03 (its band searched again: 0.05). The training
    # slippage was searched by the same score: the Aggressive's became 40 bps (among 8-64),
    # the Contrarian's 16 (among 8, 16, 32); the Balanced's stays 8 (16 scored far lower), and
    # the Conservative's (16 with its bonus scored lower). The Conservative's bonus, 0.03, was
    # chosen among 0-0.1 (the Contrarian's, among 0-0.03, changed nothing: it stays 0); with it
    # the band search gives the Conservative 0.1 (a tie with 0.05 on the score, smaller shortfall).
    # Re-chosen when the walk-forward cut moved to calendar time (the BTC bars left the training
    # and validation data): the Aggressive's training slippage by the mean score of three seeds
    # (8 bps 3.11, 16 bps 2.99, 40 bps 2.36) and bagged over three seeds (3.03 against 2.80 for
    # the default seed alone), the Conservative's entropy bonus 0 (0 / 0.01 / 0.03 → 1.37 /
    # 1.37 / 1.23, 0 by the smaller shortfall) and its band again, 0.5 (among 0-0.8); the
    # Balanced's band again, 0.1 (a tie with 0.05 on the score, smaller shortfall).
    "conservative": {"gamma": 0.95, "slippage_bps": 8.0, "no_trade_band": 0.5},
    "aggressive": {"gamma": 0.95, "slippage_bps": 8.0, "total_timesteps": 1_200_000, "n_seeds": 3,
                   "no_trade_band": 0.25, "band_in_training": True, "ent_coef": 0.03},
    "balanced": {"gamma": 0.95, "slippage_bps": 8.0, "selection": "per_series", "n_seeds": 5,
                 "no_trade_band": 0.1, "ent_coef": 0.01},
    "contrarian": {"gamma": 0.95, "slippage_bps": 16.0, "no_trade_band": 0.5, "band_in_training": True},
}
"""Per-agent departures from the shared hyperparameters (override with ``agent_overrides``)."""
AGENT_DATA: dict[str, tuple[str, ...]] = {
    # the Contrarian trains (and is selected) on the real series beside the mean-reverting one:
    # smaller SIDEWAYS losses on the real validation windows than with synthetic data alone
    "contrarian": ("mean_reverting", "arch:", "shared:"),
}
"""Per-agent data selection by spec substrings (override with ``agent_data``); an agent not named
follows the default rule of :func:`agent_training_data`."""
OVERRIDABLE = frozenset(
    {"gamma", "gae_lambda", "learning_rate", "ent_coef", "clip_range", "log_std_init", "cost_bps",
     "slippage_bps", "total_timesteps", "episode_length", "n_seeds", "combine_seeds", "selection",
     "no_trade_band", "band_in_training"}
)
LEARNING_RATE_MAX = 1e-2
"""The largest ``learning_rate`` a job takes (33 times the 3e-4 every committed agent uses).
Measured in ``--quick``-sized runs of the Balanced (seed 7, 2,048 steps on the preset's
``synth:realistic:11:1200``): the first update moves the policy by
an approximate KL divergence of 0.05 at 1e-2, 0.9 at 3e-2 and 1,000 at 0.1 (the update replaces
the policy instead of improving it: PPO's clip range no longer bounds the step), and from 10 up
the weights turn NaN within the first update."""
LOG_STD_INIT_RANGE = (-5.0, 2.0)
"""The range of ``log_std_init``, the log of the exploration noise's initial standard deviation
σ, in position units (actions lie in [-L, L], L = 1 or 2). Measured as for
:data:`LEARNING_RATE_MAX`: below −5 (σ = 0.0067) the noise is so narrow that the first update's
approximate KL divergence is 2.8 at −6 and 4e4 at −10 (−5: 0.10; the default −0.7: 0.0002),
and from −50 down σ² falls below float32's normal range and the weights turn NaN; above 2 (σ = 7.4,
3.7 times the widest range, ±2) 79-89 % of the samples of a zero mean are clipped to ±L, the policy learns less
(10) or nothing (20, 30), and at 100 σ itself overflows float32 and the weights turn NaN."""

CLIP_RANGE_MAX = 1.0
"""The largest ``clip_range`` a job takes (5 times the 0.2 every committed agent uses). PPO clips
the ratio of an action's new to old probability to [1 - clip_range, 1 + clip_range]; a ratio is
> 0, so from 1 up the lower edge clips nothing and only the upper edge still bounds an update.
Measured in ``--quick``-sized runs of the Balanced (seed 7, on ``synth:realistic:11:1200``) at
the largest learning rate (:data:`LEARNING_RATE_MAX`), the first update: 25 % of the samples
clipped and an approximate KL divergence of 0.05 at 0.2, 2.5 % and 0.10 at 1, 1.4 % and 0.10 at
2, 0.9 % and 1.5 at 10, none and 3.0 at 1e6 (the update replaces the policy)."""
ENT_COEF_MAX = 1.0
"""The largest ``ent_coef`` a job takes (33 times the Aggressive's 0.03, the largest a committed
agent uses; 0.1 is the largest value the searches of docs/agents.md tried). The bonus adds
``ent_coef`` times the policy's entropy to what PPO maximises, so it pulls the log standard
deviation σ of the exploration noise up by ``ent_coef`` against the pull of the (normalised)
advantages. Measured in 100,000-step runs of the Balanced with the job's own PPO settings (seed
7, on ``synth:realistic:11:1200``), σ from 0.50 went to 0.40 at 0, 0.46 at 0.03, 0.64 at 0.1,
0.85 at 0.3 and 0.89-0.90 at 1, 3, 10, 100 and 1,000: from 1 up σ grows as fast as Adam moves it
(by the learning rate per step, whatever the reward), which over a 300,000-step job makes it
about 2.9 (extrapolated), wider than every action range: the sampled positions become a random
walk between the limits. Beyond 1 the bonus only takes over the clipped gradient norm (0.5) from
the rest of the policy: the in-sample validation score fell from 3.19 (0) and 2.85 (1) to 2.63
(10), 2.10 (100) and 1.90 (1,000)."""


class TrainingDivergedError(EnsembleTraderError):
    """PPO diverged while training one agent's seed: the policy's parameters are no longer
    finite, or torch refuses its action distribution (a NaN or infinite mean, a standard deviation
    that is not > 0), or its action is not finite. ``agent``, ``seed`` and ``step`` (environment
    steps taken when it was seen) name the run."""

    def __init__(self, agent: str, seed: int, step: int, reason: str, config: TrainConfig):
        self.agent, self.seed, self.step = agent, seed, step
        super().__init__(
            f"{agent} seed {seed}: PPO diverged by step {step:,} ({reason}), with learning_rate "
            f"{config.learning_rate:g} and log_std_init {config.log_std_init:g}: lower the learning rate (the "
            f"committed agents use 3e-4) or bring log_std_init nearer the default -0.7"
        )


def default_bars() -> tuple[str, ...]:
    """:data:`DEFAULT_BARS`, plus the shared BTC-USD hourly bars where the shared data folder
    holds them (the development machine; a fresh clone has no ../shared)."""
    from ensemble_trader.marketdata import shared_data_dir

    folder = shared_data_dir()
    if folder is not None and (folder / f"{SHARED_BTC}.csv").is_file():
        return DEFAULT_BARS + (f"shared:{SHARED_BTC}",)
    return DEFAULT_BARS


LOG_EVERY_SECONDS = 30.0
"""How often, at most, a job without a terminal writes a seed's progress line (besides its first
and last): a SageMaker job's log showed nothing for its 15 minutes of training."""

_NUMBER_TYPES = (int, float, int | None)
"""The annotations of :class:`TrainConfig`'s number fields (see ``_number_not_a_bool``)."""


class TrainConfig(BaseModel):
    """Every knob of the job; SageMaker passes them as strings, pydantic converts them."""

    # no inf or NaN anywhere (a cost of inf bps, a NaN learning rate or reward parameter)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    bars: tuple[str, ...] | None = None  # None: default_bars(), or QUICK_BARS with quick
    validation_bars: tuple[str, ...] = ()
    agents: tuple[str, ...] = AGENT_NAMES
    seed: int = Field(default=7, ge=0)  # every derived seed must stay <= MAX_SEED, see agent_seeds
    n_seeds: int = Field(default=3, ge=1)  # seeds per agent, see combine_seeds
    combine_seeds: Literal["mean", "best"] = "mean"  # bag the seeds' actions, or keep the best on validation
    selection: Literal["pooled", "per_series"] = "pooled"  # validation score, see validate()
    quick: bool = False
    total_timesteps: int | None = Field(default=None, ge=256)
    eval_every: int | None = Field(default=None, ge=256)
    train_fraction: float = Field(default=0.70, gt=0.0, le=1.0)
    validation_fraction: float = Field(default=0.10, ge=0.0, lt=1.0)
    episode_length: int = Field(default=256, ge=8)
    cost_bps: float = Field(default=1.0, ge=0.0)
    slippage_bps: float = Field(default=2.0, ge=0.0)
    n_envs: int = Field(default=4, ge=1)
    n_steps: int = Field(default=512, ge=16)
    batch_size: int = Field(default=256, ge=8)
    n_epochs: int = Field(default=5, ge=1)
    learning_rate: float = 3e-4  # in (0, LEARNING_RATE_MAX], see _stable_updates
    gamma: float = Field(default=0.9, gt=0.0, le=1.0)
    gae_lambda: float = Field(default=0.9, gt=0.0, le=1.0)
    clip_range: float = 0.2  # in (0, CLIP_RANGE_MAX], see _stable_updates
    ent_coef: float = 0.0  # in [0, ENT_COEF_MAX], see _stable_updates
    log_std_init: float = -0.7  # in LOG_STD_INIT_RANGE, see _stable_updates
    # the served agent's no-trade band (AgentPool), in the manifest; with band_in_training the
    # environment executes actions through it during training and checkpoint selection too,
    # otherwise it is an execution rule put on the trained policy
    no_trade_band: float = Field(default=0.0, ge=0.0, le=MAX_NO_TRADE_BAND)
    band_in_training: bool = False
    net_arch: tuple[int, ...] = (64, 64)
    rewards: dict[str, dict[str, float]] = Field(default_factory=dict)
    agent_overrides: dict[str, dict[str, Any]] = Field(default_factory=lambda: copy.deepcopy(AGENT_OVERRIDES))
    agent_data: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(AGENT_DATA))

    @field_validator("bars", "validation_bars", "agents", "net_arch", mode="before")
    @classmethod
    def _split_strings(cls, value: Any) -> Any:
        """SageMaker hyperparameters are strings: accept JSON lists and comma-separated lists."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value

    @field_validator("bars")
    @classmethod
    def _bars_given_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """``bars`` left out (None) means the default data; given, it must name data. An empty
        value ('', '[]', a blank SageMaker template) once fell back to the built-in series, and
        the job trained on data nobody asked for and reported success."""
        if value is None:
            return None
        if not value:
            raise ValueError("empty: give at least one data spec (e.g. arch:sp500, synth:realistic:11:5000, "
                             "a bars CSV path), or leave 'bars' out for the default data")
        blank = [i for i, spec in enumerate(value) if not spec.strip()]
        if blank:
            raise ValueError(f"entry {blank[0]} is an empty data spec: {list(value)}")
        return value

    @field_validator("bars", "validation_bars")
    @classmethod
    def _each_spec_once(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        """A data spec named twice was read twice: its series trained (and was validated) with
        twice the weight of the others — drawn twice as often, counted twice in the observation
        statistics and the pooled validation score — and the manifest listed it twice."""
        seen: set[str] = set()
        for spec in value or ():
            if spec.strip() in seen:
                raise ValueError(f"{info.field_name}={list(value)}: {spec.strip()!r} is given more than once; "
                                 "name each data set once")
            seen.add(spec.strip())
        return value

    @field_validator("net_arch")
    @classmethod
    def _layer_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        """At least one hidden layer, each of at least one unit (0 trained a constant policy and
        wrote it; a negative size failed in torch after the data were loaded)."""
        if not value:
            raise ValueError("give at least one hidden layer size (e.g. 64,64)")
        bad = [size for size in value if size < 1]
        if bad:
            raise ValueError(f"every layer size must be >= 1, got {list(value)}")
        return value

    @field_validator("learning_rate", "log_std_init", "clip_range", "ent_coef")
    @classmethod
    def _stable_updates(cls, value: float, info: ValidationInfo) -> float:
        """A learning rate in (0, :data:`LEARNING_RATE_MAX`] and a ``log_std_init`` in
        :data:`LOG_STD_INIT_RANGE`, where PPO's updates stay within its clip range (outside,
        a job ran until torch failed inside ``model.learn`` with a raw traceback); a
        ``clip_range`` in (0, :data:`CLIP_RANGE_MAX`], where it still clips, and an ``ent_coef``
        in [0, :data:`ENT_COEF_MAX`], below which the reward still shapes the exploration noise
        (beyond them, 1e6 and 1e3 were taken)."""
        if info.field_name == "clip_range":
            if not 0.0 < value <= CLIP_RANGE_MAX:
                raise ValueError(
                    f"clip_range={value!r} must be > 0 and at most {CLIP_RANGE_MAX:g}: PPO keeps the ratio of an "
                    "action's new to old probability within 1 ± clip_range, and from 1 up the lower edge clips "
                    "nothing, so one update can replace the policy (the committed agents use 0.2)"
                )
            return value
        if info.field_name == "ent_coef":
            if not 0.0 <= value <= ENT_COEF_MAX:
                raise ValueError(
                    f"ent_coef={value!r} must be in [0, {ENT_COEF_MAX:g}]: at {ENT_COEF_MAX:g} the entropy bonus "
                    "already widens the exploration noise as fast as the optimiser can, whatever the reward, "
                    "and beyond it only crowds out the policy's other gradients (the committed agents use 0 to 0.03)"
                )
            return value
        if info.field_name == "learning_rate":
            if not 0.0 < value <= LEARNING_RATE_MAX:
                raise ValueError(
                    f"learning_rate={value!r} must be > 0 and at most {LEARNING_RATE_MAX:g}: beyond it one PPO "
                    "update replaces the policy instead of improving it, and the weights soon turn NaN "
                    "(the committed agents use 3e-4)"
                )
            return value
        low, high = LOG_STD_INIT_RANGE
        if not low <= value <= high:
            raise ValueError(
                f"log_std_init={value!r} must be in [{low:g}, {high:g}] (an initial exploration noise σ of "
                f"{math.exp(low):.2g} to {math.exp(high):.2g} position units): narrower noise makes each PPO "
                "update leave its clip range, wider clips nearly every sampled action to the leverage limit, and "
                "far beyond either the weights turn NaN (the committed agents use -0.7)"
            )
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _number_not_a_bool(cls, value: Any, info: ValidationInfo) -> Any:
        """A number must be given as one: JSON's true and false (in ``$SM_HPS``, ``rewards``,
        ``agent_overrides``) were taken as 1 and 0 — ``seed`` true trained with seed 1,
        ``gamma`` true with 1.0 — where the regime job, the environment and the cost model
        refuse them. (A hyperparameters file's "true" is text, and no number either.)"""
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in _NUMBER_TYPES:
            raise ValueError(f"{info.field_name}={value!r}: expected a number, got a boolean")
        return value

    @field_validator("rewards", "agent_overrides", "agent_data", mode="before")
    @classmethod
    def _json_dict(cls, value: Any, info: ValidationInfo) -> Any:
        value = json.loads(value) if isinstance(value, str) else value
        if info.field_name == "rewards" and isinstance(value, dict):
            for agent, params in value.items():
                flags = [(k, v) for k, v in params.items() if isinstance(v, bool)] if isinstance(params, dict) else []
                if flags:  # a reward parameter is a number: true was a scale or a penalty of 1
                    name, flag = flags[0]
                    raise ValueError(f"rewards[{agent}].{name}={flag!r}: expected a number, got a boolean")
        return value

    @field_validator("agent_data")
    @classmethod
    def _known_data_agents(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        unknown = sorted(set(value) - set(AGENT_NAMES))
        if unknown:
            raise ValueError(f"agent_data: unknown agents {unknown}; known: {list(AGENT_NAMES)}")
        return value

    @field_validator("agent_overrides")
    @classmethod
    def _known_overrides(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for agent, params in value.items():
            if agent not in AGENT_NAMES:
                raise ValueError(f"agent_overrides: unknown agent {agent!r}")
            bad = sorted(set(params) - OVERRIDABLE)
            if bad:
                raise ValueError(f"agent_overrides[{agent}]: cannot override {bad}; allowed: {sorted(OVERRIDABLE)}")
        return value

    def for_agent(self, agent: str) -> TrainConfig:
        """This configuration with the agent's overrides applied (not the timesteps in quick mode)."""
        params = dict(self.agent_overrides.get(agent, {}))
        if self.quick:
            params.pop("total_timesteps", None)
        if not params:
            return self
        return TrainConfig.model_validate({**self.model_dump(), **params, "agent_overrides": {}},
                                          context={"for_agent": agent})

    def agent_seeds(self, agent: str) -> range:
        """The seeds ``agent`` trains with: ``seed + index of the agent + SEED_STRIDE k`` for each
        of its ``n_seeds`` (its overrides applied)."""
        first = self.seed + AGENT_NAMES.index(agent)
        return range(first, first + SEED_STRIDE * self.for_agent(agent).n_seeds, SEED_STRIDE)

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(AGENT_NAMES))
        if unknown:
            raise ValueError(f"unknown agents {unknown}; known: {list(AGENT_NAMES)}")
        if not value:
            raise ValueError(f"no agent to train: name at least one of {list(AGENT_NAMES)}")
        return tuple(n for n in AGENT_NAMES if n in value)

    @model_validator(mode="after")
    def _every_agent_settles(self, info: ValidationInfo) -> TrainConfig:
        """Each agent's overrides, cost model, reward parameters and seeds are checked now, not
        when its turn comes (a bad value for the last agent once failed the job after the others
        had trained). The rewards come first: an agent's configuration (:meth:`for_agent`)
        validates them again, and a bad one was reported as that agent's override."""
        from training.agents.rewards import make_reward

        unknown = sorted(set(self.rewards) - set(AGENT_NAMES))
        if unknown:
            raise ValueError(f"rewards: unknown agents {unknown}; known: {list(AGENT_NAMES)}")
        for agent, params in self.rewards.items():
            try:
                make_reward(agent, **params)
            except (EnsembleTraderError, ValueError) as exc:
                raise ValueError(f"rewards[{agent}]: {exc}") from None
        if info.context and "for_agent" in info.context:
            return self  # one agent's configuration: its job's checks below cover it
        self._check_fractions(separate_validation=bool(self.validation_bars or
                                                       (info.context or {}).get("validation_channel")))
        try:
            self.costs  # noqa: B018 - builds the job's cost model (validation runs with it)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        for agent in AGENT_NAMES:
            try:
                self.for_agent(agent).costs  # noqa: B018 - builds the agent's training cost model
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {str(e['msg']).removeprefix('Value error, ')}"
                                     for e in exc.errors())
                raise ValueError(f"agent_overrides[{agent}]: {problems}") from None
            except DataError as exc:
                raise ValueError(f"agent_overrides[{agent}]: {exc}") from None
        self._check_seeds()
        return self

    def _check_fractions(self, separate_validation: bool) -> None:
        """The walk-forward windows fit in a series: ``train_fraction + validation_fraction <= 1``
        (the rest is the test window, possibly empty). With separate validation data
        (``validation_bars``, a validation channel) the training series are used whole and the
        fractions cut nothing. ``train_fraction`` 1 once passed, and the job then asked for
        ``validation_fraction > 0`` though it was 0.1: no bar was left after the training window."""
        if separate_validation:
            return
        total = self.train_fraction + self.validation_fraction
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"train_fraction {self.train_fraction:g} + validation_fraction {self.validation_fraction:g} = "
                f"{total:g} exceed 1: the training window takes {self.train_fraction:.0%} of each series and "
                f"leaves {max(0.0, 1.0 - self.train_fraction):.0%} for validation (and test); lower them so "
                "they sum to at most 1 (default 0.7 + 0.1, the last 20% being the test window), or give "
                "validation_bars"
            )

    def _check_seeds(self) -> None:
        """Every seed an agent trains with (:meth:`agent_seeds`) must be at most MAX_SEED."""
        reach = {agent: self.agent_seeds(agent)[-1] - self.seed for agent in self.agents}
        agent = max(reach, key=reach.__getitem__)
        limit = MAX_SEED - reach[agent]
        if self.seed <= limit:
            return
        n = self.for_agent(agent).n_seeds
        if limit < 0:
            most = (MAX_SEED - AGENT_NAMES.index(agent)) // SEED_STRIDE + 1
            raise ValueError(f"n_seeds: the {agent}'s {n} seeds would reach seed + {reach[agent]}, beyond "
                             f"{MAX_SEED} (2**32 - 1, numpy's largest seed) for any seed; at most {most}")
        raise ValueError(
            f"seed {self.seed}: the {agent}'s last seed (seed + {AGENT_NAMES.index(agent)} + {SEED_STRIDE} x "
            f"{n - 1}) would be {self.seed + reach[agent]}, and numpy takes seeds below 2**32; with these "
            f"agents and n_seeds the seed can be at most {limit}"
        )

    @property
    def timesteps(self) -> int:
        return self.total_timesteps or (2_048 if self.quick else 300_000)

    @property
    def evaluation_interval(self) -> int:
        return self.eval_every or (1_024 if self.quick else 6_000)

    @property
    def environments(self) -> int:
        return 2 if self.quick else self.n_envs

    def ppo_kwargs(self) -> dict[str, Any]:
        if self.quick:
            return dict(n_steps=256, batch_size=128, n_epochs=2)
        return dict(n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs)

    @property
    def costs(self) -> CostModel:
        return CostModel(self.cost_bps, self.slippage_bps)

    @property
    def training_band(self) -> float:
        """The band the environment executes actions through in training and selection."""
        return self.no_trade_band if self.band_in_training else 0.0


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class Source:
    """One data set, split into walk-forward windows."""

    spec: str
    series: BarSeries
    regimes: np.ndarray | None
    train: PreparedSeries | None = None
    validation: PreparedSeries | None = None
    test: PreparedSeries | None = None
    windows: dict[str, list[str]] = field(default_factory=dict)


def _iso(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(ts, "s")))


def split_source(
    spec: str,
    config: TrainConfig,
    whole: bool = False,
    cuts: tuple[np.datetime64, np.datetime64] | None = None,
    loaded: tuple[BarSeries, np.ndarray | None] | None = None,
) -> Source:
    """Load ``spec`` (unless ``loaded`` holds its bars and regimes) and cut it into train /
    validation / test windows by time: a real series at ``cuts`` (the calendar dates where
    validation and test begin, :func:`calendar_cuts`) when given, else — and a synthetic one
    always — at the fractions of its own bars. Cut by date, a series that begins after a cut has
    no window before it (one that begins after the test cut is test data only)."""
    series, regimes = loaded if loaded is not None else load_series(spec, synthetic_bars=SYNTH_DEFAULT_BARS)
    src = Source(spec, series, regimes)
    features = compute_features(series)  # once; every window is cut from it
    ts = np.asarray(series.timestamp)
    n = len(ts)
    if whole:
        src.train = prepare(series, regimes, features=features)
        # the rows the agents see (after the features' warm-up), as for a cut window below
        src.windows = {"train": [_iso(src.train.timestamp[0]), _iso(src.train.timestamp[-1])]}
        return src
    by_date = cuts is not None and not is_synthetic(spec)
    if by_date:
        i_val, i_test = (int(np.searchsorted(ts.astype("datetime64[ns]"), c, side="left")) for c in cuts)
    else:
        i_val, i_test = fraction_cuts(n, config)
    cuts_at = {"train": (0, i_val), "validation": (i_val, i_test), "test": (i_test, n)}  # bar indices [lo, hi)
    for name, (lo, hi) in cuts_at.items():
        if hi - lo < 3:  # an empty window (e.g. fractions summing to 1) stays empty, never the whole series
            continue
        if by_date and np.count_nonzero(features.ready[lo:hi]) < 2:
            continue  # a series starting just before a cut: its window there is all feature warm-up
        start = ts[lo] if lo > 0 else None
        end = ts[hi] if hi < n else None
        prepared = prepare(series, regimes, start=start, end=end, features=features)
        setattr(src, name, prepared)
        # the rows the window really holds (training starts after the features' warm-up)
        src.windows[name] = [_iso(prepared.timestamp[0]), _iso(prepared.timestamp[-1])]
    if src.train is None and not by_date:
        raise DataError(f"{spec}: the training window has too few warm bars")
    return src


def is_synthetic(spec: str) -> bool:
    """A generated series, whose dates mean nothing (``synth:...``)."""
    return spec.startswith("synth:")


def fraction_cuts(n: int, config: TrainConfig) -> tuple[int, int]:
    """Bar indices where validation and test begin in a series of ``n`` bars, by the fractions."""
    i_val = int(n * config.train_fraction)
    return i_val, int(n * min(config.train_fraction + config.validation_fraction, 1.0))


def calendar_cuts(
    series: Mapping[str, BarSeries], config: TrainConfig
) -> tuple[np.datetime64, np.datetime64] | None:
    """One pair of calendar dates (validation start, test start) for every real series.

    Cutting each real series at its own fractions would let one series' training window run
    into another's test window (BTC-USD hourly 2017-19 trained on while the S&P 500 is tested
    on 2015-18): out of sample per series, not in calendar time. So the series that begins
    first is cut at its fractions and every other real series at the same dates. Synthetic
    series keep their own fractions (their dates mean nothing). ``series``: bars by data spec.
    None when there is no real series.
    """
    real = [np.asarray(bars.timestamp).astype("datetime64[ns]")
            for spec, bars in series.items() if not is_synthetic(spec)]
    if not real:
        return None
    first = min(real, key=lambda ts: ts[0])
    i_val, i_test = fraction_cuts(len(first), config)
    end = first[-1] + np.timedelta64(1, "ns")
    return (first[i_val] if i_val < len(first) else end, first[i_test] if i_test < len(first) else end)


def recorded_cuts(cuts: tuple[np.datetime64, np.datetime64] | None) -> dict[str, str] | None:
    """:func:`calendar_cuts` as the manifest records them (``training.calendar_cuts``, where the
    evaluation starts a real series the job never read): ISO text to the second, or to the
    microsecond when finer, rounded up (a cut just after the last bar stays after it)."""
    if cuts is None:
        return None
    out = {}
    for name, cut in zip(("validation", "test"), cuts, strict=True):
        us = np.datetime64(cut, "us")
        if us < cut:
            us += np.timedelta64(1, "us")
        whole_second = us == np.datetime64(us, "s")
        out[name] = str(np.datetime_as_string(us, unit="s" if whole_second else "us"))
    return out


def data_hash(sources: Sequence[Source]) -> str:
    """sha256 of the bars the job read: each spec and its whole series (timestamps and OHLCV)."""
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.spec.encode())
        s = src.series
        for arr in (s.timestamp.astype("datetime64[ns]").astype(np.int64), s.open, s.high, s.low, s.close, s.volume):
            digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def agent_training_data(agent: str, sources: Sequence[Source], config: TrainConfig | None = None) -> list[Source]:
    """The sources an agent trains on (and is selected on: their validation windows).

    When ``config.agent_data`` names the agent, it trains on the sources whose spec contains
    one of the listed substrings (all sources when none does). Otherwise the Contrarian trains
    on the mean-reverting series when the job has any (its edge exists there) and the others on
    the remaining series, whose drifts and volatility regimes are what they specialise in; with
    only one kind of data, everyone trains on all of it.
    """
    if config is not None and agent in config.agent_data:
        keys = config.agent_data[agent]
        return [s for s in sources if any(k in s.spec for k in keys)] or list(sources)
    reverting = [s for s in sources if CONTRARIAN_DATA in s.spec]
    trending = [s for s in sources if CONTRARIAN_DATA not in s.spec]
    if agent == "contrarian":
        return reverting or list(sources)
    return trending or list(sources)


def observation_stats(series: Sequence[PreparedSeries], leverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each feature over the training rows; the position scales by L."""
    x = np.concatenate([s.features for s in series], axis=0)
    mean = np.append(x.mean(axis=0), 0.0)
    std = x.std(axis=0)
    scale = np.append(np.where(std > 1e-12, std, 1.0), leverage)
    return mean.astype(np.float32), scale.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainedAgent:
    name: str
    seed: int
    leverage: float
    policy: Any  # DeterministicPolicy of the selected checkpoint
    reward_params: dict[str, Any]
    validation: dict[str, Any]
    history: list[dict[str, float]]
    timesteps: int
    seconds: float
    seeds: list[int] = field(default_factory=list)  # the bagged seeds (empty: one seed)


def validate(
    policy: Any,
    agent: str,
    data: Sequence[PreparedSeries],
    config: TrainConfig,
    selection: str | None = None,
    no_trade_band: float = 0.0,
) -> dict[str, float]:
    """Run ``policy`` deterministically over each validation series in the training env, with
    the job's costs (``config`` is the job's configuration, not an agent's training override;
    ``selection``, the agent's own, defaults to the job's).

    Score = mean reward per step for every agent but the Balanced, whose score is the Sharpe
    ratio (the quantity its differential-Sharpe reward approximates). With
    ``selection="pooled"`` the score is taken over all validation steps pooled (the Sharpe ratio
    annualised at the first series' bar frequency); with ``"per_series"`` it is the mean of each
    validation series' own score (Sharpe annualised at its own frequency), so a short daily
    window weighs as much as a long hourly one, as in the specialty checks, made per data set.
    """
    import torch
    from ensemble_trader.backtest.metrics import performance, periods_per_year

    from training.agents.env import TradingEnv
    from training.agents.rewards import make_reward

    leverage = DEFAULT_LEVERAGE[agent]
    env = TradingEnv(data, make_reward(agent, **config.rewards.get(agent, {})), leverage=leverage, costs=config.costs,
                     no_trade_band=no_trade_band)
    rewards: list[float] = []
    nets: list[list[float]] = []
    positions: list[list[float]] = []
    with torch.no_grad():
        for i in range(len(data)):
            obs, _ = env.reset(options={"series": i, "start": 0})
            nets.append([])
            positions.append([])
            done = False
            while not done:
                action = policy(torch.as_tensor(obs).unsqueeze(0)).numpy()[0]
                obs, reward, terminated, truncated, info = env.step(action)
                rewards.append(reward)
                nets[-1].append(info["net_return"])
                positions[-1].append(env.position)
                done = terminated or truncated
    m = performance(np.concatenate(nets), np.concatenate(positions), periods_per_year(data[0].timestamp))
    if (selection or config.selection) == "pooled":
        score = m.sharpe if agent == "balanced" else float(np.mean(rewards))
    else:
        scores, offset = [], 0
        for n, p, d in zip(nets, positions, data, strict=True):
            if agent == "balanced":
                scores.append(performance(np.array(n), np.array(p), periods_per_year(d.timestamp)).sharpe)
            else:
                scores.append(float(np.mean(rewards[offset : offset + len(n)])))
            offset += len(n)
        score = float(np.mean(scores))
    return {"score": float(score), "mean_reward": float(np.mean(rewards)), **m.as_dict()}


def train_agent(
    agent: str,
    train_data: Sequence[PreparedSeries],
    validation_data: Sequence[PreparedSeries],
    config: TrainConfig,
    seed: int,
    progress: bool = True,
    log_lines: bool = False,
) -> TrainedAgent:
    """PPO on the agent's environment; the checkpoint with the best validation score wins.

    ``config`` is the job's configuration; the agent's overrides apply to its training only, the
    validation runs with the job's costs. ``progress`` shows a progress bar (a terminal);
    ``log_lines`` writes progress as lines on stderr instead (a log: a SageMaker job's), at the
    seed's first and last checkpoints and at most every :data:`LOG_EVERY_SECONDS` between.
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv
    from tqdm.auto import tqdm

    from training.agents.env import InvalidActionError, TradingEnv
    from training.agents.export import DeterministicPolicy, StandardizedObservation
    from training.agents.rewards import make_reward

    if not validation_data:
        # the training rows would choose the checkpoint and be reported as its validation score
        raise DataError(f"{agent}: no validation data to select its checkpoints on")
    if not train_data:
        raise DataError(f"{agent}: no training data")
    torch.set_num_threads(1)
    job_config, config = config, config.for_agent(agent)
    leverage = DEFAULT_LEVERAGE[agent]
    reward_params = config.rewards.get(agent, {})
    mean, scale = observation_stats(train_data, leverage)
    band = config.training_band

    def make_env(rank: int):
        def _init():
            return TradingEnv(
                train_data,
                make_reward(agent, **reward_params),
                leverage=leverage,
                costs=config.costs,
                episode_length=config.episode_length,
                # overridden: PPO seeds its environments (VecEnv.seed), so environment k draws its
                # episodes from seed + k at its first reset, and the Conservative's (seed 7)
                # environment 1 draws the windows of the Aggressive's (seed 8) environment 0.
                # Harmless (the agents train apart), and changing it would change every trained set
                random_state=seed * 1000 + rank,
                no_trade_band=band,
            )

        return _init

    n_envs = config.environments
    vec_env = DummyVecEnv([make_env(i) for i in range(n_envs)])
    model = PPO(
        "MlpPolicy",
        vec_env,
        learning_rate=config.learning_rate,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        policy_kwargs=dict(
            net_arch=dict(pi=list(config.net_arch), vf=list(config.net_arch)),
            activation_fn=torch.nn.Tanh,
            features_extractor_class=StandardizedObservation,
            features_extractor_kwargs=dict(mean=mean.tolist(), scale=scale.tolist()),
            log_std_init=config.log_std_init,
        ),
        seed=seed,
        device="cpu",
        verbose=0,
        **config.ppo_kwargs(),
    )
    # no logger output: SB3's default logger leaves an empty /tmp/SB3-<date> folder per run
    model.set_logger(Logger(folder=None, output_formats=[]))
    val_data = list(validation_data)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"score": -np.inf}

    def diverged(reason: str) -> TrainingDivergedError:
        return TrainingDivergedError(agent, seed, int(model.num_timesteps), reason, config)

    def check_finite() -> None:
        """After each update: NaN or infinite weights (a NaN loss makes them so) are reported
        here, not as a NaN action of a validation run or a torch error of the next rollout."""
        bad = non_finite_parameters(model.policy)
        if bad:
            raise diverged(f"non-finite policy parameters: {_names(bad)}")

    def checkpoint(steps: int) -> None:
        check_finite()
        policy = DeterministicPolicy(model.policy, leverage).eval()
        try:
            result = validate(policy, agent, val_data, job_config, config.selection, band)
        except InvalidActionError as exc:  # finite weights whose action overflows to NaN
            raise diverged(f"its deterministic policy gave a non-finite action on validation: {exc}") from exc
        history.append({"timesteps": steps, **{k: round(v, 6) for k, v in result.items()}})
        if result["score"] > best["score"]:
            best.update(score=result["score"], result=result, steps=steps,
                        state=copy.deepcopy(model.policy.state_dict()))
        # the best score so far and its step, after every checkpoint (the last one, after the
        # final update, too); four significant digits: the Conservative's score, a mean reward per
        # step, is 1e-4 to 1e-2 (its checkpoints in a --quick run, 0.000338 and less, showed as 0.000)
        bar.set_postfix(val=f"{best['score']:.4g}@{best['steps']}")
        now = time.perf_counter()
        if log_lines and (steps == 0 or steps >= config.timesteps or now - logged[0] >= LOG_EVERY_SECONDS):
            logged[0] = now
            print(f"train {agent} seed {seed}: {steps:,} of {config.timesteps:,} steps, best validation score "
                  f"{best['score']:.4g} at step {best['steps']:,}, {now - started:.0f} s", file=sys.stderr, flush=True)

    # the seed in the name: an agent trains n_seeds times (five bars of the Balanced looked alike)
    bar = tqdm(total=config.timesteps, desc=f"train {agent} seed {seed}", unit="step", disable=not progress,
               leave=True)

    class _Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self._next_eval = config.evaluation_interval

        def _on_rollout_start(self) -> None:
            check_finite()  # the update before this rollout

        def _on_step(self) -> bool:
            bar.update(n_envs)
            if self.num_timesteps >= self._next_eval:
                self._next_eval += config.evaluation_interval
                checkpoint(self.num_timesteps)
            return True

    started = time.perf_counter()
    logged = [started]  # when the last progress line was written (log_lines)
    try:
        checkpoint(0)
        try:
            model.learn(total_timesteps=config.timesteps, callback=_Progress())
        except ValueError as exc:
            # torch refuses a Normal whose mean or standard deviation is NaN or infinite: the
            # weights diverged within an update (or overflow); any other ValueError is a bug
            bad = non_finite_parameters(model.policy)
            refused = distribution_refusal(exc)
            if not (bad or refused):
                raise
            reason = "; ".join(([f"non-finite policy parameters: {_names(bad)}"] if bad else []) +
                               ([refused] if refused else []))
            raise diverged(reason) from exc
        check_finite()  # the last update, which no rollout or checkpoint followed
        if history[-1]["timesteps"] != model.num_timesteps:
            checkpoint(model.num_timesteps)
    finally:
        bar.close()
    if best["steps"] == 0:
        # kept as selected (what the job selects does not change), but said: the policy is the
        # random initialisation, whose actions are near zero; bagged, it shrinks the mean action
        n = config.n_seeds
        bagged = (f"; bagged with its {n - 1} other seed(s), it scales the agent's action to about {n - 1}/{n} of "
                  "theirs" if n > 1 and config.combine_seeds == "mean" else "")
        print(f"warning: {agent} seed {seed}: selected at step 0: none of the {len(history) - 1} trained "
              f"checkpoints beat the untrained network on validation (score {best['score']:.6g}), so the selected "
              f"policy is the untrained network, whose actions stay near 0{bagged}", file=sys.stderr)
    model.policy.load_state_dict(best["state"])
    selected = DeterministicPolicy(model.policy, leverage).eval()
    return TrainedAgent(
        name=agent,
        seed=seed,
        leverage=leverage,
        policy=selected,
        reward_params=make_reward(agent, **reward_params).params(),
        validation={"selected_at": best["steps"], **{k: round(v, 6) for k, v in best["result"].items()}},
        history=history,
        timesteps=int(model.num_timesteps),
        seconds=time.perf_counter() - started,
    )


def non_finite_parameters(module: Any) -> list[str]:
    """The names of ``module``'s parameters holding a NaN or an infinity (a diverged policy)."""
    import torch

    return [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]


_TORCH_REFUSAL = re.compile(
    r"^Expected parameter (\w+) \(.*\) of distribution (\w+)\(.*\) to satisfy the constraint (.+), but found invalid"
)


def distribution_refusal(exc: ValueError) -> str | None:
    """What torch's argument check of a distribution refused (``Expected parameter loc ... of
    distribution Normal(...) to satisfy the constraint Real(), but found invalid values:``,
    followed by the whole tensor), in one line; None for any other ValueError."""
    match = _TORCH_REFUSAL.match(str(exc))
    if match is None:
        return None
    parameter, distribution, constraint = match.groups()
    return f"torch refused the action distribution: its {distribution} {parameter} fails {constraint}"


def _names(names: Sequence[str], shown: int = 3) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def combine_seeds(
    candidates: Sequence[TrainedAgent],
    validation_data: Sequence[PreparedSeries],
    config: TrainConfig,
    mode: str = "mean",
    selection: str | None = None,
    no_trade_band: float = 0.0,
) -> TrainedAgent:
    """One agent from its seeds: with ``mode="mean"`` (bagging) the mean of the seeds'
    deterministic actions, scored again on the validation data with the job's ``config``; with
    ``"best"`` the seed with the best validation score (the first wins a tie). One seed is
    returned as it is. ``selection`` is the agent's validation score (default: the job's);
    ``no_trade_band`` the band the actions are executed through while scoring."""
    from training.agents.export import AveragedPolicy

    seed_scores = {str(t.seed): t.validation["score"] for t in candidates}
    if len(candidates) == 1:
        return candidates[0]
    if mode == "best":
        best = max(candidates, key=lambda t: t.validation["score"])
        best.validation["seed_scores"] = seed_scores
        return best
    first = candidates[0]
    policy = AveragedPolicy([t.policy for t in candidates]).eval()
    result = validate(policy, first.name, validation_data, config, selection, no_trade_band)
    return TrainedAgent(
        name=first.name,
        seed=first.seed,
        leverage=first.leverage,
        policy=policy,
        reward_params=first.reward_params,
        validation={
            "selected_at": [t.validation["selected_at"] for t in candidates],
            **{k: round(v, 6) for k, v in result.items()},
            "seed_scores": seed_scores,
        },
        history=[{"seed": t.seed, **row} for t in candidates for row in t.history],
        timesteps=sum(t.timesteps for t in candidates),
        seconds=sum(t.seconds for t in candidates),
        seeds=[t.seed for t in candidates],
    )


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def _heldout_features(sources: Sequence[Source], val_sources: Sequence[Source], rng: np.random.Generator,
                      n: int = 512) -> np.ndarray:
    """Observations for the ONNX parity check, from data no policy trained on: the test windows,
    else the validation windows (of the validation channel's files when there is one), else
    the training rows."""
    rows = [s.test.features for s in sources if s.test is not None]
    rows = rows or [s.validation.features for s in [*sources, *val_sources] if s.validation is not None]
    rows = rows or [s.train.features for s in sources]
    x = np.concatenate(rows, axis=0)
    return x[rng.choice(len(x), size=min(n, len(x)), replace=False)].astype(np.float32)


def test_report(models_dir: Path, sources: Sequence[Source], costs: CostModel) -> dict[str, Any]:
    """Out-of-sample metrics of the exported set, per data source (served code path)."""
    pool = AgentPool.load(models_dir)
    report: dict[str, Any] = {}
    for src in sources:
        if src.test is None:
            continue
        paths = run_pool(pool, src.test.features)
        result = evaluate_agents(src.test, {n: paths[:, i] for i, n in enumerate(pool.names)}, costs)
        report[src.spec] = {"window": src.windows.get("test"), **result}
    return report


def _hyperparameters(cfg: TrainConfig, timesteps: int) -> dict[str, Any]:
    """What an agent was actually trained with (its overrides applied), for the manifest:
    ``total_timesteps`` is the setting each seed ran with (what a rerun passes), ``timesteps_trained``
    the steps taken over all its seeds (whole rollouts, so a little more)."""
    return {
        "total_timesteps": cfg.timesteps,
        "timesteps_trained": timesteps,
        "learning_rate": cfg.learning_rate,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "clip_range": cfg.clip_range,
        "ent_coef": cfg.ent_coef,
        "log_std_init": cfg.log_std_init,
        "net_arch": list(cfg.net_arch),
        "episode_length": cfg.episode_length,
        "n_envs": cfg.environments,
        "training_costs": {"cost_bps": cfg.cost_bps, "slippage_bps": cfg.slippage_bps},
        "band_in_training": cfg.band_in_training,
        **cfg.ppo_kwargs(),
    }


def model_files(agents: Sequence[str]) -> set[str]:
    """The ONNX files a model set of ``agents`` holds (the fused graph only with all four)."""
    return {f"{agent}.onnx" for agent in agents} | ({"pool.onnx"} if set(agents) == set(AGENT_NAMES) else set())


def check_out_dir(out_dir: Path, agents: Sequence[str]) -> None:
    """Refuse a folder holding ONNX files the new set would not replace: they would stay beside
    a manifest that does not name them (one agent trained into a four-agent set's folder left
    the other three). Nothing is deleted here; the files this job writes are overwritten."""
    if not out_dir.is_dir():
        return
    stale = sorted(p.name for p in out_dir.glob("*.onnx") if p.name not in model_files(agents))
    if stale:
        raise DataError(f"{out_dir} holds model files a set of {', '.join(agents)} would not replace: "
                        f"{', '.join(stale)}; remove them or write the set to another folder")


STAGING_PREFIX = ".staging-"
"""The folder inside ``out_dir`` where :func:`run_job` writes and checks a set before publishing
it (inside, not beside: ``os.replace`` is atomic within one file system, and SageMaker's model
folder may be a mount of its own); removed when the job ends, failed or not."""


def publish_model_set(staging: Path, out_dir: Path) -> None:
    """Move a written and checked model set from ``staging`` into ``out_dir``: the ONNX files
    first, ``manifest.json`` last (each an atomic ``os.replace``), so the folder holds a set that
    verifies before and after, and only for the moment of the moves a manifest whose hashes
    do not match (:meth:`AgentPool.load` refuses it; never serves a mix). Files the old manifest
    named that the new set does not hold are removed after (:func:`check_out_dir` refuses a folder
    with such ONNX files before training, so there are none unless they appeared meanwhile)."""
    from ensemble_trader.domain.agents import MANIFEST_FILE, read_manifest

    try:
        previous = read_manifest(out_dir)
        old = {a.file for a in previous.agents.values()} | ({previous.fused.file} if previous.fused else set())
    except ModelArtifactError:
        old = set()  # no old set (or not one the pool could load): nothing of it to remove
    files = sorted(p for p in staging.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    for path in files:
        os.replace(path, out_dir / path.name)
    os.replace(staging / MANIFEST_FILE, out_dir / MANIFEST_FILE)
    for name in sorted(old - {p.name for p in files}):
        if Path(name).name == name:  # a bare file name of the folder, never a path out of it
            (out_dir / name).unlink(missing_ok=True)


@dataclass
class AgentData:
    """The windows one agent trains and is selected on, and the data specs they come from."""

    train: list[PreparedSeries]
    validation: list[PreparedSeries]
    trained_on: list[str]
    selected_on: list[str]


def plan_agent_data(config: TrainConfig, sources: Sequence[Source], val_sources: Sequence[Source]
                    ) -> dict[str, AgentData]:
    """Each agent's training and validation windows (:func:`agent_training_data`; with a
    validation channel the same choice among its files), checked before any agent trains: every
    agent needs a training window and a validation window (checkpoints are selected on
    validation only)."""
    plan: dict[str, AgentData] = {}
    for agent in config.agents:
        chosen = agent_training_data(agent, sources, config)
        judged = agent_training_data(agent, val_sources, config) if config.validation_bars else chosen
        plan[agent] = data = AgentData(
            train=[s.train for s in chosen if s.train is not None],
            validation=[s.validation for s in judged if s.validation is not None],
            trained_on=[s.spec for s in chosen if s.train is not None],
            selected_on=[s.spec for s in judged if s.validation is not None],
        )
        if not data.train:
            raise DataError(
                f"{agent}: its data ({', '.join(s.spec for s in chosen)}) hold no training window (a real "
                "series that begins after the validation cut, or within the features' warm-up before it, has "
                "none); give it data with bars before the cut (agent_data)"
            )
        if not data.validation:
            if config.validation_bars:
                why = "none of its validation_bars series gives one"
            elif config.validation_fraction == 0:
                why = f"train_fraction {config.train_fraction:g} with validation_fraction 0 leaves it no bar"
            else:
                why = (f"train_fraction {config.train_fraction:g} and validation_fraction "
                       f"{config.validation_fraction:g} leave fewer than 3 bars between the training and test "
                       "windows (a real series cut at the calendar dates may have none there, or only warm-up)")
            raise DataError(
                f"{agent}: its data ({', '.join(s.spec for s in judged)}) hold no validation window: {why}, and "
                "checkpoints are selected on validation only (the training rows would choose them); give "
                "a validation_fraction > 0 that leaves room for it (train_fraction + validation_fraction <= 1), "
                "or validation_bars"
            )
    return plan


def run_job(config: TrainConfig, out_dir: Path, progress: bool = True,
            read: Mapping[str, BarSeries] | None = None, log_lines: bool = False) -> dict[str, Any]:
    """Train, select, export, test and write the model set to ``out_dir``; returns the manifest.
    ``read`` holds bars already read for some of the specs (a channel's symbols, joined across
    files: :func:`sagemaker_main`); every other spec is loaded here.

    Refused before any agent trains: an agent without a training or a validation window
    (:func:`plan_agent_data`), an ``out_dir`` holding model files the set would not replace
    (:func:`check_out_dir`). The set is written and checked in a staging folder, then
    published (:func:`publish_model_set`): a job failing after training leaves ``out_dir``'s set
    as it was. ``progress`` shows progress bars, ``log_lines`` progress lines (see :func:`train_agent`).

    Every thread pool runs one thread while the job runs — torch's, and the BLAS and OpenMP pools
    of numpy and the rest (``threadpool_limits``). ``OMP_NUM_THREADS=1`` alone does not do it
    when numpy was imported before it was set (``ensemble-trader train agents`` imports numpy
    first): OpenBLAS had already started its two threads there, where ``make train``, which
    exports the variable before Python starts, runs one."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for any process the job starts
    with threadpool_limits(limits=1):
        return _run_job(config, out_dir, progress, read, log_lines)


def _run_job(config: TrainConfig, out_dir: Path, progress: bool,
             read: Mapping[str, BarSeries] | None, log_lines: bool = False) -> dict[str, Any]:
    import platform

    import stable_baselines3
    import torch

    from training.agents.export import export_fused, export_policy
    from training.agents.modelset import write_model_set

    torch.set_num_threads(1)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_out_dir(out_dir, config.agents)
    bars = config.bars or (QUICK_BARS if config.quick else default_bars())
    separate_validation = bool(config.validation_bars)
    read = dict(read or {})
    loaded = {spec: (read[spec], None) if spec in read else load_series(spec, synthetic_bars=SYNTH_DEFAULT_BARS)
              for spec in bars}
    cuts = None if separate_validation else calendar_cuts({spec: got[0] for spec, got in loaded.items()}, config)
    sources = [split_source(spec, config, whole=separate_validation, cuts=cuts, loaded=loaded[spec]) for spec in bars]
    val_sources = [split_source(spec, config, whole=True, loaded=(read[spec], None) if spec in read else None)
                   for spec in config.validation_bars]
    if separate_validation:
        for src in val_sources:
            src.validation, src.train = src.train, None
            src.windows = {"validation": src.windows["train"]}
    plan = plan_agent_data(config, sources, val_sources)
    out_dir.mkdir(parents=True, exist_ok=True)

    trained: dict[str, TrainedAgent] = {}
    seconds: dict[str, float] = {}
    selected_on = {agent: data.selected_on for agent, data in plan.items()}
    trained_on = {agent: data.trained_on for agent, data in plan.items()}
    for agent, data in plan.items():
        candidates = []
        own = config.for_agent(agent)
        for seed in config.agent_seeds(agent):
            candidates.append(train_agent(agent, data.train, data.validation, config, seed=seed, progress=progress,
                                          log_lines=log_lines))
        trained[agent] = combine_seeds(candidates, data.validation, config, own.combine_seeds, own.selection,
                                       own.training_band)
        seconds[agent] = round(sum(t.seconds for t in candidates), 1)

    # everything is written and checked in a staging folder first, and moved into out_dir only
    # once the set loads: a failing export, parity check or test run leaves the set out_dir
    # held untouched (it once left new graphs beside the old manifest: a set that no longer loaded)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        rng = np.random.default_rng(config.seed)
        features = _heldout_features(sources, val_sources, rng)
        entries: dict[str, dict[str, Any]] = {}
        parity: dict[str, float] = {}
        for agent, t in trained.items():
            positions = rng.uniform(-t.leverage, t.leverage, size=(len(features), 1)).astype(np.float32)
            parity[agent] = export_policy(t.policy, staging / f"{agent}.onnx", np.hstack((features, positions)))
            entries[agent] = {
                "file": f"{agent}.onnx",
                "leverage": t.leverage,
                "no_trade_band": config.for_agent(agent).no_trade_band,
                "algorithm": "PPO",
                "reward": t.reward_params,
                "hyperparameters": {"seed": t.seed, **({"bagged_seeds": t.seeds} if t.seeds else {}),
                                    **_hyperparameters(config.for_agent(agent), t.timesteps)},
                "validation": t.validation,
            }
        fused_file = None
        if set(trained) == set(AGENT_NAMES):
            limits = np.array([trained[n].leverage for n in AGENT_NAMES], dtype=np.float32)
            positions = rng.uniform(-limits, limits, size=(len(features), len(limits))).astype(np.float32)
            parity["fused"] = export_fused([trained[n].policy for n in AGENT_NAMES], staging / "pool.onnx",
                                           features, positions)
            fused_file = "pool.onnx"

        training = {
            "data": list(bars),
            "validation_data": list(config.validation_bars),
            "data_sha256": data_hash(sources + val_sources),
            "windows": {s.spec: s.windows for s in sources + val_sources},
            **({"calendar_cuts": recorded_cuts(cuts)} if cuts is not None else {}),
            "agent_data": trained_on,
            "agent_validation_data": selected_on,
            "seed": config.seed,
            "quick": config.quick,
            "costs": {"cost_bps": config.cost_bps, "slippage_bps": config.slippage_bps},
            "onnx_parity_max_abs_error": parity,
            "seconds_per_agent": seconds,
            "validation_history": {a: t.history for a, t in trained.items()},
            "software": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "stable_baselines3": stable_baselines3.__version__,
            },
        }
        write_model_set(staging, agents=entries, feature_names=FEATURE_NAMES, fused_file=fused_file, training=training)
        tests = test_report(staging, sources, config.costs)
        for agent in entries:
            entries[agent]["test"] = {
                spec: {"window": r["window"], "overall": r["agents"][agent]["overall"],
                       "buy_and_hold": r["baselines"]["buy_and_hold"]["overall"]}
                for spec, r in tests.items()
            }
        training["seconds_total"] = round(time.perf_counter() - started, 1)
        manifest = write_model_set(staging, agents=entries, feature_names=FEATURE_NAMES, fused_file=fused_file,
                                   training=training)
        AgentPool.load(staging)  # the final manifest and files, as serving reads them
        publish_model_set(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# SageMaker entry point
# --------------------------------------------------------------------------------------------

SM_HYPERPARAMETERS = HYPERPARAMETERS_FILE


def one_symbol_per_file(symbols: Sequence[ChannelSeries]) -> None:
    """Each file of an agents' channel holds one symbol (a data spec is one series): a file
    whose ``symbol`` column names several is a DataError."""
    held: dict[Path, list[str]] = {}
    for c in symbols:
        for f in c.files:
            held.setdefault(f, []).append(c.symbol)
    for f, names in held.items():
        if len(names) > 1:
            raise DataError(f"{f} holds {len(names)} symbols {names}; give one symbol per file")


def sagemaker_main(argv: Sequence[str] | None = None) -> int:
    """Run the job as a SageMaker training container would (works with local folders)."""
    check_no_arguments("python -m training.agents.train", "agents training job",
                       "ensemble-trader train agents --out DIR", argv)
    out = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    try:
        hps = read_hyperparameters(SM_HYPERPARAMETERS)
        for key, channel in (("bars", "SM_CHANNEL_TRAIN"), ("validation_bars", "SM_CHANNEL_VALIDATION")):
            refuse_channel_beside(key, channel, hps)
        # checked before any bar is read; with a validation channel the fractions cut nothing
        separate = bool(os.environ.get("SM_CHANNEL_VALIDATION"))
        try:
            config = TrainConfig.model_validate(hps, context={"validation_channel": separate})
        except ValidationError as exc:  # pydantic's report is several lines, with links
            raise DataError(validation_problems(exc, "bad hyperparameters", known=TrainConfig.model_fields)) from None
        if not os.environ.get("SM_CHANNEL_TRAIN") and config.bars is None:
            # a container job always gets its data: without either, it would train on the
            # built-in series and report success (an empty 'bars' is refused by TrainConfig)
            raise DataError("no training data: give the train channel ($SM_CHANNEL_TRAIN, a folder of "
                            "bars CSVs) or the 'bars' hyperparameter (data specs)")
        read: dict[str, BarSeries] = {}
        for key, channel in (("bars", "SM_CHANNEL_TRAIN"), ("validation_bars", "SM_CHANNEL_VALIDATION")):
            symbols = read_channel(channel_files(os.environ.get(channel)))  # one series per symbol
            if symbols:
                one_symbol_per_file(symbols)
                config = config.model_copy(update={key: tuple(c.spec for c in symbols)})
                read.update((c.spec, c.series) for c in symbols)
        # a terminal gets progress bars; a log (SageMaker's, in CloudWatch) progress lines
        terminal = sys.stderr.isatty()
        manifest = run_job(config, out, progress=terminal, read=read, log_lines=not terminal)
    except (EnsembleTraderError, ValidationError) as exc:
        report_failure("training", exc)
        return 1
    except Exception as exc:
        # a bug or the machine (a module missing from the image, a full disk, an unwritable model
        # folder): SageMaker still gets the reason, and the traceback follows, as in the regime job
        report_failure("training", UnexpectedJobError(exc))
        raise
    print(json.dumps({"version": manifest["version"], "model_dir": str(out)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sagemaker_main(sys.argv[1:]))
