"""The regime training job refuses a train channel and the ``bars`` hyperparameter together.

The channel's files replaced the spec without a word: ``bars=arch:nasdaq`` beside a channel of
other bars fitted the channel's and reported success (reproduced with a channel of synthetic bars:
the manifest's ``training_data`` named the channel's file only). The agents' job has refused
the pair since 2026-11-27. The refusal test fails on the code before.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv

from training import sagemaker
from training.regime import train


@pytest.fixture
def container(tmp_path, monkeypatch):
    """A container's layout with a train channel of one synthetic series; returns the failure
    file and the model folder."""
    failure = tmp_path / "output" / "failure"
    failure.parent.mkdir()
    channel = tmp_path / "train"
    write_bars_csv(channel / "bars.csv", [generate("easy", 600, 2, symbol="SYNX").series], symbol_column=True)
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setattr(train, "report_failure", lambda name, exc: sagemaker.report_failure(name, exc, failure))
    return failure, tmp_path / "model"


@pytest.mark.parametrize("bars", ["arch:nasdaq", "arch:sp500"])  # the default named is still named
def test_a_channel_and_bars_together_fail_before_any_bar_is_read(container, monkeypatch, bars):
    failure, model = container
    monkeypatch.setenv("SM_HPS", json.dumps({"restarts": "1", "states": "4", "bars": bars}))
    monkeypatch.setattr(train, "channel_files", lambda *a, **k: pytest.fail("the channel was read"))
    assert train.sagemaker_main([]) == 1
    text = failure.read_text(encoding="utf-8")
    assert text.startswith("both the train channel ($SM_CHANNEL_TRAIN) and the 'bars' hyperparameter are given")
    assert not model.exists()


def test_the_channel_alone_still_fits(container, monkeypatch):
    _, model = container
    monkeypatch.setenv("SM_HPS", json.dumps({"restarts": "1", "states": "4", "seed": "1"}))
    assert train.sagemaker_main([]) == 0
    info = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    assert [w["symbol"] for w in info["training_window"]] == ["SYNX"]
