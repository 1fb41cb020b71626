"""``ensemble-trader regime``: the label contract (header, one row per bar, causality), errors, fit."""

from __future__ import annotations

import csv
import json

import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain.regime import RegimeModel
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv

HEADER = ["timestamp", "regime", "confidence", "p_bull", "p_bear", "p_sideways", "p_volatile", "ready"]


@pytest.fixture(scope="module")
def bars_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bars")
    series = generate("realistic", 400, 12, symbol="SYN").series
    write_bars_csv(folder / "full.csv", [series])
    write_bars_csv(folder / "prefix.csv", [series[:250]])
    return folder, series


def read(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_label_writes_one_row_per_bar_with_the_contract_header(bars_files, tmp_path, capsys):
    folder, series = bars_files
    out = tmp_path / "labels.csv"
    assert main(["regime", "label", "--bars", str(folder / "full.csv"), "--out", str(out)]) == 0
    rows = read(out)
    assert rows[0] == HEADER
    assert len(rows) == 1 + len(series)
    assert rows[1][0] == "2000-01-03T00:00:00Z"
    for row in rows[1:]:
        probs = [float(x) for x in row[3:7]]
        assert row[1] in ("BULL", "BEAR", "SIDEWAYS", "VOLATILE")
        assert abs(sum(probs) - 1.0) < 1e-5
        assert float(row[2]) == pytest.approx(probs[HEADER.index("p_" + row[1].lower()) - 3], abs=1e-6)
    assert "400 bars labelled" in capsys.readouterr().out


def test_warm_up_rows_are_marked_not_ready_and_left_out_of_the_shares(bars_files, tmp_path, capsys):
    """Warm-up rows carry the filter's start distribution, not a detection: ``ready`` says so and
    the printed shares count the detected rows only (60 warm-up bars printed "BULL 100%")."""
    import numpy as np
    from ensemble_trader.domain.features import compute_features
    from ensemble_trader.domain.models import REGIMES

    folder, series = bars_files
    out = tmp_path / "labels.csv"
    assert main(["regime", "label", "--bars", str(folder / "full.csv"), "--out", str(out)]) == 0
    rows = read(out)[1:]
    ready = [row[7] for row in rows]
    assert set(ready) == {"true", "false"}
    assert ready == ["true" if r else "false" for r in compute_features(series).ready]
    detected = [row[1] for row in rows if row[7] == "true"]
    printed = capsys.readouterr().out
    for regime in REGIMES:
        assert f"{regime.value} {detected.count(regime.value) / len(detected):.0%}" in printed
    assert f"of the {len(detected)} detected; {len(rows) - len(detected)} warm-up bars" in printed

    short = tmp_path / "short.csv"
    assert main(["regime", "label", "--bars", "synth:hard:3:60", "--out", str(short)]) == 0
    assert {row[7] for row in read(short)[1:]} == {"false"}
    printed = capsys.readouterr().out
    assert "no detection: all 60 bars are feature warm-up" in printed and "100%" not in printed
    assert np.count_nonzero(compute_features(generate("hard", 60, 3).series).ready) == 0


def test_sub_second_bars_keep_their_timestamps(tmp_path):
    """250 ms bars: each label row has its bar's time, to the microsecond (they collapsed to
    whole seconds, four rows a second), as the bars CSV writes it; cut to its first two columns
    the file is a truth file for ``evaluate agents --truth``."""
    import numpy as np
    from ensemble_trader.domain.bars import BarSeries
    from ensemble_trader.marketdata import read_truth_csv

    s = generate("realistic", 200, 3).series
    ticks = BarSeries(s.symbol, s.timestamp[0] + np.arange(len(s)) * np.timedelta64(250, "ms"),
                      s.open, s.high, s.low, s.close, s.volume)
    bars, out = tmp_path / "ticks.csv", tmp_path / "labels.csv"
    write_bars_csv(bars, [ticks])
    assert main(["regime", "label", "--bars", str(bars), "--out", str(out)]) == 0
    rows = read(out)
    written = [line.split(",")[0] for line in bars.read_text().splitlines()[1:]]
    assert [row[0] for row in rows[1:]] == written
    assert rows[2][0] == "2000-01-03T00:00:00.250000Z"
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join(",".join(row[:2]) for row in rows) + "\n")
    stamps, _ = read_truth_csv(truth)
    np.testing.assert_array_equal(stamps, ticks.timestamp)


