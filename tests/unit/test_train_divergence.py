"""A training job whose PPO diverges: refused up front where the settings make it certain, and a
typed error naming the agent and seed where it still happens during training.

``learning_rate=1000`` or ``log_std_init=100`` / ``-100`` (also per agent) were accepted, and
the job failed inside ``model.learn`` with torch's raw ``ValueError: Expected parameter loc ...
to satisfy the constraint Real()``: a full traceback from the CLI (which prints one line for the
project's errors) and no failure file from the SageMaker entry point. Each test failed on the code
before the fix, except the last, which checks that a ValueError that is not divergence still
propagates as it is (the catch is no broader than divergence).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ensemble_trader.backtest.engine import prepare
from ensemble_trader.cli import main
from ensemble_trader.domain.synthetic import generate
from pydantic import ValidationError
from stable_baselines3 import PPO

import training.agents.train as train
from training import sagemaker
from training.agents.train import TrainConfig

MANIFEST = Path(__file__).resolve().parents[2] / "layers" / "models" / "agents" / "manifest.json"
ONE_SEED = json.dumps({"balanced": {"n_seeds": 1}})


# -- 1. settings that make PPO diverge are refused before any data is read -------------------------


@pytest.mark.parametrize(("field", "value", "message"), [
    ("learning_rate", 1000, r"learning_rate=1000.0 must be > 0 and at most 0.01"),
    ("learning_rate", 0.0101, r"learning_rate=0.0101 must be > 0 and at most 0.01"),
    ("log_std_init", 100, r"log_std_init=100.0 must be in \[-5, 2\]"),
    ("log_std_init", -100, r"log_std_init=-100.0 must be in \[-5, 2\]"),
    ("log_std_init", 2.01, r"log_std_init=2.01 must be in \[-5, 2\]"),
    ("log_std_init", -5.01, r"log_std_init=-5.01 must be in \[-5, 2\]"),
])
def test_a_learning_rate_or_log_std_init_beyond_the_bounds_is_refused_by_name_and_value(field, value, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate({field: value})
    with pytest.raises(ValidationError, match=rf"agent_overrides\[contrarian\]: {field}: {message}"):
        TrainConfig.model_validate({"agent_overrides": {"contrarian": {field: value}}})


def test_the_bounds_keep_every_value_in_use():
    """The committed agents' settings (their manifest), the defaults, the --quick preset, the
    candidates of docs/agents.md (log_std_init -1.2, -1.7) and the bounds themselves pass."""
    manifest = json.loads(MANIFEST.read_text())
    used = {(e["hyperparameters"]["learning_rate"], e["hyperparameters"]["log_std_init"])
            for e in manifest["agents"].values()}
    for lr, log_std in used | {(3e-4, -1.2), (3e-4, -1.7), (1e-2, -5.0), (1e-9, 2.0)}:
        config = TrainConfig(learning_rate=lr, log_std_init=log_std, quick=True)
        assert (config.learning_rate, config.log_std_init) == (lr, log_std)
    assert TrainConfig().learning_rate == 3e-4 and TrainConfig().log_std_init == -0.7
    with pytest.raises(ValidationError, match=r"learning_rate=1000.0"):
        TrainConfig(learning_rate=1000, quick=True)


@pytest.mark.parametrize(("hp", "message"), [
    ("learning_rate=1000", "bad training parameters: learning_rate=1000.0 must be > 0 and at most 0.01"),
    ('agent_overrides={"balanced": {"log_std_init": -100}}',
     r"bad training parameters: agent_overrides[balanced]: log_std_init: log_std_init=-100.0 must be in [-5, 2]"),
])
def test_the_cli_refuses_them_in_one_line_before_the_job(hp, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("the job ran"))
    assert main(["train", "agents", "--quick", "--hp", hp, "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ensemble-trader: error: {message}") and err.count("\n") == 1


@pytest.fixture
def container(tmp_path, monkeypatch) -> Path:
    """A SageMaker container's environment (no channel, no hyperparameters file); returns the
    failure file report_failure writes."""
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setattr(train, "report_failure", lambda job, exc: sagemaker.report_failure(job, exc, failure))
    return failure


def test_the_sagemaker_job_refuses_them_with_a_failure_file(container, monkeypatch, capsys):
    monkeypatch.setattr(train, "load_series", lambda *a, **k: pytest.fail("bars were read"))
    monkeypatch.setenv("SM_HPS", json.dumps({"quick": "true", "bars": "synth:realistic:11:600", "log_std_init": "100"}))
    assert train.sagemaker_main([]) == 1
    assert "log_std_init=100.0 must be in [-5, 2]" in container.read_text()
    assert "Traceback" not in capsys.readouterr().err


# -- 2. a policy that still diverges while training is a TrainingDivergedError ----------------------


@pytest.fixture(scope="module")
def tiny():
    return prepare(generate("realistic", 400, seed=3).series)


def _config(**update) -> TrainConfig:
    """One rollout of 512 steps (2 environments x 256) and one PPO update, checkpoints every 256."""
    return TrainConfig(**{"quick": True, "total_timesteps": 512, "eval_every": 256, "agent_overrides": {}, **update})


def test_a_diverging_learning_rate_inside_ppo_is_named_by_agent_and_seed(tiny):
    """learning_rate 1000 (set past the check, as a divergence the bounds do not foresee) makes
    the weights NaN in the first update; torch then refuses the Normal's NaN mean."""
    config = _config().model_copy(update={"learning_rate": 1000.0})
    with pytest.raises(train.TrainingDivergedError) as err:
        train.train_agent("balanced", [tiny], [tiny], config, seed=9, progress=False)
    e = err.value
    assert (e.agent, e.seed, e.step) == ("balanced", 9, 512)
    assert str(e).startswith("balanced seed 9: PPO diverged by step 512 (")
    assert "learning_rate 1000" in str(e) and "\n" not in str(e)
    assert isinstance(e.__cause__, ValueError) and "Expected parameter" in str(e.__cause__)


