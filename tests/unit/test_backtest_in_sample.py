"""The backtest report says when its window is in sample for the agents or the regime model.

It said "Out of sample: ... nothing was tuned on this window" for every window, also for S&P 500
2005-2012, inside the agents' training window and the regime model's.
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


def test_only_the_agents_that_trained_on_a_spec_are_named_and_the_regime_model_matches_by_symbol() -> None:
    found = windows("synth:mean_reverting:12:5000", "SYN", "2001-01-01", "2002-01-01")
    assert [(e["model"], e["agents"]) for e in found] == [("agents", ["b"])]
    assert windows("synth:mean_reverting:12:3000", "SYN", "2001-01-01", "2002-01-01") == []  # another series
    # a bars file of the S&P 500: no agent window is recorded for it, the regime model's by symbol
    assert [e["model"] for e in windows("spx.csv", "SPX", "2001-01-01", "2002-01-01")] == ["regime"]
    # a manifest without windows (an older set): nothing is claimed
    assert in_sample("arch:sp500", "SPX", np.datetime64("2005-01-03"), np.datetime64("2006-01-03"),
                     agents_version="v", agent_names=("a",), agents_training={}, regime_version="r",
                     regime_info={}) == []


def test_the_report_warns_of_an_in_sample_window_and_the_json_lists_it(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    argv = ["backtest", "--bars", "arch:sp500", "--start", "2005-06-01", "--end", "2006-01-01"]
    assert main([*argv, "--json", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {(e["model"], e["part"]) for e in printed["in_sample"]} == {("agents", "train"), ("regime", "train")}
    assert json.loads((tmp_path / "report.json").read_text())["in_sample"] == printed["in_sample"]
    page = (tmp_path / "report.html").read_text()
    assert "In sample for:" in page and "the regime model&#x27;s training window of SPX" in page
    assert "nothing was tuned" not in page and "Out of sample" not in page
    assert "The meta-agent learns online from past bars only." in page


def test_an_out_of_sample_window_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:easy:1:300", "--json", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["in_sample"] == []
    page = (tmp_path / "report.html").read_text()
    assert "Out of sample: the window overlaps none of" in page and "In sample for" not in page