def test_labels_of_a_prefix_never_change_when_more_bars_follow(bars_files, tmp_path):
    folder, _ = bars_files
    full, prefix = tmp_path / "full.csv", tmp_path / "prefix.csv"
    assert main(["regime", "label", "--bars", str(folder / "full.csv"), "--out", str(full)]) == 0
    assert main(["regime", "label", "--bars", str(folder / "prefix.csv"), "--out", str(prefix)]) == 0
    full_rows, prefix_rows = read(full), read(prefix)
    assert len(prefix_rows) == 251
    assert full_rows[: len(prefix_rows)] == prefix_rows
    assert full_rows[len(prefix_rows) :] != []  # the later bars exist and were labelled too


def test_malformed_bars_exit_non_zero_with_a_clear_message(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2020-01-02T00:00:00Z,100,101,99,100.5,10\n"
        "2020-01-03T00:00:00Z,100,99,101,100.5,10\n"  # high below low
    )
    code = main(["regime", "label", "--bars", str(bad), "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code != 0 and "line 3" in err
    assert not (tmp_path / "x.csv").exists()


def test_missing_files_and_bad_rule_exit_non_zero(bars_files, tmp_path, capsys):
    folder, _ = bars_files
    out = str(tmp_path / "x.csv")
    assert main(["regime", "label", "--bars", str(tmp_path / "nope.csv"), "--out", out]) != 0
    assert "no such file" in capsys.readouterr().err
    assert main(["regime", "label", "--model", str(tmp_path), "--bars", str(folder / "full.csv"), "--out", out]) != 0
    assert "manifest.json" in capsys.readouterr().err
    assert main(["regime", "label", "--bars", str(folder / "full.csv"), "--out", out, "--confirm", "0"]) != 0
    assert "confirm_bars" in capsys.readouterr().err


def test_fit_writes_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "model"
    code = main(["regime", "fit", "--bars", "synth:easy:3:1500", "--out", str(out), "--seed", "2", "--states", "4",
                 "--restarts", "1"])  # fmt: skip
    assert code == 0
    model = RegimeModel.load(out)
    assert model.n_states == 4 and model.version in capsys.readouterr().out
    assert model.info["training_data"] == ["synth:easy:3:1500"]  # its seed, for training.meta.select's check
    bars = tmp_path / "bars.csv"
    write_bars_csv(bars, [generate("easy", 300, 4).series])
    assert main(["regime", "label", "--model", str(out), "--bars", str(bars), "--out", str(tmp_path / "l.csv")]) == 0


def test_evaluate_prints_the_table_for_a_small_run(capsys, tmp_path):
    code = main(["regime", "evaluate", "--scenarios", "easy", "--seeds", "0", "--bars", "800", "--train-bars",
                 "1500", "--methods", "ours", "true_params", "--restarts", "1", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "| easy | ours |" in table and "| easy | true_params |" in table
    assert (tmp_path / "regime_eval.json").is_file()


def test_evaluate_json_is_strict_json_when_a_run_has_no_regime_switch(capsys):
    """A few rows past the warm-up and no true switch: no detection lag, printed as null, not NaN."""
    from ensemble_trader.cli import main
    from ensemble_trader.domain.features import WARMUP_BARS

    assert main(["regime", "evaluate", "--scenarios", "easy", "--bars", str(WARMUP_BARS + 9), "--seeds", "0",
                 "--methods", "ours", "--json"]) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON")

    out = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert out["rows"][0]["mean_lag"] is None


@pytest.mark.parametrize(("flag", "values", "named"), [
    ("--seeds", ["0", "0", "3"], "0"),
    ("--seeds", ["3", "1", "3", "1"], "1, 3"),
    ("--scenarios", ["easy", "easy"], "easy"),
])
def test_evaluate_refuses_a_seed_or_scenario_named_twice(flag, values, named, monkeypatch, capsys):
    """--seeds 0 0 3 weighted seed 0 twice in every mean of the summary."""
    import training.regime.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    argv = ["regime", "evaluate", "--scenarios", "easy", "--seeds", "0", "--methods", "ours"]
    argv[argv.index(flag) + 1: argv.index(flag) + 2] = values
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {named} named more than once" in err


def test_evaluate_library_refuses_duplicate_seeds_too():
    from ensemble_trader.domain.errors import DataError

    from training.regime.evaluate import EvalConfig, evaluate

    with pytest.raises(DataError, match="seeds: 0 named more than once"):
        evaluate(EvalConfig(scenarios=("easy",), seeds=(0, 0, 3), methods=("ours",)))
