"""The SageMaker hyperparameter contract: what the training jobs read from SageMaker."""

from __future__ import annotations

import json

import pytest
from ensemble_trader.domain.errors import DataError

from training.agents.train import TrainConfig
from training.sagemaker import read_hyperparameters


def test_sagemakers_own_keys_are_dropped_and_sdk_encoded_strings_decoded(tmp_path, monkeypatch):
    """The Python SDK adds ``sagemaker_*`` keys and JSON-encodes string values; a tuning job adds
    ``_tuning_objective_metric``. None of them is a setting of the job, and with
    ``extra="forbid"`` they used to fail it."""
    monkeypatch.delenv("SM_HPS", raising=False)
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({
        "agents": '"balanced"',
        "bars": '"[\\"synth:realistic:1:500\\"]"',
        "seed": "11",
        "quick": "true",
        "sagemaker_program": '"train.py"',
        "sagemaker_region": '"eu-west-1"',
        "_tuning_objective_metric": "validation:score",
    }))
    hps = read_hyperparameters(path)
    assert hps == {"agents": "balanced", "bars": '["synth:realistic:1:500"]', "seed": "11", "quick": "true"}
    config = TrainConfig.model_validate(hps)
    assert config.agents == ("balanced",) and config.bars == ("synth:realistic:1:500",) and config.seed == 11


def test_sm_hps_is_read_when_there_is_no_file_and_must_be_an_object(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_HPS", json.dumps({"seed": "3"}))
    assert read_hyperparameters(tmp_path / "absent.json") == {"seed": "3"}
    monkeypatch.setenv("SM_HPS", "[1, 2]")
    with pytest.raises(DataError, match="must be a JSON object"):
        read_hyperparameters(tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", "{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_hyperparameters(tmp_path / "absent.json")


@pytest.mark.parametrize("module", ["training.agents.train", "training.regime.train"])
def test_a_training_entry_point_answers_help_and_refuses_arguments_without_starting_a_job(module, tmp_path, monkeypatch,
                                                                                           capsys):
    import importlib

    main = importlib.import_module(module).sagemaker_main
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "It takes no arguments" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as info:
        main(["--out", "somewhere"])
    assert info.value.code == 2 and "unrecognized arguments: --out somewhere" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_the_agents_job_without_a_train_channel_or_bars_fails_instead_of_training_on_built_in_data(
        tmp_path, monkeypatch, capsys):
    from training.agents.train import sagemaker_main

    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_HPS", json.dumps({"quick": "true"}))
    assert sagemaker_main([]) == 1
    assert "no training data: give the train channel" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_the_onnx_parity_rows_come_from_data_no_policy_trained_on():
    """With a validation channel the training files are whole training windows: the parity check
    takes the validation files' rows, not training observations."""
    import numpy as np

    from training.agents.train import TrainConfig, _heldout_features, split_source

    train = split_source("synth:realistic:1:400:TRN", TrainConfig(), whole=True)
    validation = split_source("synth:realistic:2:400:VAL", TrainConfig(), whole=True)
    validation.validation, validation.train = validation.train, None
    rows = _heldout_features([train], [validation], np.random.default_rng(0), n=64)
    held_out = {r.tobytes() for r in validation.validation.features.astype(np.float32)}
    assert len(rows) == 64 and all(r.tobytes() in held_out for r in rows)


def test_a_channel_written_by_data_synth_trains_the_regime_job(tmp_path, monkeypatch):
    """`data synth` writes truth.csv (not *.truth.csv): the channel read it as bars and failed
    "truth.csv, line 1: unknown column(s) ['regime']"."""
    from ensemble_trader.cli import main

    from training.regime import train
    from training.sagemaker import channel_files

    channel = tmp_path / "ch"
    assert main(["data", "synth", "--scenario", "easy", "--bars", "1500", "--seed", "2", "--out", str(channel)]) == 0
    (channel / "labels.csv").write_text("timestamp,regime\n2000-01-03T00:00:00Z,BULL\n")  # a truth file by its header
    (channel / "more.truth.csv").write_text("timestamp,regime\n")
    assert [p.name for p in channel_files(str(channel))] == ["bars.csv"]
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"states": 4, "restarts": 1}))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    assert train.sagemaker_main() == 0
    assert (tmp_path / "model" / "manifest.json").is_file()


def test_a_channel_holding_only_truth_files_holds_no_bars(tmp_path):
    from training.sagemaker import channel_files

    (tmp_path / "truth.csv").write_text("timestamp,regime\n")
    with pytest.raises(DataError, match="holds no bars CSV"):
        channel_files(str(tmp_path))


def test_a_channel_finds_bars_csvs_in_subfolders_sorted_by_path(tmp_path):
    """An S3Prefix channel keeps the keys' subfolders below the prefix: a channel holding its
    CSVs only in subfolders failed "holds no bars CSV"."""
    from training.sagemaker import channel_files

    for rel in ("b/spx.csv", "a/2024/ndx.csv", "a/2024/truth.csv", "top.csv", "a/notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp,regime\n" if path.name == "truth.csv" else "timestamp,open,high,low,close,volume\n")
    (tmp_path / "dir.csv").mkdir()  # a folder named like a CSV is not one
    files = channel_files(str(tmp_path))
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a/2024/ndx.csv", "b/spx.csv", "top.csv"]

