"""Hyperparameters of the agents' training job that were accepted and then ignored, or failed late:
an empty ``bars``, ``--hp quick=true``, ``net_arch``, ``bars`` beside a train channel, the
walk-forward fractions, and a seed whose selected checkpoint is its untrained network. Each test
failed on the code before its fix."""

from __future__ import annotations

import json

import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv
from pydantic import ValidationError

import training.agents.train as train
from training.agents.train import TrainConfig


class JobStarted(Exception):
    """Raised by the stand-ins: the job got as far as reading bars or training."""


@pytest.fixture
def container(tmp_path, monkeypatch):
    """A SageMaker container's environment with no channel, no hyperparameters file, and
    ``load_series`` / ``run_job`` replaced by stand-ins that record what the job would do."""
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    seen: dict[str, list] = {"loaded": [], "jobs": []}

    def load_spy(spec, synthetic_bars=2000):
        seen["loaded"].append(spec)
        raise JobStarted(spec)

    def job_spy(config, out, progress=True, read=None, log_lines=False):
        seen["jobs"].append(config)
        raise JobStarted("run_job")

    monkeypatch.setattr(train, "load_series", load_spy)
    monkeypatch.setattr(train, "run_job", job_spy)
    return seen


def _hps(monkeypatch, **hps) -> None:
    monkeypatch.setenv("SM_HPS", json.dumps(hps))


# -- 1. an empty `bars` is an error, not the built-in data ---------------------------------------


@pytest.mark.parametrize("value", ["", " ", "[]", ",", '["", "synth:realistic:1:600"]'])
def test_an_empty_bars_value_is_refused_naming_the_hyperparameter(value):
    """'' / '[]' became bars=(), and run_job's ``config.bars or default_bars()`` trained on the
    built-in S&P 500, NASDAQ and synthetic series instead."""
    with pytest.raises(ValidationError, match=r"bars[\s\S]*empty"):
        TrainConfig.model_validate({"bars": value})


@pytest.mark.parametrize("value", ["", "[]", '""'])
def test_a_container_job_with_a_blank_bars_template_fails_before_reading_any_bar(value, container, monkeypatch,
                                                                                   capsys):
    """A SageMaker job whose template left ``bars`` blank passed the 'no training data' check (the
    key was there) and trained on arch:sp500 & co., reporting success."""
    _hps(monkeypatch, bars=value)
    assert train.sagemaker_main([]) == 1
    err = capsys.readouterr().err
    assert "training failed" in err and "bars" in err and "empty" in err
    assert container == {"loaded": [], "jobs": []}


def test_a_container_job_with_a_null_bars_still_needs_its_data(container, monkeypatch, capsys):
    _hps(monkeypatch, bars=None)
    assert train.sagemaker_main([]) == 1
    assert "no training data: give the train channel" in capsys.readouterr().err
    assert container == {"loaded": [], "jobs": []}


