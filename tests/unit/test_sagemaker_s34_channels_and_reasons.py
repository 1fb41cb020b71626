"""Two SageMaker-contract details shared by both training jobs (training/sagemaker.py):

* a channel's bars files are found whatever the case of their suffix (``SPX.CSV``): the search
  took ``*.csv`` only, so a channel synced from a store with upper-case names held "no bars CSV";
* the regime job's failure reason for an error not its own names the error's type, as the agents'
  job does (``KeyError: 'close'``, where it wrote ``'close'``).
"""

from __future__ import annotations

import json

import pytest

from training import sagemaker
from training.regime import train as regime_train


def test_a_channel_file_with_an_upper_case_suffix_is_read(tmp_path):
    (tmp_path / "2024").mkdir()
    (tmp_path / "2024" / "SPX.CSV").write_text("timestamp,open,high,low,close,volume\n")
    (tmp_path / "ndx.Csv").write_text("timestamp,open,high,low,close,volume\n")
    (tmp_path / "TRUTH.CSV").write_text("timestamp,regime\n")  # labels, not bars
    (tmp_path / "notes.txt").write_text("not a CSV")
    found = sagemaker.channel_files(str(tmp_path))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["2024/SPX.CSV", "ndx.Csv"]


def test_the_regime_jobs_unexpected_error_names_its_type(tmp_path, monkeypatch, capsys):
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.setattr(regime_train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"bars": "synth:realistic:1:400"}))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(regime_train, "report_failure",
                        lambda name, exc: sagemaker.report_failure(name, exc, failure))

    def fails(*args, **kwargs):
        raise KeyError("close")

    monkeypatch.setattr(regime_train, "run_job", fails)
    with pytest.raises(KeyError):
        regime_train.sagemaker_main([])
    assert failure.read_text(encoding="utf-8") == "KeyError: 'close'"
    assert "regime training failed: KeyError: 'close'" in capsys.readouterr().err
