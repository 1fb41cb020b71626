"""The backtest report says when its window is in sample for the agents or the regime model.

It said "Out of sample: ... nothing was tuned on this window" for every window, also for S&P 500
2005-2012, inside the agents' training window and the regime model's. Then it looked the agents'
windows up by the exact --bars text and the regime model's by symbol, and disagreed with
training.meta.select: both now use ensemble_trader.domain.fitted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest.provenance import describe, in_sample

TRAINING = {
    "data": ["arch:sp500", "synth:mean_reverting:12:5000"],
    "validation_data": [],
    "windows": {
        "arch:sp500": {"train": ["1999-03-31T00:00:00", "2012-12-31T00:00:00"],
                       "validation": ["2013-01-02T00:00:00", "2014-12-30T00:00:00"],
                       "test": ["2014-12-31T00:00:00", "2018-12-31T00:00:00"]},
        "synth:mean_reverting:12:5000": {"train": ["2000-03-03T00:00:00", "2009-08-02T00:00:00"]},
    },
    "agent_data": {"a": ["arch:sp500"], "b": ["arch:sp500", "synth:mean_reverting:12:5000"]},
    "agent_validation_data": {"a": ["arch:sp500"], "b": ["arch:sp500"]},
}
REGIME = {"training_window": [{"symbol": "SPX", "start": "1999-01-04T00:00:00", "end": "2006-12-29T00:00:00",
                               "bars": 2011}]}


def windows(spec: str, symbol: str, start: str, end: str) -> list[dict]:
    return in_sample(spec, symbol, np.datetime64(start, "ns"), np.datetime64(end, "ns"), agents_version="agents-x",
                     agent_names=("a", "b"), agents_training=TRAINING, regime_version="r-x", regime_info=REGIME)


def test_a_window_inside_the_training_windows_is_in_sample_for_the_agents_and_the_regime_model() -> None:
    found = windows("arch:sp500", "SPX", "2005-01-03", "2012-12-28")
    assert [(e["model"], e["part"]) for e in found] == [("agents", "train"), ("regime", "train")]
    assert found[0]["agents"] == ["a", "b"] and found[0]["overlap"] == ["2005-01-03T00:00:00", "2012-12-28T00:00:00"]
    assert found[1]["overlap"] == ["2005-01-03T00:00:00", "2006-12-29T00:00:00"] and found[1]["data"] == "SPX"
    assert describe(found[0]) == ("the a and b agents' training window of arch:sp500 (1999-03-31 → 2012-12-31; "
                                  "overlap 2005-01-03 → 2012-12-28)")
    assert describe(found[1]).startswith("the regime model's training window of SPX")


def test_validation_windows_count_and_test_windows_do_not() -> None:
    found = windows("arch:sp500", "SPX", "2014-01-02", "2016-01-04")
    assert [(e["model"], e["part"], e["overlap"][1][:10]) for e in found] == [("agents", "validation", "2014-12-30")]
    assert windows("arch:sp500", "SPX", "2015-01-02", "2018-12-31") == []


def test_only_the_agents_that_trained_on_a_spec_are_named() -> None:
    found = windows("synth:mean_reverting:12:5000", "SYN", "2001-01-01", "2002-01-01")
    assert [(e["model"], e["agents"], e["match"]) for e in found] == [("agents", ["b"], "seed")]
    assert describe(found[0]) == ("the b agent's training window of synth:mean_reverting:12:5000 (synthetic seed 12, "
                                  "the evaluated series' seed: under the same preset the same regime path, and at equal "
                                  "length the same draws; under another preset a correlated path)")


@pytest.mark.parametrize("spec", ["synth:mean_reverting:12:3000", "synth:mean_reverting:12:5000:ABC",
                                  "synth:easy:12:5000", "synth:hard:12"])
def test_a_synthetic_series_of_a_fitted_seed_is_in_sample_whatever_its_preset_length_or_symbol(spec) -> None:
    """It said "Out of sample" for the agents' own training closes under another symbol (the
    backtest looked windows up by the exact --bars text), while select refused them."""
    found = windows(spec, "ABC", "1990-01-01", "1990-06-01")  # a synthetic series' dates mean nothing
    assert [(e["model"], e["part"], e["seed"]) for e in found] == [("agents", "train", 12)]
    assert windows("synth:mean_reverting:13:5000", "SYN", "2001-01-01", "2002-01-01") == []  # another seed


def test_real_bars_meet_every_real_fitted_window_by_date_whatever_the_series() -> None:
    """select's rule: a model fitted on any real series over the evaluated dates learned from that
    market period (NASDAQ with the S&P 500-fitted regime model; S&P 500 with BTC-USD-fitted agents)."""
    nasdaq = windows("arch:nasdaq", "NDX", "2005-01-03", "2006-01-03")
    assert [(e["model"], e["data"]) for e in nasdaq] == [("agents", "arch:sp500"), ("regime", "SPX")]
    training = {"data": ["arch:sp500", "shared:btcusd_1h"],
                "windows": {"arch:sp500": {"train": ["1999-01-04", "2012-12-31"], "test": ["2014-12-31", "2018-12-31"]},
                            "shared:btcusd_1h": {"train": ["2017-07-01T11:00:00", "2019-02-07T23:00:00"]}}}
    found = in_sample("arch:sp500", "SPX", np.datetime64("2015-01-02"), np.datetime64("2018-12-31"),
                      agents_version="agents-53b", agent_names=("a",), agents_training=training,
                      regime_version="r", regime_info=REGIME)
    assert [(e["data"], e["overlap"]) for e in found] == [
        ("shared:btcusd_1h", ["2017-07-01T11:00:00", "2018-12-31T00:00:00"])]


def test_a_regime_model_fitted_on_synthetic_data_is_matched_by_seed_not_by_symbol_or_dates() -> None:
    info = {"training_data": ["synth:realistic:5:6000"],
            "training_window": [{"symbol": "SYN", "start": "2000-01-03", "end": "2023-01-01", "bars": 6000}]}

    def regime(spec: str, start: str = "2001-01-01", end: str = "2002-01-01") -> list[dict]:
        return in_sample(spec, "SYN", np.datetime64(start), np.datetime64(end), agents_version="v",
                         agent_names=("a",), agents_training={"windows": {}, "data": ["synth:easy:99:10"]},
                         regime_version="r-syn", regime_info=info)

    assert regime("synth:realistic:7:3000") == []  # an unrelated seed under the same symbol
    assert [(e["model"], e["seed"]) for e in regime("synth:easy:5:300:XYZ")] == [("regime", 5)]
    assert regime("arch:sp500") == []  # the synthetic series' dates are not real dates


def test_a_file_is_compared_by_date_with_every_real_fitted_window_and_says_its_provenance_is_unknown() -> None:
    from ensemble_trader.backtest.provenance import assess, fitted_windows

    fitted = fitted_windows(agents_version="agents-x", agent_names=("a", "b"), agents_training=TRAINING,
                            regime_version="r-x", regime_info=REGIME)
    got = assess("spx.csv", np.datetime64("2001-01-01"), np.datetime64("2002-01-01"), fitted)
    assert [(e["model"], e["data"]) for e in got.in_sample] == [("agents", "arch:sp500"), ("regime", "SPX")]
    assert got.notes == ["provenance unknown for a file: its bars were compared by date with every real fitted "
                         "window; whether they are the synthetic series of seed 12 the models were fitted on "
                         "cannot be told"]
    assert assess("spx.csv", np.datetime64("2019-01-02"), np.datetime64("2020-01-02"), fitted).in_sample == []
    assert assess("arch:sp500", np.datetime64("2019-01-02"), np.datetime64("2020-01-02"), fitted).notes == []


def test_a_manifest_that_records_no_windows_is_not_called_out_of_sample() -> None:
    from ensemble_trader.backtest.provenance import assess, fitted_windows

    fitted = fitted_windows(agents_version="v", agent_names=("a",), agents_training={}, regime_version="r",
                            regime_info={})
    got = assess("arch:sp500", np.datetime64("2005-01-03"), np.datetime64("2006-01-03"), fitted)
    assert got.in_sample == []
    assert got.notes == ["the manifest of the agent set v records no training window of its training data (a): "
                         "not checked against it",
                         "the manifest of the regime model r records no training window of its training data: "
                         "not checked against it"]
    from ensemble_trader.backtest.report import _sample_note

    page = _sample_note({"in_sample": got.in_sample, "in_sample_notes": got.notes})
    assert "Out of sample" not in page and "Not checked: the manifest of the agent set v" in page


def test_the_report_warns_of_an_in_sample_window_and_the_json_lists_it(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    argv = ["backtest", "--bars", "arch:sp500", "--start", "2005-06-01", "--end", "2006-01-01"]
    assert main([*argv, "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {(e["model"], e["part"]) for e in printed["in_sample"]} == {("agents", "train"), ("regime", "train")}
    assert json.loads((tmp_path / "report.json").read_text())["in_sample"] == printed["in_sample"]
    page = (tmp_path / "report.html").read_text()
    assert "In sample for:" in page and "the regime model&#x27;s training window of arch:sp500" in page
    assert "nothing was tuned" not in page and "Out of sample" not in page
    assert "The meta-agent learns online from past bars only." in page


def test_an_out_of_sample_window_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:easy:1:300", "--json", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["in_sample"] == []
    page = (tmp_path / "report.html").read_text()
    assert "Out of sample: the window overlaps none of" in page and "In sample for" not in page


def test_the_backtest_flags_the_agents_training_seed_under_another_symbol(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:easy:11:300:ABC", "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {(e["model"], e["part"], e["match"], e["seed"]) for e in printed["in_sample"]} == {
        ("agents", "train", "seed", 11), ("agents", "validation", "seed", 11)}
    assert printed["in_sample_notes"] == []
    page = (tmp_path / "report.html").read_text()
    assert "In sample for:" in page and "synthetic seed 11" in page and "Out of sample" not in page


def test_a_bars_file_is_checked_by_date_and_its_provenance_is_named(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main
    from ensemble_trader.marketdata import load_bars, write_bars_csv

    csv = tmp_path / "index.csv"  # the index's bars: a file cannot say where they came from
    write_bars_csv(csv, load_bars("arch:sp500")[0].between("2005-01-01", "2006-01-01"))
    assert main(["backtest", "--bars", str(csv), "--start", "2005-06-01", "--json", "--out", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert {(e["model"], e["data"]) for e in printed["in_sample"]} == {("agents", "arch:sp500"),
                                                                       ("agents", "arch:nasdaq"), ("regime", "arch:sp500")}
    assert printed["in_sample_notes"][0].startswith("provenance unknown for a file: its bars were compared by date")
    assert "warning: " in err and "provenance unknown for a file" in err
    page = (tmp_path / "r" / "report.html").read_text()
    assert "In sample for:" in page and "Not checked: provenance unknown for a file" in page
