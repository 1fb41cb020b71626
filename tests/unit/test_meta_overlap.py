"""training.meta.select / bounds refuse to score models on data they learned from; select's
report figures are written atomically."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from ensemble_trader.domain.regime_model import RegimeModel
from ensemble_trader.runtime.settings import Settings

import training.meta.bounds as bounds
import training.meta.select as select
from tests.unit.test_cli_review import file_size_limit
from training.meta.select import (
    SPLITS,
    TEST_SETS,
    EvalSet,
    FittedWindow,
    agent_windows,
    overlaps,
    regime_windows,
    synthetic_seed,
)

COMMITTED = Settings().models_dir


def no_work(*args, **kwargs):
    raise AssertionError("the evaluation ran")


def fake_reports(sets, candidates, **kwargs):
    """What evaluate_candidates returns, for every set, without running anything."""
    target = {"best_agent": "balanced", "best_sharpe": 1.0, "ensemble_sharpe": 1.3, "sharpe_goal": 1.2,
              "sharpe_met": True, "best_max_drawdown": 0.2, "ensemble_max_drawdown": 0.1, "drawdown_met": True,
              "margin_se": 0.25}
    report = {"target": target, "buy_and_hold": {"overall": {"sharpe": 0.5}}, "regret": {"overall": 2.0}}
    return {label: {s.name: report for s in sets} for label in candidates}, "agents-fake"


@pytest.fixture
def regime_fitted_to_2018(tmp_path):
    """The committed regime model with the training window of a fit on 1999-2018 (the repro)."""
    folder = tmp_path / "regime"
    shutil.copytree(COMMITTED / "regime", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["training_window"] = [{"symbol": "SPX", "start": "1999-01-04T00:00:00", "end": "2018-12-31T00:00:00",
                                    "bars": 5031}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def agent_set(tmp_path, windows: dict) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"version": "agents-0123456789ab",
                                                      "training": {"windows": windows}}))
    return folder


# -- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("last", "refused"), [
    ("2014-12-30T00:00:00", False),  # the committed agents' validation window
    ("2014-12-31T00:00:00", False),  # the last bar before the test window: warm-up only
    ("2015-01-01T00:00:00", True),
    ("2015-01-02T00:00:00", True),  # the first evaluated bar
    ("2018-12-31T00:00:00", True),
])
def test_a_window_is_refused_when_it_ends_on_or_after_the_evaluated_start(last, refused):
    window = FittedWindow("regime model rX", "SPX", "training", "1999-01-04T00:00:00", last)
    problems = overlaps([EvalSet("S&P 500 2015-18", "arch:sp500", "2015-01-01")], [window], report=True)
    assert bool(problems) is refused
    if refused:
        assert "regime model rX" in problems[0] and last[:10] in problems[0] and "'S&P 500 2015-18'" in problems[0]


def test_the_agents_validation_windows_count_on_the_report_splits_only():
    """The validation split is, by the protocol, the agents' own validation window."""
    window = FittedWindow("agent set a", "arch:sp500", "validation", "2013-01-02", "2016-12-30", selected=True)
    sets = [EvalSet("S&P 500", "arch:sp500", "2015-01-01")]
    assert overlaps(sets, [window], report=False) == []
    assert "selected on arch:sp500" in overlaps(sets, [window], report=True)[0]


def test_synthetic_sets_are_compared_by_seed_under_any_preset():
    fitted = FittedWindow("agent set a", "synth:realistic:11:5000", "train", "2000-03-03", "2009-08-02", seed=11)
    same_seed = EvalSet("hard 11", "synth:hard:11:3000")
    other = EvalSet("hard 12", "synth:hard:12:3000")
    dated = EvalSet("S&P 500", "arch:sp500", "2001-01-01")  # the synthetic series' dates mean nothing
    problems = overlaps([same_seed, other, dated], [fitted], report=True)
    assert len(problems) == 1 and "seed 11" in problems[0] and "'hard 11'" in problems[0]
    assert synthetic_seed("synth:easy") == 0 and synthetic_seed("synth:easy:7:300") == 7
    assert synthetic_seed("arch:sp500") is None and synthetic_seed("bars.csv") is None