def test_cli_hp_bars_empty_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("the job ran"))
    assert main(["train", "agents", "--hp", "bars=", "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "bad training parameters: bars='':" in err and "empty" in err


# -- 4. --hp quick=true is kept, and the committed folder's guard reads it -------------------------



def test_hp_quick_true_is_a_quick_run_and_is_refused_into_the_committed_folder(models_copy, monkeypatch, capsys):
    """``params["quick"] = args.quick`` overwrote it with False: a full 300k-step run started,
    into the committed folder, past the guard that refuses quick runs there."""
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("a quick set was trained into the committed folder"))
    before = (models_copy / "agents" / "manifest.json").read_bytes()
    assert main(["train", "agents", "--hp", "quick=true", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "smoke-test set" in err and "pass --out DIR" in err
    assert (models_copy / "agents" / "manifest.json").read_bytes() == before


def test_hp_quick_true_with_out_runs_quick(models_copy, tmp_path, monkeypatch):
    calls = []

    def fake_job(config, out, progress):
        calls.append((config.quick, config.timesteps, out))
        return {"version": "agents-x", "training": {"seconds_total": 0.0}, "agents": {}}

    monkeypatch.setattr(train, "run_job", fake_job)
    assert main(["train", "agents", "--hp", "quick=true", "--no-progress", "--out", str(tmp_path / "q")]) == 0
    assert main(["train", "agents", "--hp", "quick=false", "--no-progress", "--out", str(tmp_path / "f")]) == 0
    assert calls == [(True, 2_048, tmp_path / "q"), (False, 300_000, tmp_path / "f")]


# -- 5. net_arch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-5", "[]", "", "64,0", "[64, -1]"])
def test_a_bad_net_arch_is_a_config_error(value):
    """net_arch=0 trained and wrote a constant policy (exit 0); -5 died in torch with an untyped
    RuntimeError after the data were loaded."""
    with pytest.raises(ValidationError, match=r"net_arch[\s\S]*(>= 1|at least one)"):
        TrainConfig.model_validate({"net_arch": value})


def test_a_bad_net_arch_fails_the_cli_before_the_job(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("the job ran"))
    assert main(["train", "agents", "--hp", "net_arch=-5", "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "bad training parameters: net_arch='-5':" in capsys.readouterr().err


def test_good_net_arch_values_are_kept():
    assert TrainConfig.model_validate({"net_arch": "32, 16"}).net_arch == (32, 16)
    assert TrainConfig.model_validate({"net_arch": "[8]"}).net_arch == (8,)
    assert TrainConfig().net_arch == (64, 64)


# -- 6. a channel and its hyperparameter together --------------------------------------------------


@pytest.fixture
def channels(tmp_path):
    train_dir, val_dir = tmp_path / "ch" / "train", tmp_path / "ch" / "validation"
    write_bars_csv(train_dir / "syn.csv", generate("realistic", 400, seed=1, symbol="TRN").series)
    write_bars_csv(val_dir / "syn.csv", generate("realistic", 300, seed=2, symbol="VAL").series)
    return train_dir, val_dir


@pytest.mark.parametrize(("channel", "key", "env"), [
    ("train", "bars", "SM_CHANNEL_TRAIN"),
    ("validation", "validation_bars", "SM_CHANNEL_VALIDATION"),
])
def test_a_channel_and_its_hyperparameter_together_are_refused(channel, key, env, channels, container, monkeypatch,
                                                                capsys):
    """The channel's files silently replaced the hyperparameter's specs."""
    train_dir, val_dir = channels
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(train_dir))
    if channel == "validation":
        monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(val_dir))
    _hps(monkeypatch, **{key: "arch:sp500"})
    assert train.sagemaker_main([]) == 1
    err = capsys.readouterr().err
    assert f"${env}" in err and f"'{key}'" in err and "not both" in err
    assert container == {"loaded": [], "jobs": []}


def test_channels_alone_still_run(channels, container, monkeypatch):
    train_dir, val_dir = channels
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(train_dir))
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(val_dir))
    # the fractions do not cut anything with a validation channel: train_fraction 1 is accepted
    _hps(monkeypatch, quick="true", train_fraction="1.0")
    with pytest.raises(JobStarted):
        train.sagemaker_main([])
    (config,) = container["jobs"]
    assert config.bars == (str(train_dir / "syn.csv"),)
    assert config.validation_bars == (str(val_dir / "syn.csv"),)


# -- 7. the walk-forward fractions ---------------------------------------------------------------


@pytest.mark.parametrize(("train_fraction", "validation_fraction"), [(1.0, 0.1), (0.95, 0.1), (0.5, 0.6)])
def test_fractions_beyond_the_series_are_refused_naming_both(train_fraction, validation_fraction):
    """train_fraction=1.0 was accepted and the job then said "give validation_fraction > 0"
    though it was 0.1: no bar was left after the training window."""
    with pytest.raises(ValidationError) as info:
        TrainConfig(train_fraction=train_fraction, validation_fraction=validation_fraction)
    text = str(info.value)
    assert f"train_fraction {train_fraction:g}" in text and f"validation_fraction {validation_fraction:g}" in text
    assert "exceed 1" in text


def test_fractions_that_fit_are_accepted_and_ignored_with_validation_bars():
    assert TrainConfig(train_fraction=0.9, validation_fraction=0.1).train_fraction == 0.9
    assert TrainConfig(train_fraction=0.7, validation_fraction=0.3).validation_fraction == 0.3
    # with separate validation data the series train whole: the fractions cut nothing
    assert TrainConfig(train_fraction=1.0, validation_bars=["x.csv"]).train_fraction == 1.0


def test_no_validation_window_names_both_fractions(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train_agent", lambda *a, **k: pytest.fail("an agent trained"))
    config = TrainConfig(bars=["synth:realistic:11:600"], agents=["conservative"], train_fraction=1.0,
                         validation_fraction=0.0, quick=True)
    with pytest.raises(DataError, match=r"no validation window.*train_fraction 1.*validation_fraction 0"):
        train.run_job(config, tmp_path / "out", progress=False)


# -- 3. a seed whose best checkpoint is its untrained network --------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from ensemble_trader.backtest.engine import prepare

    return prepare(generate("realistic", 400, seed=3).series)


@pytest.mark.parametrize("best_at_start", [True, False])
def test_a_step_0_selection_is_warned_about(best_at_start, tiny, monkeypatch, capsys):
    """The committed Conservative bags seed 207's step-0 network (selected_at [228000, 150000, 0])
    and nothing said so."""
    scores = iter([1.0, 0.5, 0.2] if best_at_start else [0.1, 0.5, 0.9])

    def scripted(*args, **kwargs):
        return {"score": next(scores), "mean_reward": 0.0}

    monkeypatch.setattr(train, "validate", scripted)
    config = TrainConfig(quick=True, total_timesteps=512, eval_every=256, agent_overrides={})
    trained = train.train_agent("conservative", [tiny], [tiny], config, seed=7, progress=False)
    err = capsys.readouterr().err
    if best_at_start:
        assert trained.validation["selected_at"] == 0
        assert "warning: conservative seed 7: selected at step 0" in err
        assert "untrained network" in err
    else:
        assert trained.validation["selected_at"] == 512
        assert "step 0" not in err
