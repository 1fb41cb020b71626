"""``ensemble-trader train agents`` names bad ``--hp`` values in the form of the SageMaker jobs'
failure reasons (``training.sagemaker.validation_problems``).

The command formatted pydantic's errors itself as ``field: message``: the value it was given was
left out, a message that names its field already repeated it (``learning_rate:
learning_rate=1000.0 must be ...``), an unknown name read "Extra inputs are not permitted", and
the same bad settings read differently from the agents' job. Each test failed on that code.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.cli import main

import training.agents.train as train
from training import sagemaker
from training.agents.train import TrainConfig


def _cli(capsys, tmp_path, *hps: str) -> str:
    """The command's error line for ``--hp`` settings (the job must not start)."""
    args = ["train", "agents", "--quick", "--no-progress", "--out", str(tmp_path / "out")]
    for hp in hps:
        args += ["--hp", hp]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "errors.pydantic.dev" not in err
    return err.removeprefix("ensemble-trader: error: ").rstrip("\n")


@pytest.fixture(autouse=True)
def _no_job(monkeypatch):
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("the job ran"))


def test_each_bad_setting_is_named_with_the_value_given(tmp_path, capsys):
    text = _cli(capsys, tmp_path, "n_envs=0", "clip_range=x")
    assert text == ("bad training parameters (2: n_envs, clip_range): "
                    "n_envs='0': Input should be greater than or equal to 1; "
                    "clip_range='x': Input should be a valid number, unable to parse string as a number")


def test_a_message_naming_its_field_is_not_repeated(tmp_path, capsys):
    text = _cli(capsys, tmp_path, "learning_rate=1000")
    assert text.startswith("bad training parameters: learning_rate=1000.0 must be > 0 and at most 0.01: ")


def test_an_unknown_name_lists_the_known_ones(tmp_path, capsys):
    text = _cli(capsys, tmp_path, "lerning_rate=0.001")
    assert text == ("bad training parameters: lerning_rate: unknown hyperparameter; "
                    f"known: {', '.join(TrainConfig.model_fields)}")
    assert "learning_rate" in text.removeprefix("bad training parameters: lerning_rate")


def test_the_cli_and_the_sagemaker_job_name_the_same_problems_alike(tmp_path, monkeypatch, capsys):
    cli = _cli(capsys, tmp_path, "n_envs=0", "gamma=2", "log_std_init=100")
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({"bars": "synth:realistic:11:600", "quick": "true", "n_envs": "0",
                                           "gamma": "2", "log_std_init": "100"}))
    for name in ("SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "SM_HPS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", hyperparameters)
    monkeypatch.setattr(train, "report_failure", lambda job, exc: sagemaker.report_failure(job, exc, failure))
    monkeypatch.setattr(train, "load_series", lambda *a, **k: pytest.fail("bars were read"))
    assert train.sagemaker_main([]) == 1
    job = failure.read_text(encoding="utf-8")
    assert cli.startswith("bad training parameters (3: n_envs, gamma, log_std_init): n_envs='0': ")
    assert cli.removeprefix("bad training parameters") == job.removeprefix("bad hyperparameters")