def test_a_regime_model_fitted_on_synthetic_data_is_checked_by_seed_not_by_its_dates(tmp_path):
    from ensemble_trader.marketdata import load_bars

    from training.regime.train import fit_model

    _, model = fit_model(load_bars("synth:easy:204:1200"), states=4, restarts=1, data=["synth:easy:204:1200"])
    assert model.info["training_data"] == ["synth:easy:204:1200"]
    windows = regime_windows(model)
    assert [(w.seed, w.last) for w in windows] == [(204, None)]
    validation = SPLITS["validation"]
    problems = overlaps(validation, windows, report=False)
    assert len(problems) == 1 and "'synth mean-rev 204'" in problems[0]


def test_the_committed_manifests_are_read():
    windows, version = agent_windows(None)
    assert version == json.loads((COMMITTED / "agents" / "manifest.json").read_text())["version"]
    parts = {(w.data, w.part) for w in windows}
    assert ("arch:sp500", "train") in parts and ("arch:sp500", "validation") in parts
    assert all(w.part != "test" for w in windows)
    (regime,) = regime_windows(RegimeModel.load(COMMITTED / "regime"))
    assert regime.last.startswith("2006-12-29")


def test_a_real_set_without_a_start_is_checked_from_its_first_bar():
    """It was never checked (only sets with a start were)."""
    window = FittedWindow("regime model rX", "SPX", "training", "1999-01-04T00:00:00", "2006-12-29T00:00:00")
    problems = overlaps([EvalSet("S&P 500 whole", "arch:sp500")], [window], report=True)
    assert len(problems) == 1 and "'S&P 500 whole' (its first bar → its last bar; overlap 1999-01-04" in problems[0]
    later = FittedWindow("regime model rY", "SPX", "training", "1980-01-02T00:00:00", "1990-12-31T00:00:00")
    assert overlaps([EvalSet("S&P 500 whole", "arch:sp500")], [later], report=True) == []  # before its first bar


def test_a_window_after_an_evaluated_window_with_an_end_is_no_overlap():
    """The rule is overlap (as the backtest's report): a model fitted after the window's end
    never saw its bars."""
    after = FittedWindow("agent set a", "shared:btcusd_1h", "train", "2017-07-01T11:00:00", "2019-02-07T23:00:00")
    assert overlaps([EvalSet("S&P 500 2013-14", "arch:sp500", "2013-01-01", "2015-01-01")], [after], report=True) == []
    problems = overlaps([EvalSet("S&P 500 2015-18", "arch:sp500", "2015-01-01")], [after], report=True)
    assert len(problems) == 1 and "shared:btcusd_1h 2017-07-01 → 2019-02-07" in problems[0]


def test_a_regime_model_with_mixed_training_data_is_checked_by_seed_and_by_date():
    info = {"training_data": ["arch:sp500", "synth:easy:204:1200"],
            "training_window": [{"symbol": "SPX", "start": "1999-01-04T00:00:00", "end": "2006-12-29T00:00:00"},
                                {"symbol": "SYN", "start": "2000-01-03T00:00:00", "end": "2004-10-01T00:00:00"}]}
    from ensemble_trader.domain import fitted

    windows = fitted.regime_windows(info, "r-mixed")
    assert [(w.data, w.seed, w.last) for w in windows] == [("synth:easy:204:1200", 204, None),
                                                            ("arch:sp500", None, "2006-12-29T00:00:00")]
    assert overlaps([EvalSet("NASDAQ 2013-14", "arch:nasdaq", "2003-01-01", "2005-01-01")], windows, report=False)
    assert overlaps(SPLITS["validation"], windows, report=False)[0].startswith(
        "regime model r-mixed was fitted on synth:easy:204:1200 (training), a synthetic series of seed 204")


def test_the_refit_jobs_training_window_is_read():
    """The daily refit records ``[first, last]`` with ``symbols``: select stopped on it (a str has no .get)."""
    from ensemble_trader.domain import fitted

    info = {"symbols": ["SPY", "QQQ"], "training_window": ["2016-01-04T00:00:00+00:00", "2019-01-02T00:00:00+00:00"]}
    (window,) = fitted.regime_windows(info, "r-refit")
    assert (window.data, window.first, window.last) == ("SPY, QQQ", "2016-01-04T00:00:00", "2019-01-02T00:00:00")
    assert len(overlaps(TEST_SETS, [window], report=True)) == 2