def _diverging_update(monkeypatch, how: str) -> None:
    """PPO's update made to diverge from within: a learning rate of 1000 inside SB3 (the settings
    pass the check) or NaN written into the policy's log-std after the update."""
    original = PPO.train

    def update(self) -> None:
        if how == "learning_rate":
            self.lr_schedule = lambda _: 1000.0
        original(self)
        if how == "nan":
            with torch.no_grad():
                self.policy.log_std.fill_(float("nan"))

    monkeypatch.setattr(PPO, "train", update)


@pytest.mark.parametrize("steps", [512, 1024])
def test_non_finite_parameters_after_an_update_are_a_divergence(steps, tiny, monkeypatch):
    """512: the NaN came in the last update, which nothing ran after — the job went on and wrote
    a set. 1024: the next rollout's Normal got a NaN standard deviation — torch's raw ValueError."""
    _diverging_update(monkeypatch, "nan")
    with pytest.raises(train.TrainingDivergedError,
                       match=r"^conservative seed 7: PPO diverged by step 512 \(non-finite policy parameters: log_std\)"):
        train.train_agent("conservative", [tiny], [tiny], _config(total_timesteps=steps), seed=7, progress=False)


def test_the_cli_prints_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    _diverging_update(monkeypatch, "learning_rate")
    code = main(["train", "agents", "--quick", "--no-progress", "--out", str(tmp_path / "div"), "--bars",
                 "synth:realistic:11:600", "--hp", "agents=balanced", "--hp", f"agent_overrides={ONE_SEED}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ensemble-trader: error: balanced seed 9: PPO diverged by step 512 (")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_sagemaker_job_writes_the_failure_file(container, monkeypatch, capsys):
    _diverging_update(monkeypatch, "learning_rate")
    monkeypatch.setenv("SM_HPS", json.dumps({"quick": "true", "agents": "balanced", "bars": "synth:realistic:11:600",
                                             "agent_overrides": ONE_SEED}))
    assert train.sagemaker_main([]) == 1
    assert container.read_text().startswith("balanced seed 9: PPO diverged by step 512 (")
    *progress, failed = capsys.readouterr().err.splitlines()  # the job's progress lines (no terminal), then why
    assert failed.startswith("training failed: balanced seed 9: PPO diverged")
    assert progress and all(line.startswith("train balanced seed 9: ") for line in progress)


def test_a_value_error_that_is_not_divergence_stays_a_value_error(tiny, monkeypatch):
    def broken(self) -> None:
        raise ValueError("a bug in the update")

    monkeypatch.setattr(PPO, "train", broken)
    with pytest.raises(ValueError, match="^a bug in the update$") as err:
        train.train_agent("balanced", [tiny], [tiny], _config(), seed=9, progress=False)
    assert type(err.value) is ValueError
