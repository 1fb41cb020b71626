"""The failure file of a SageMaker training job (``/opt/ml/output/failure``) is one readable line
of at most 1,024 bytes, the most SageMaker shows as the job's ``FailureReason``.

The agents' job wrote pydantic's report of bad hyperparameters as it was: ``3 validation errors
for TrainConfig`` and, on lines of their own, each field, its message and a link to pydantic's
documentation, cut at 1,000 characters (not bytes). Each test of the entry point failed on the
code before; the unit tests of the helpers pin the cut and the one-line form.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError

import training.agents.train as train
from training import sagemaker
from training.sagemaker import (
    FAILURE_REASON_BYTES,
    capped,
    failure_reason,
    report_failure,
    validation_problems,
)


@pytest.fixture
def job(tmp_path, monkeypatch):
    """The agents' entry point in a container's layout: writes ``hyperparameters.json`` and runs
    ``sagemaker_main``; returns (exit code, failure file text, stderr)."""
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    hyperparameters = tmp_path / "input" / "config" / "hyperparameters.json"
    hyperparameters.parent.mkdir(parents=True)
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.delenv("SM_HPS", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", hyperparameters)
    monkeypatch.setattr(train, "report_failure", lambda name, exc: sagemaker.report_failure(name, exc, failure))
    monkeypatch.setattr(train, "load_series", lambda *a, **k: pytest.fail("bars were read"))

    def run(hps: dict, capsys) -> tuple[int, str, str]:
        hyperparameters.write_text(json.dumps(hps))
        code = train.sagemaker_main([])
        assert not (tmp_path / "model").exists()
        return code, failure.read_text(encoding="utf-8"), capsys.readouterr().err

    return run


def test_an_unknown_hyperparameter_is_named_with_the_known_ones(job, capsys):
    """As the regime job and the CLI say it (it read "Extra inputs are not permitted")."""
    code, text, _ = job({"bars": "synth:realistic:11:600", "lerning_rate": "0.001"}, capsys)
    assert code == 1
    assert text.startswith("bad hyperparameters: lerning_rate: unknown hyperparameter; known: ")
    assert "learning_rate" in text and "\n" not in text


def test_bad_hyperparameters_are_one_line_naming_each_field_and_value(job, capsys):
    code, text, err = job({"bars": "synth:realistic:11:600", "n_envs": "0", "clip_range": "x",
                           "log_std_init": "100", "sagemaker_program": "train.py"}, capsys)
    assert code == 1
    assert "\n" not in text and "errors.pydantic.dev" not in text and "validation error" not in text
    assert text.startswith("bad hyperparameters (3: n_envs, clip_range, log_std_init): n_envs='0': Input should be "
                           "greater than or equal to 1; clip_range='x': Input should be a valid number")
    assert "; log_std_init=100.0 must be in [-5, 2] (an initial exploration noise σ" in text
    assert len(text.encode("utf-8")) <= FAILURE_REASON_BYTES
    assert err == f"training failed: {text}\n"


def test_one_bad_hyperparameter_reads_as_one_sentence(job, capsys):
    code, text, _ = job({"bars": "synth:realistic:11:600", "gamma": "2"}, capsys)
    assert code == 1
    assert text == "bad hyperparameters: gamma='2': Input should be less than or equal to 1"


def test_a_check_of_the_whole_configuration_keeps_its_own_message(job, capsys):
    code, text, _ = job({"bars": "synth:realistic:11:600", "train_fraction": "0.95"}, capsys)
    assert code == 1
    assert text.startswith("bad hyperparameters: train_fraction 0.95 + validation_fraction 0.1 = 1.05 exceed 1")


def test_a_long_reason_is_cut_to_what_sagemaker_shows_with_every_field_named_first(job, capsys):
    hps = {"bars": "synth:realistic:11:600", "learning_rate": "1000", "log_std_init": "-100", "clip_range": "1e6",
           "ent_coef": "1e3", "gamma": "2", "gae_lambda": "2", "n_envs": "0", "seed": "-1",
           "net_arch": "0,0", "agent_overrides": "{not json"}
    code, text, err = job(hps, capsys)
    assert code == 1 and "\n" not in text
    assert len(err) > FAILURE_REASON_BYTES  # stderr (CloudWatch) keeps the whole line
    data = text.encode("utf-8")
    assert FAILURE_REASON_BYTES - 4 < len(data) <= FAILURE_REASON_BYTES and text.endswith("…")
    head = text[: text.index("):")]
    for name in ("seed", "n_envs", "learning_rate", "gamma", "gae_lambda", "clip_range", "ent_coef", "log_std_init",
                 "net_arch", "agent_overrides"):
        assert name in head
    assert err.startswith(f"training failed: {text[:-1]}")


# -- the helpers ----------------------------------------------------------------------------------


def test_capped_never_cuts_inside_a_character():
    assert capped("short") == "short"
    exact = "a" * FAILURE_REASON_BYTES
    assert capped(exact) == exact
    for text in ("σ" * 600, "a" + "σ" * 600, "€" * 400, "a" * 2000):
        out = capped(text)
        assert len(out.encode("utf-8")) <= FAILURE_REASON_BYTES and out.endswith("…")
        assert text.startswith(out[:-1]) and len(out.encode("utf-8")) > FAILURE_REASON_BYTES - 4


class _Model(BaseModel):
    rate: float = Field(gt=0)
    name: str


def test_any_other_validation_error_is_one_line_too(tmp_path, capsys):
    with pytest.raises(ValidationError) as err:
        _Model.model_validate({"rate": -1, "name": ["x" * 200]})
    text = failure_reason(err.value)
    assert text.startswith("invalid _Model (2: rate, name): rate=-1: Input should be greater than 0; name=['xxx")
    assert "…: Input should be a valid string" in text and "\n" not in text
    assert validation_problems(err.value, "bad settings").startswith("bad settings (2: rate, name): ")
    failure = tmp_path / "failure"
    report_failure("regime training", err.value, failure)
    assert failure.read_text(encoding="utf-8") == text
    assert capsys.readouterr().err == f"regime training failed: {text}\n"


def test_a_message_on_several_lines_becomes_one(tmp_path):
    failure = tmp_path / "failure"
    report_failure("training", RuntimeError("first line\n  second line\n"), failure)
    assert failure.read_text(encoding="utf-8") == "first line second line"


def test_outside_a_container_nothing_is_written(tmp_path, capsys):
    report_failure("training", ValueError("x"), Path(tmp_path / "absent" / "failure"))
    assert not (tmp_path / "absent").exists()
    assert capsys.readouterr().err == "training failed: x\n"