@pytest.mark.parametrize(("spec", "start"), [
    ("synth:realistic:11:5000", None), ("synth:realistic:11:5000:ABC", None), ("synth:realistic:11:3000", None),
    ("synth:easy:11:5000", None), ("synth:easy:1:300", None), ("synth:hard:12:100:XYZ", None),
    ("arch:sp500", "2015-01-01"), ("arch:nasdaq", "2015-01-01"), ("arch:nasdaq", "2005-01-01"),
    ("arch:sp500", "2013-06-01"),
])
def test_the_backtest_report_and_select_agree_on_the_committed_models(spec, start):
    """One rule: the backtest said "Out of sample" where select refused (the agents' training
    closes under another symbol, the same seed at another length or preset)."""
    from ensemble_trader.backtest.provenance import in_sample
    from ensemble_trader.domain.agents import AgentPool

    pool = AgentPool.load(COMMITTED / "agents")
    regime = RegimeModel.load(COMMITTED / "regime")
    windows = agent_windows(None)[0] + regime_windows(regime)
    refused = overlaps([EvalSet("x", spec, start)], windows, report=True)
    first = "2000-01-03" if start is None else start  # a synthetic series' dates are not used
    found = in_sample(spec, "ABC", first, "2018-12-31", agents_version=pool.version, agent_names=pool.names,
                      agents_training=pool.manifest.training, regime_version=regime.version, regime_info=regime.info)
    assert len(found) == len(refused)
    assert bool(found) is (spec.startswith("synth:") and ":11:" in spec or spec == "synth:hard:12:100:XYZ"
                           or start in ("2005-01-01", "2013-06-01"))


# -- the commands ----------------------------------------------------------------------------------


