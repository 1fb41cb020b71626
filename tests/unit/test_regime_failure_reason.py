"""The regime training job's failure reason for bad hyperparameters has the form of the agents'
job (``training.sagemaker.validation_problems``), run through its real entry point with a
``hyperparameters.json`` as SageMaker writes it.

The job formatted pydantic's errors itself: the same ``field=value: message`` parts, but with no
list of the bad fields in front (a reason cut to SageMaker's 1,024 bytes could lose the last
ones) and any value written whole. The tests of several bad hyperparameters and of a long value
failed on that code; the test of one bad hyperparameter pins the text that did not change.
"""

from __future__ import annotations

import json

import pytest

from training import sagemaker
from training.regime import train

KNOWN = "seed, states, covariance_type, restarts, start, end, bars"


@pytest.fixture
def job(tmp_path, monkeypatch):
    """``sagemaker_main`` in a container's layout; returns a function that writes the
    hyperparameters file, runs the job and gives (exit code, failure file text, stderr)."""
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    hyperparameters = tmp_path / "input" / "config" / "hyperparameters.json"
    hyperparameters.parent.mkdir(parents=True)

    def must_not_run(*args, **kwargs):
        raise AssertionError("data read or model fitted despite a bad hyperparameter")

    monkeypatch.delenv("SM_HPS", raising=False)
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", hyperparameters)
    monkeypatch.setattr(train, "report_failure", lambda name, exc: sagemaker.report_failure(name, exc, failure))
    monkeypatch.setattr(train, "channel_files", must_not_run)
    monkeypatch.setattr(train, "fit_model", must_not_run)

    def run(hps: dict, capsys) -> tuple[int, str, str]:
        hyperparameters.write_text(json.dumps(hps), encoding="utf-8")
        code = train.sagemaker_main([])
        assert not (tmp_path / "model").exists()
        return code, failure.read_text(encoding="utf-8"), capsys.readouterr().err

    return run


def test_one_bad_hyperparameter_reads_as_before(job, capsys):
    code, text, err = job({"covariance_type": "bogus", "sagemaker_program": "train.py"}, capsys)
    assert code == 1
    assert text == "bad hyperparameters: covariance_type='bogus': Input should be 'full' or 'diag'"
    assert err == f"regime training failed: {text}\n"


def test_an_unknown_name_lists_the_known_ones(job, capsys):
    code, text, _ = job({"covariance": "full"}, capsys)
    assert code == 1
    assert text == f"bad hyperparameters: covariance: unknown hyperparameter; known: {KNOWN}"


def test_several_bad_hyperparameters_are_named_first_then_each_with_its_value(job, capsys):
    code, text, err = job({"seed": -1, "covariance": "full", "states": "4,x",
                           "start": "2010-01-01", "end": "2009-01-01"}, capsys)
    assert code == 1
    assert text == (
        "bad hyperparameters (3: seed, states, covariance): "
        "seed=-1: Input should be greater than or equal to 0; "
        "states='4,x': expected a whole number or a list of them, e.g. 4,5,6; "
        f"covariance: unknown hyperparameter; known: {KNOWN}"
    )
    assert err == f"regime training failed: {text}\n"


def test_a_long_value_is_cut_in_the_reason(job, capsys):
    value = "x" * 500
    code, text, _ = job({"covariance_type": value}, capsys)
    assert code == 1
    assert text == f"bad hyperparameters: covariance_type='{'x' * 78}…: Input should be 'full' or 'diag'"


def test_many_unknown_names_still_fit_sagemaker_and_are_all_named(job, capsys):
    names = [f"setting_{i:02d}" for i in range(20)]
    code, text, err = job(dict.fromkeys(names, 1), capsys)
    assert code == 1
    assert "\n" not in text and text.endswith("…")
    assert len(text.encode("utf-8")) <= sagemaker.FAILURE_REASON_BYTES
    assert text.startswith(f"bad hyperparameters (20: {', '.join(names)}): setting_00: unknown hyperparameter")
    assert err.count("unknown hyperparameter") == 20  # stderr has it whole
