"""A training channel gives one series per symbol: a symbol split over several files (one per
year, ``2005/spx.csv`` and ``2006/spx.csv``, as an S3 prefix keeps them) is joined in time order.

Each file used to become a series of its own: the S&P 500's 2005 and 2006 in two year folders
trained the regime model on two SPX series of 80 and 79 rows (each paid the features' 173-bar
warm-up again, and the HMM sequence broke at the year boundary) instead of one of 331 rows, and
the agents job took each file as a data spec of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.regime_model import RegimeModel
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv

from training.sagemaker import channel_files, read_channel

N = 900
CUT = 450


@pytest.fixture(scope="module")
def series():
    return generate("easy", N, 3, symbol="SPX").series


def _write(path, s):
    """A bars CSV without a symbol column: its symbol is the file's stem upper-cased (SPX)."""
    write_bars_csv(path, [s], symbol_column=False)
    return path


def test_a_symbol_split_over_two_subfolders_is_one_series_in_time_order(tmp_path, series):
    # path order (a/ before b/) is not time order: the later year sorts first
    late = _write(tmp_path / "a" / "spx.csv", series[CUT:])
    early = _write(tmp_path / "b" / "spx.csv", series[:CUT])
    other = _write(tmp_path / "c" / "ndx.csv", generate("easy", 300, 4, symbol="NDX").series)
    got = read_channel(channel_files(str(tmp_path)))
    assert [c.symbol for c in got] == ["SPX", "NDX"]
    spx = got[0]
    assert spx.files == (early, late) and spx.spec == f"{early} + {late}"
    assert len(spx.series) == N
    np.testing.assert_array_equal(spx.series.timestamp, series.timestamp)
    np.testing.assert_array_equal(spx.series.close, series.close)
    assert got[1].files == (other,) and got[1].spec == str(other)


def test_a_gap_between_a_symbols_files_is_allowed(tmp_path, series):
    _write(tmp_path / "2005" / "spx.csv", series[:300])
    _write(tmp_path / "2006" / "spx.csv", series[400:])
    (spx,) = read_channel(channel_files(str(tmp_path)))
    assert len(spx.series) == N - 100


@pytest.mark.parametrize("second_from", [CUT - 1, CUT - 40], ids=["one-repeated-bar", "overlap"])
def test_files_of_one_symbol_with_overlapping_bar_times_are_refused_naming_both(tmp_path, series, second_from):
    first = _write(tmp_path / "2005" / "spx.csv", series[:CUT])
    second = _write(tmp_path / "2006" / "spx.csv", series[second_from:])
    with pytest.raises(DataError) as info:
        read_channel(channel_files(str(tmp_path)))
    message = str(info.value)
    last = str(np.datetime64(series.timestamp[CUT - 1], "s"))
    assert str(first) in message and str(second) in message
    assert str(np.datetime64(series.timestamp[second_from], "s")) in message and last in message
    assert f"{CUT - second_from} of its bars are at or before {last}" in message


def _regime_job(monkeypatch, tmp_path, channel):
    from training.regime import train

    out = tmp_path / f"model-{channel.name}"
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"seed": 1, "states": 4, "restarts": 1}))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("SM_MODEL_DIR", str(out))
    assert train.sagemaker_main() == 0
    return RegimeModel.load(out)


def test_the_regime_job_fits_a_symbol_split_over_year_folders_as_one_series(tmp_path, monkeypatch, series):
    whole = tmp_path / "whole"
    _write(whole / "spx.csv", series)
    split = tmp_path / "split"
    early = _write(split / "2005" / "spx.csv", series[:CUT])
    late = _write(split / "2006" / "spx.csv", series[CUT:])
    expected = _regime_job(monkeypatch, tmp_path, whole)
    model = _regime_job(monkeypatch, tmp_path, split)
    assert [w["symbol"] for w in model.info["training_window"]] == ["SPX"]
    assert model.info["training_window"][0]["bars"] == N
    assert model.info["n_samples"] == expected.info["n_samples"]  # the warm-up paid once
    assert model.info["training_data"] == [str(early), str(late)]


def test_the_regime_job_refuses_overlapping_files_of_one_symbol(tmp_path, monkeypatch, capsys, series):
    from training.regime import train

    first = _write(tmp_path / "train" / "2005" / "spx.csv", series[:CUT])
    second = _write(tmp_path / "train" / "2006" / "spx.csv", series[CUT - 5:])
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"states": 4, "restarts": 1}))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "train"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    assert train.sagemaker_main() == 1
    err = capsys.readouterr().err
    assert str(first) in err and str(second) in err and "must not repeat or overlap" in err
    assert not (tmp_path / "model").exists()


def _agents_job(monkeypatch, tmp_path, train_dir, validation_dir=None):
    """The agents' entry point up to run_job: what it would train on."""
    from training.agents import train

    seen = {}

    def run_job(config, out, progress=True, read=None, log_lines=False):
        seen.update(config=config, read=dict(read or {}))
        return {"version": "test"}

    monkeypatch.setattr(train, "run_job", run_job)
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"quick": "true"}))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(train_dir))
    if validation_dir is None:
        monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    else:
        monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(validation_dir))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    rc = train.sagemaker_main([])
    return rc, seen


def test_the_agents_job_trains_on_a_symbol_split_over_year_folders_as_one_series(tmp_path, monkeypatch, series):
    early = _write(tmp_path / "train" / "2005" / "spx.csv", series[:CUT])
    late = _write(tmp_path / "train" / "2006" / "spx.csv", series[CUT:])
    val = _write(tmp_path / "val" / "spx.csv", generate("easy", 300, 5, symbol="SPX").series)
    rc, seen = _agents_job(monkeypatch, tmp_path, tmp_path / "train", tmp_path / "val")
    assert rc == 0
    spec = f"{early} + {late}"
    assert seen["config"].bars == (spec,) and seen["config"].validation_bars == (str(val),)
    assert seen["config"].quick  # the hyperparameters still apply
    assert len(seen["read"][spec]) == N
    np.testing.assert_array_equal(seen["read"][spec].timestamp, series.timestamp)
    assert len(seen["read"][str(val)]) == 300


def test_the_agents_job_refuses_overlapping_files_and_files_of_several_symbols(tmp_path, monkeypatch, capsys, series):
    first = _write(tmp_path / "train" / "2005" / "spx.csv", series[:CUT])
    second = _write(tmp_path / "train" / "2006" / "spx.csv", series[CUT - 1:])
    rc, seen = _agents_job(monkeypatch, tmp_path, tmp_path / "train")
    err = capsys.readouterr().err
    assert rc == 1 and not seen and str(first) in err and str(second) in err

    both = tmp_path / "both" / "bars.csv"
    write_bars_csv(both, [series, generate("easy", 300, 4, symbol="NDX").series])
    rc, seen = _agents_job(monkeypatch, tmp_path, tmp_path / "both")
    assert rc == 1 and not seen and f"{both} holds 2 symbols ['SPX', 'NDX']" in capsys.readouterr().err


def test_the_agents_run_job_uses_the_series_read_for_a_spec(tmp_path, series):
    """run_job loads only the specs it was not given bars for (a joined spec is no file path)."""
    from training.agents.train import TrainConfig, run_job

    spec = "nowhere/2005/spx.csv + nowhere/2006/spx.csv"
    config = TrainConfig(bars=(spec,), agents=("balanced",), quick=True, n_seeds=1, total_timesteps=256,
                         eval_every=256)
    manifest = run_job(config, tmp_path / "model", progress=False, read={spec: series})
    assert manifest["training"]["data"] == [spec]
    assert list(manifest["training"]["windows"]) == [spec]