def test_select_refuses_a_regime_model_fitted_on_the_test_window(regime_fitted_to_2018, monkeypatch, capsys):
    monkeypatch.setattr(select, "evaluate_candidates", no_work)
    with pytest.raises(SystemExit) as exc:
        select.main(["--split", "test", "--regime-model", str(regime_fitted_to_2018)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    version = RegimeModel.load(regime_fitted_to_2018).version
    assert f"regime model {version} was fitted on arch:sp500 1999-01-04 → 2018-12-31" in err
    assert "'S&P 500 2015-18' (2015-01-01 → its last bar; overlap 2015-01-01 → 2018-12-31)" in err
    assert "'NASDAQ 2015-18'" in err and "--allow-overlap" in err


def test_select_refuses_an_agent_set_trained_into_the_test_window(tmp_path, monkeypatch, capsys):
    models = agent_set(tmp_path, {"arch:sp500": {"train": ["1999-03-31T00:00:00", "2016-12-30T00:00:00"]},
                                  "synth:realistic:302:5000": {"train": ["2000-01-03T00:00:00", "2010-01-01T00:00:00"]}})
    monkeypatch.setattr(select, "evaluate_candidates", no_work)
    with pytest.raises(SystemExit) as exc:
        select.main(["--split", "test", "--models", str(models)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "agent set agents-0123456789ab was fitted on arch:sp500 1999-03-31 → 2016-12-30 (train)" in err
    assert "seed 302" in err and "'synth realistic 302'" in err


def test_allow_overlap_evaluates_with_a_warning_and_names_the_regime_model(regime_fitted_to_2018, monkeypatch, capsys):
    monkeypatch.setattr(select, "evaluate_candidates", fake_reports)
    assert select.main(["--split", "test", "--regime-model", str(regime_fitted_to_2018), "--allow-overlap"]) == 0
    out, err = capsys.readouterr()
    version = RegimeModel.load(regime_fitted_to_2018).version
    assert err.count("warning: --allow-overlap:") == 2 and "in-sample" in err
    assert out.startswith(f"test split, agent set agents-fake, regime model {version}, configuration default")


@pytest.mark.parametrize("split", list(SPLITS))
def test_the_committed_models_are_allowed_on_every_split(split, monkeypatch, capsys):
    monkeypatch.setattr(select, "evaluate_candidates", fake_reports)
    assert select.main(["--split", split, "--candidates", "default", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err
    assert json.loads(out)["regime_version"] == RegimeModel.load(COMMITTED / "regime").version


def test_select_refuses_models_whose_manifests_record_no_windows(tmp_path, monkeypatch, capsys):
    """They passed silently: nothing recorded, nothing refused."""
    models = tmp_path / "agents"
    models.mkdir()
    (models / "manifest.json").write_text(json.dumps({"version": "agents-0123456789ab", "training": {}}))
    regime = tmp_path / "regime"
    shutil.copytree(COMMITTED / "regime", regime)
    manifest = json.loads((regime / "manifest.json").read_text())
    del manifest["training_window"]
    del manifest["training_data"]  # a manifest that records neither
    (regime / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(select, "evaluate_candidates", no_work)
    with pytest.raises(SystemExit) as exc:
        select.main(["--split", "confirm", "--models", str(models), "--regime-model", str(regime)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "agent set agents-0123456789ab records no train window of its training data" in err
    assert f"regime model {RegimeModel.load(regime).version} records no training window" in err
    monkeypatch.setattr(select, "evaluate_candidates", fake_reports)
    assert select.main(["--split", "confirm", "--models", str(models), "--regime-model", str(regime),
                        "--allow-overlap"]) == 0
    assert "warning: --allow-overlap: agent set agents-0123456789ab records no" in capsys.readouterr().err


def test_bounds_refuses_the_same_overlap(regime_fitted_to_2018, tmp_path, monkeypatch, capsys):
    """bounds runs the committed (ET_MODELS_DIR's) models: pointed at a folder with the 1999-2018 fit."""
    models = tmp_path / "models"
    (models / "agents").mkdir(parents=True)
    shutil.copy(COMMITTED / "agents" / "manifest.json", models / "agents" / "manifest.json")
    shutil.copytree(regime_fitted_to_2018, models / "regime")
    monkeypatch.setenv("ET_MODELS_DIR", str(models))
    monkeypatch.setattr(bounds, "run", no_work)
    with pytest.raises(SystemExit) as exc:
        bounds.main(["--split", "test"])
    assert exc.value.code == 2
    assert "'S&P 500 2015-18'" in capsys.readouterr().err
    monkeypatch.setattr(bounds, "run", lambda sets, step, progress: ({}, "agents-fake"))
    monkeypatch.setattr(bounds, "format_table", lambda results: "")
    assert bounds.main(["--split", "test", "--allow-overlap"]) == 0
    assert "warning: --allow-overlap" in capsys.readouterr().err


def test_test_sets_start_after_the_committed_agents_validation_window():
    """The boundary the rule was checked on: validation ends 2014-12-30, the test sets start 2015-01-01."""
    windows, _ = agent_windows(None)
    assert overlaps(TEST_SETS, windows, report=True) == []
    last = max(w.last for w in windows if w.data == "arch:sp500" and w.part == "validation")
    assert last < "2015-01-01"


# -- atomic figures ----------------------------------------------------------------------------------


def test_a_figure_cut_short_keeps_the_old_png(tmp_path, monkeypatch):
    from ensemble_trader.backtest import report

    png = base64.b64encode(b"\x89PNG new image " * 1000).decode()
    for name in ("plot_equity", "plot_regimes_and_weights", "plot_drawdowns_and_regret"):
        monkeypatch.setattr(report, name, lambda *args: png)
    old = {name: f"old {name}".encode() for name in ("equity", "weights", "drawdown")}
    for name, data in old.items():
        (tmp_path / f"meta_backtest_sp500_{name}.png").write_bytes(data)
    result = {"run": {"start_index": 5}, "target": {"best_agent": "balanced"}}
    with pytest.raises(OSError), file_size_limit(2048):
        select.write_figures(None, result, None, tmp_path)
    for name, data in old.items():
        assert (tmp_path / f"meta_backtest_sp500_{name}.png").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"meta_backtest_sp500_{n}.png" for n in old)
    paths = select.write_figures(None, result, None, tmp_path)  # without a limit: the whole new images
    assert all(p.read_bytes() == base64.b64decode(png) for p in paths)
