"""The agents' container job reports an error that is not one of its own in the failure file.

``sagemaker_main`` caught only the project's errors and pydantic's: any other exception — a
module missing from the image, a full disk, a model folder it cannot create — left the job with a
traceback and nothing in ``/opt/ml/output/failure`` (the image's shell wrapper then wrote
"agents training job exited with status 1", no reason). The regime job already reported such an
error and re-raised it; the agents' job now does the same, naming the error's type. Each test
fails on the code before.
"""

from __future__ import annotations

import json

import pytest

import training.agents.train as train
from training import sagemaker


@pytest.fixture
def container(tmp_path, monkeypatch):
    """The agents' entry point in a container's layout (failure file under ``tmp_path``);
    returns (failure file, model folder)."""
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"bars": "synth:realistic:11:1200", "quick": "true",
                                             "agents": "balanced"}))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "report_failure", lambda name, exc: sagemaker.report_failure(name, exc, failure))
    return failure, tmp_path / "model"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ModuleNotFoundError("No module named 'onnxruntime'"), "ModuleNotFoundError: No module named 'onnxruntime'"),
        (OSError(28, "No space left on device"), "OSError: [Errno 28] No space left on device"),
        (KeyError("close"), "KeyError: 'close'"),
        (MemoryError(), "MemoryError"),
    ],
)
def test_an_unexpected_error_is_the_failure_reason_and_still_raised(container, monkeypatch, capsys, error, reason):
    failure, _ = container

    def fails(config, out, progress=True, read=None, log_lines=False):
        raise error

    monkeypatch.setattr(train, "run_job", fails)
    with pytest.raises(type(error)):
        train.sagemaker_main([])
    assert failure.read_text(encoding="utf-8") == reason
    assert f"training failed: {reason}" in capsys.readouterr().err


def test_a_model_folder_that_cannot_be_made_is_named_in_the_failure_file(container, monkeypatch):
    """The real job, not a stand-in: SM_MODEL_DIR below a regular file fails when the job makes
    the folder (after the data are read, before any agent trains)."""
    failure, model = container
    model.write_text("a file, not a folder")
    monkeypatch.setenv("SM_MODEL_DIR", str(model / "agents"))
    monkeypatch.setattr(train, "train_agent", lambda *a, **k: pytest.fail("an agent trained"))
    with pytest.raises(NotADirectoryError):
        train.sagemaker_main([])
    text = failure.read_text(encoding="utf-8")
    assert text.startswith("NotADirectoryError: ") and str(model / "agents") in text


def test_the_jobs_own_errors_still_end_with_status_1_and_no_traceback(container, monkeypatch):
    failure, _ = container
    monkeypatch.setenv("SM_HPS", json.dumps({"bars": "synth:realistic:11:1200", "agents": "nobody"}))
    assert train.sagemaker_main([]) == 1
    assert failure.read_text(encoding="utf-8").startswith("bad hyperparameters: agents=")
