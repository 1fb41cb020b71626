"""``evaluate agents`` and the evaluation suite say when the data they score are not out of sample
for the agent set: the rule ``backtest`` applies (``ensemble_trader.domain.fitted``). Each test
failed on the code before the fix (``evaluate agents`` never flagged an in-sample window, and the
suite called any synthetic seed 2024/2025 "unseen")."""

from __future__ import annotations

import json

import pytest
from ensemble_trader.cli import main

from training.agents.evaluate import SYNTHETIC, suite_cases


def _run(capsys, *argv: str) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["evaluate", "agents", *argv, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_a_seed_the_committed_agents_trained_on_is_flagged_in_sample(capsys):
    """The committed set trained on synth:realistic:11:5000: any series of seed 11 shares its
    regime path (backtest flags it; evaluate agents reported it as if unseen)."""
    report, err = _run(capsys, "--bars", "synth:realistic:11:600")
    found = report["run"]["in_sample"]
    assert found and all(e["model"] == "agents" and e["match"] == "seed" and e["seed"] == 11 for e in found)
    assert {e["data"] for e in found} == {"synth:realistic:11:5000"}
    assert {e["part"] for e in found} == {"train", "validation"}
    assert report["run"]["in_sample_notes"] == []
    assert "warning: SYN: IN SAMPLE for the conservative, aggressive and balanced agents' training window of " \
           "synth:realistic:11:5000 (synthetic seed 11" in err


def test_an_unseen_seed_is_out_of_sample_and_says_nothing(capsys):
    report, err = _run(capsys, "--bars", "synth:realistic:2024:600")
    assert report["run"]["in_sample"] == [] and report["run"]["in_sample_notes"] == []
    assert "IN SAMPLE" not in err


def test_real_bars_are_matched_by_date_the_test_window_is_not(capsys):
    report, err = _run(capsys, "--bars", "arch:sp500", "--start", "2014-06-02", "--end", "2015-06-01")
    found = report["run"]["in_sample"]
    # the agents' validation window of both indices (2013-01-02 .. 2014-12-30); the regime model
    # (detected regimes here) was fitted on 1999-2006: not met
    assert {(e["model"], e["part"], e["data"]) for e in found} == {
        ("agents", "validation", "arch:sp500"), ("agents", "validation", "arch:nasdaq")}
    assert all(e["overlap"] == ["2014-06-02T00:00:00", "2014-12-30T00:00:00"] for e in found)
    assert report["run"]["regimes"] == "detected"
    assert "warning: SPX: IN SAMPLE for the conservative, aggressive, balanced and contrarian agents' validation window" in err
    report, err = _run(capsys, "--bars", "arch:sp500", "--start", "2015-01-02")
    assert report["run"]["in_sample"] == [] and "IN SAMPLE" not in err


def test_detected_regimes_count_the_regime_models_window(capsys):
    report, _ = _run(capsys, "--bars", "arch:sp500", "--start", "2005-01-03", "--end", "2005-12-30")
    models = {(e["model"], e["part"]) for e in report["run"]["in_sample"]}
    assert ("regime", "train") in models and ("agents", "train") in models


def test_a_bars_file_is_compared_by_date_and_noted(tmp_path, capsys):
    from ensemble_trader.domain.synthetic import generate
    from ensemble_trader.marketdata import write_bars_csv

    path = tmp_path / "bars.csv"
    write_bars_csv(path, generate("realistic", 400, seed=2024).series)
    report, err = _run(capsys, "--bars", str(path))
    assert any("provenance unknown for a file" in note for note in report["run"]["in_sample_notes"])
    assert "warning: BARS: provenance unknown for a file" in err  # the symbol of a file without one: its stem


# -- the suite's synthetic cases --------------------------------------------------------------------


def test_the_suites_unseen_seeds_are_skipped_when_the_set_trained_on_them():
    """A set trained on seed 2024 was still "tested" on synth:realistic:2024:3000 as an unseen seed."""
    windows = {"synth:realistic:2024:5000": {"train": ["2000-01-01T00:00:00", "2009-01-01T00:00:00"],
                                             "validation": ["2009-01-02T00:00:00", "2010-01-01T00:00:00"]}}
    cases = {c.spec: c for c in suite_cases("test", windows, ["synth:realistic:2024:5000"])}
    seen, unseen = (spec for spec, _ in SYNTHETIC["test"])
    assert cases[seen].skip is not None and "seed 2024" in cases[seen].skip
    assert "synth:realistic:2024:5000" in cases[seen].skip and "not unseen" in cases[seen].skip
    assert cases[unseen].skip is None
    # the validation split's seeds: skipped when trained on, kept when only selected on
    trained = {"synth:mean_reverting:2022:4000": {"train": ["2000-01-01T00:00:00", "2009-01-01T00:00:00"]}}
    val = {c.spec: c for c in suite_cases("validation", trained, ["synth:mean_reverting:2022:4000"])}
    assert val["synth:realistic:2022:3000"].skip is not None and "training data" in val["synth:realistic:2022:3000"].skip
    selected = {"synth:mean_reverting:2022:4000": {"validation": ["2009-01-02T00:00:00", "2010-01-01T00:00:00"]}}
    training = {"windows": selected, "data": ["synth:realistic:1:4000"],
                "validation_data": ["synth:mean_reverting:2022:4000"]}
    val = {c.spec: c for c in suite_cases("validation", selected, training=training)}
    assert val["synth:realistic:2022:3000"].skip is None


def test_the_committed_sets_suite_cases_are_all_run():
    from ensemble_trader.domain.agents import AgentPool

    from training.agents.evaluate import model_set_cases

    cases = model_set_cases(AgentPool.load(), "test")
    assert [c.spec for c in cases if c.spec.startswith("synth:")] == [s for s, _ in SYNTHETIC["test"]]
    assert all(c.skip is None for c in cases)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_suite_cases_keep_their_signature_for_windows_alone(split):
    assert suite_cases(split, {}) and all(c.skip is None for c in suite_cases(split, {}))
