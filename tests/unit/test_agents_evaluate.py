"""Specialty checks of the evaluation suite on hand-made reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.backtest.engine import CostModel, PreparedSeries, evaluate_agents, period_regimes
from ensemble_trader.backtest.metrics import METRIC_NAMES
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FEATURE_NAMES

import training.agents.evaluate as evaluate
from training.agents.evaluate import (
    FADE_RULES,
    ROBUSTNESS_FIRST_SEED,
    SYNTHETIC,
    Case,
    calendar_slices,
    format_reversion,
    main,
    sideways_reversion,
    slice_reports,
    specialty_checks,
    suite_cases,
    validation_score,
)


def m(**kw) -> dict[str, float]:
    out = dict.fromkeys(METRIC_NAMES, 0.0)
    out.update(kw)
    return out


def block(overall: dict, **regimes: dict) -> dict:
    return {"overall": overall, "by_regime": regimes}


def report(agents: dict, hold: dict) -> dict:
    return {"agents": agents, "baselines": {"buy_and_hold": hold, "cash": block(m())}}


HOLD = block(
    m(sharpe=0.5, total_return=0.2),
    BULL=m(total_return=0.3),
    BEAR=m(max_drawdown=0.3),
    SIDEWAYS=m(total_return=0.0),
    VOLATILE=m(max_drawdown=0.25),
)


def test_every_specialty_passes():
    agents = {
        "conservative": block(m(total_return=0.05), BEAR=m(max_drawdown=0.1), VOLATILE=m(max_drawdown=0.1)),
        "aggressive": block(m(), BULL=m(total_return=0.5)),
        "balanced": block(m(sharpe=0.8)),
        "contrarian": block(m(), SIDEWAYS=m(total_return=0.04)),
    }
    checks = specialty_checks(report(agents, HOLD))
    assert {k: v["passed"] for k, v in checks.items()} == dict.fromkeys(agents, True)


def test_doing_nothing_does_not_pass():
    flat = block(m(), BULL=m(), BEAR=m(), SIDEWAYS=m(), VOLATILE=m())
    agents = {n: flat for n in ("conservative", "aggressive", "balanced", "contrarian")}
    checks = specialty_checks(report(agents, HOLD))
    assert {k: v["passed"] for k, v in checks.items()} == dict.fromkeys(agents, False)


def test_losing_less_than_a_falling_market_is_not_a_pass():
    """Cash is a baseline too: where buy-and-hold lost, an agent must also beat staying flat."""
    losing = block(m(sharpe=-0.6, total_return=-0.2), BULL=m(total_return=-0.02))
    flat = block(m(), BULL=m())
    checks = specialty_checks(report({"aggressive": flat, "balanced": flat}, losing))
    assert {k: v["passed"] for k, v in checks.items()} == {"aggressive": False, "balanced": False}
    assert checks["aggressive"]["shortfall"] == 0.0 and checks["balanced"]["shortfall"] == 0.0
    better = block(m(sharpe=0.1), BULL=m(total_return=0.01))
    checks = specialty_checks(report({"aggressive": better, "balanced": better}, losing))
    assert {k: v["passed"] for k, v in checks.items()} == {"aggressive": True, "balanced": True}


def test_shortfall_says_how_far_a_missed_check_is_from_passing():
    agents = {
        # drawdown 5 points worse than buy-and-hold in BEAR, and a 2 % loss overall
        "conservative": block(m(total_return=-0.02), BEAR=m(max_drawdown=0.35), VOLATILE=m(max_drawdown=0.1)),
        "aggressive": block(m(), BULL=m(total_return=0.1)),  # 20 points short of 30 %
        "balanced": block(m(sharpe=0.8)),  # passes: no shortfall
        "contrarian": block(m(), SIDEWAYS=m(total_return=-0.03)),
    }
    checks = specialty_checks(report(agents, HOLD))
    assert {k: v["passed"] for k, v in checks.items()} == {
        "conservative": False, "aggressive": False, "balanced": True, "contrarian": False}
    assert checks["conservative"]["shortfall"] == pytest.approx(5.0 + 2.0)
    assert checks["aggressive"]["shortfall"] == pytest.approx(20.0)
    assert checks["balanced"]["shortfall"] == 0.0
    assert checks["contrarian"]["shortfall"] == pytest.approx(3.0)


def test_bands_are_chosen_on_validation_only(capsys):
    with pytest.raises(SystemExit):
        main(["--bands", "0,0.1"])  # the default split is test
    assert "only with --split validation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--split", "validation", "--bands", "0,3"])
    assert "[0, 2]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--split", "validation", "--bands", "a,b"])
    assert "comma-separated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--robustness", "0"])
    assert "number of paths in [1, 1000]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--score", "30"])  # the default split is test
    assert "only with --split validation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--split", "validation", "--score", "0"])
    assert "number of paths in [1, 1000]" in capsys.readouterr().err


def test_missing_regime_is_not_judged():
    agents = {"aggressive": block(m()), "conservative": block(m(total_return=0.1), BEAR=m(max_drawdown=0.1))}
    checks = specialty_checks(report(agents, block(m(), BEAR=m(max_drawdown=0.3))))
    assert checks["aggressive"]["passed"] is None
    assert checks["conservative"]["passed"] is None
    assert "n/a" in checks["conservative"]["detail"]


WINDOWS = {
    "arch:sp500": {"train": ["1999-01-04T00:00:00", "2012-12-31T00:00:00"],
                   "validation": ["2013-01-02T00:00:00", "2014-12-30T00:00:00"],
                   "test": ["2014-12-31T00:00:00", "2018-12-31T00:00:00"]},
    "arch:nasdaq": {"train": ["1999-01-04T00:00:00", "2018-12-31T00:00:00"]},  # trained on whole
    "synth:realistic:11:5000": {"validation": ["2013-01-01T00:00:00", "2014-01-01T00:00:00"]},
}


def test_test_split_uses_unseen_seeds_and_test_windows_only():
    cases = suite_cases("test", WINDOWS)
    specs = [c.spec for c in cases]
    assert specs == [s for s, _ in SYNTHETIC["test"]] + ["arch:sp500", "shared:btcusd_1h"]
    sp500 = cases[2]
    assert sp500.start == "2014-12-31T00:00:00" and sp500.end is None
    # never read: from the second after the last bar any real series was trained on (NASDAQ, whole)
    assert cases[3] == Case("shared:btcusd_1h", "BTC-USD hourly test window, detected regimes", "2018-12-31T00:00:01")


SP500_ONLY = {"arch:sp500": WINDOWS["arch:sp500"], "synth:mean_reverting:3:4000": WINDOWS["synth:realistic:11:5000"]}
CUTS = {"validation": "2013-01-02T00:00:00", "test": "2014-12-31T00:00:00"}


def test_a_real_series_the_job_never_read_is_tested_from_the_test_cut_only():
    """Trained on the S&P 500 alone (`--bars arch:sp500 synth:mean_reverting:3:4000`), the NASDAQ
    and BTC-USD are tested from the recorded calendar test cut on: their earlier bars lie in the
    period the agents trained on (the NASDAQ was scored 1999-2018 as "test", 13 years of it
    inside the S&P 500's training window)."""
    cases = {c.spec: c for c in suite_cases("test", SP500_ONLY, ["arch:sp500", "synth:mean_reverting:3:4000"], CUTS)}
    assert cases["arch:nasdaq"] == Case("arch:nasdaq", "NASDAQ test window, detected regimes", "2014-12-31T00:00:00")
    assert cases["shared:btcusd_1h"].start == "2014-12-31T00:00:00"
    assert cases["arch:sp500"].start == "2014-12-31T00:00:00"
    # a manifest written before the cuts were recorded: the earliest recorded real test window's start
    assert {c.spec: c.start for c in suite_cases("test", SP500_ONLY)}["arch:nasdaq"] == "2014-12-31T00:00:00"
    # a set trained on synthetic data only read no real bar: every real series is out of sample, whole
    synthetic = {"synth:realistic:11:5000": WINDOWS["synth:realistic:11:5000"]}
    assert all(c.start is None for c in suite_cases("test", synthetic))
    # a job with a validation channel records no test window: after the last real bar it read
    channel = {"arch:sp500": {"train": ["1999-03-31T00:00:00", "2012-12-31T00:00:00"]},
               "arch:nasdaq": {"validation": ["2013-01-02T00:00:00", "2014-12-30T00:00:00"]}}
    assert {c.spec: c.start for c in suite_cases("test", channel)}["shared:btcusd_1h"] == "2014-12-30T00:00:01"
    # the validation split is unchanged: a series the job never saw has no validation window
    assert [c.spec for c in suite_cases("validation", SP500_ONLY, calendar_cuts=CUTS)][2:] == ["arch:sp500"]


def test_the_suite_and_by_period_read_the_manifests_calendar_cuts():
    from types import SimpleNamespace

    from training.agents.evaluate import model_set_cases

    training = {"data": ["arch:sp500", "synth:mean_reverting:3:4000"], "windows": SP500_ONLY,
                "calendar_cuts": {**CUTS, "test": "2015-06-01T00:00:00"}}
    pool = SimpleNamespace(manifest=SimpleNamespace(training=training))
    starts = {c.spec: c.start for c in model_set_cases(pool, "test")}
    assert starts["arch:nasdaq"] == starts["shared:btcusd_1h"] == "2015-06-01T00:00:00"


def test_a_set_trained_on_bars_files_is_not_tested_on_series_they_may_hold():
    """Trained from files (SageMaker channels, --bars PATH), the manifest records windows under
    the paths: a real series it has no window for may be in those files, so it is not run (its
    whole history is not called a test window); a set trained on named sources only still tests
    an unseen series whole."""
    windows = {"/data/train/spx.csv": {"train": ["1999-01-04T00:00:00", "2012-12-31T00:00:00"]}}
    cases = suite_cases("test", windows, trained_on=["/data/train/spx.csv", "synth:realistic:11:5000"])
    real = [c for c in cases if not c.spec.startswith("synth:")]
    assert [c.spec for c in real] == [s for s, _ in evaluate.REAL]
    assert all(c.skip is not None and "/data/train/spx.csv" in c.skip and c.start is None for c in real)
    named = suite_cases("test", WINDOWS, trained_on=["arch:sp500", "arch:nasdaq", "synth:realistic:11:5000"])
    assert all(c.skip is None for c in named)


def test_validation_split_never_touches_test_data():
    cases = suite_cases("validation", WINDOWS)
    specs = [c.spec for c in cases]
    # reserved synthetic seeds, and the real series with a recorded validation window only
    assert specs == [s for s, _ in SYNTHETIC["validation"]] + ["arch:sp500"]
    assert not {s for s, _ in SYNTHETIC["validation"]} & {s for s, _ in SYNTHETIC["test"]}
    sp500 = cases[2]
    assert sp500.start == "2013-01-02T00:00:00"
    # the window's recorded last bar closes [start, end): no test bar is inside, and the bars kept
    # are the ones the prepared series holds (an end finer than a microsecond was truncated)
    assert sp500.end == np.datetime64("2014-12-30T00:00:00", "us")
    assert sp500.end < np.datetime64("2014-12-31T00:00:00", "us")


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        suite_cases("train", WINDOWS)


def test_extra_path_seeds_of_the_splits_do_not_overlap():
    first = ROBUSTNESS_FIRST_SEED
    assert set(first) == {"test", "validation"}
    ranges = [range(v, v + evaluate.MAX_ROBUSTNESS_PATHS) for v in first.values()]
    assert not set(ranges[0]) & set(ranges[1])
    single = {int(spec.split(":")[2]) for pairs in SYNTHETIC.values() for spec, _ in pairs}
    assert not single & (set(ranges[0]) | set(ranges[1]))


def test_validation_score_adds_real_passes_and_synthetic_pass_rates(monkeypatch):
    """Real windows count 1 per pass, each preset the share of its paths that pass; shortfalls
    add over the missed windows and average over the paths. A window whose bars are missing is
    skipped; only validation seeds are read."""

    class Pool:
        names = ("aggressive", "contrarian")
        version = "agents-test"

        class manifest:  # noqa: N801
            training = {"windows": WINDOWS | {"shared:btcusd_1h": {"validation": ["2019-02-08", "2019-05-02"]}}}

    read: list[str] = []

    def case_data(case):
        read.append(case.spec)
        if case.spec.startswith("shared:"):
            raise DataError("no shared data here")
        return case.spec, "true"

    def check(ok, gap):
        return {"passed": ok, "shortfall": None if ok is None else gap, "detail": ""}

    def score(pool, spec, costs):
        if spec == "arch:sp500":  # the aggressive passes, the contrarian misses by 4
            return None, None, {"aggressive": check(True, 0.0), "contrarian": check(False, 4.0)}
        seed = int(spec.split(":")[2])
        odd = seed % 2 == 1  # seeds 4001, 4003: the aggressive passes; 4002, 4004: misses by 10
        return None, None, {"aggressive": check(True, 0.0) if odd else check(False, 10.0),
                            "contrarian": check(None, 0.0) if seed == 4001 else check(True, 0.0)}

    monkeypatch.setattr(evaluate.AgentPool, "load", staticmethod(lambda models_dir: Pool()))
    monkeypatch.setattr(evaluate, "case_data", case_data)
    monkeypatch.setattr(evaluate, "score", score)
    out = validation_score(None, 4, evaluate.CostModel(1.0, 2.0))
    scores = json.loads(out.split("scores: ")[1])
    # aggressive: 1 (S&P) + 2/4 + 2/4; shortfall 0 + mean(0, 10, 0, 10) twice
    assert scores["aggressive"] == {"score": 2.0, "shortfall": 10.0}
    # contrarian: S&P missed by 4; the seed without the regime is not judged: 3/3 per preset
    assert scores["contrarian"] == {"score": 2.0, "shortfall": 4.0}
    synthetic = [s for s in read if s.startswith("synth:")]
    assert {int(s.split(":")[2]) for s in synthetic} == {4001, 4002, 4003, 4004}
    assert "shared:btcusd_1h" in read and "| aggressive | pass | 2/4 | 2/4 | 2.00 | 10.00 |" in out
    with pytest.raises(ValueError, match="n_paths"):
        validation_score(None, 0, evaluate.CostModel(1.0, 2.0))


def test_validation_score_leaves_an_unjudged_real_window_out(monkeypatch):
    """A real window without the agent's regime is not judged: "n/a", no point, no shortfall."""

    class Pool:
        names = ("aggressive",)
        version = "agents-test"

        class manifest:  # noqa: N801
            training = {"windows": WINDOWS}

    def score(pool, spec, costs):
        passed = None if spec == "arch:sp500" else True
        return None, None, {"aggressive": {"passed": passed, "shortfall": None if passed is None else 0.0}}

    monkeypatch.setattr(evaluate.AgentPool, "load", staticmethod(lambda models_dir: Pool()))
    monkeypatch.setattr(evaluate, "case_data", lambda case: (case.spec, "true"))
    monkeypatch.setattr(evaluate, "score", score)
    out = validation_score(None, 2, evaluate.CostModel(1.0, 2.0))
    assert "| aggressive | n/a | 2/2 | 2/2 | 2.00 | 0.00 |" in out


def _series(phi: float, labels: list[str] | None, n: int = 4000, seed: int = 3) -> PreparedSeries:
    """An AR(1) return path (``phi`` < 0: mean reversion) as a prepared series whose features
    hold the last log return (ret_1) and a z-score column; other features 0."""
    rng = np.random.default_rng(seed)
    r = np.empty(n - 1)
    r[0] = rng.normal(0, 0.01)
    for t in range(1, n - 1):
        r[t] = phi * r[t - 1] + rng.normal(0, 0.01)
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    features = np.zeros((n, len(FEATURE_NAMES)))
    features[1:, FEATURE_NAMES.index("ret_1")] = r
    features[:, FEATURE_NAMES.index("zscore_20")] = rng.normal(0, 1.5, n)
    ts = np.datetime64("2020-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    regimes = None if labels is None else np.resize(np.array(labels), n)
    return PreparedSeries("TEST", ts, close, features, regimes)


def test_reversion_report_tells_mean_reversion_from_momentum():
    costs = CostModel(0.0, 0.0)
    flat = np.zeros(4000)
    reverting = sideways_reversion(_series(-0.4, ["SIDEWAYS"]), flat, costs)
    trending = sideways_reversion(_series(+0.4, ["SIDEWAYS"]), flat, costs)
    assert reverting["periods"] == 3999 and reverting["share"] == 1.0
    assert reverting["corr"] == pytest.approx(-0.4, abs=0.05) and trending["corr"] == pytest.approx(0.4, abs=0.05)
    assert reverting["corr_se"] == pytest.approx(1 / np.sqrt(3999))
    assert reverting["total_return"]["fade_last"] > 1.0 and trending["total_return"]["fade_last"] < -0.9
    assert reverting["total_return"]["contrarian"] == 0.0


def test_reversion_report_counts_only_sideways_periods_and_charges_costs():
    data = _series(-0.3, ["BULL", "SIDEWAYS", "SIDEWAYS", "BEAR"])
    contrarian = np.sign(np.sin(np.arange(4000) / 7.0))
    costs = CostModel(1.0, 2.0)
    row = sideways_reversion(data, contrarian, costs)
    report = evaluate_agents(data, {"contrarian": contrarian}, costs)
    # the same periods and the same net returns as the backtest's per-regime figures
    assert row["periods"] == int(np.sum(period_regimes(data.regimes) == "SIDEWAYS"))
    assert row["total_return"]["buy_and_hold"] == pytest.approx(
        report["baselines"]["buy_and_hold"]["by_regime"]["SIDEWAYS"]["total_return"], rel=1e-12)
    assert row["total_return"]["contrarian"] == pytest.approx(
        report["agents"]["contrarian"]["by_regime"]["SIDEWAYS"]["total_return"], rel=1e-12)
    free = sideways_reversion(data, contrarian, CostModel(0.0, 0.0))
    for rule in FADE_RULES:
        assert row["total_return"][rule] < free["total_return"][rule]


def test_reversion_report_needs_sideways_periods():
    assert sideways_reversion(_series(0.0, None), np.zeros(4000), CostModel()) is None
    assert sideways_reversion(_series(0.0, ["BULL", "BEAR"]), np.zeros(4000), CostModel()) is None
    table = format_reversion([("none here", None),
                              ("some", sideways_reversion(_series(-0.4, ["SIDEWAYS"]), np.zeros(4000), CostModel()))])
    lines = table.splitlines()
    assert len(lines) == 4 and "| none here | none |" in lines[2] and lines[3].startswith("| some | 3999 (100%) | -0.")
    flat = sideways_reversion(_series(0.0, ["SIDEWAYS"]), np.zeros(4000), CostModel())
    flat["corr"] = float("nan")  # a constant return stream has no correlation
    assert "| n/a ± " in format_reversion([("flat", flat)]).splitlines()[2]


def test_calendar_slices_cut_at_each_new_year_or_month():
    ts = np.array(["2015-12-30", "2015-12-31", "2016-01-04", "2016-02-01"], dtype="datetime64[ns]")
    assert calendar_slices(ts, "Y") == [("2015", 0, 2), ("2016", 2, 4)]
    assert calendar_slices(ts, "M") == [("2015-12", 0, 2), ("2016-01", 2, 3), ("2016-02", 3, 4)]
    assert calendar_slices(ts[:0], "Y") == []


def test_slices_of_one_run_compound_to_the_whole_window():
    """Each slice enters with the position held (buy-and-hold invested), so the slices' returns
    compound to the whole window's: no trade is charged twice or forgotten at a boundary."""
    data = _series(-0.2, ["BULL", "SIDEWAYS", "BEAR", "VOLATILE"], n=1200)
    rng = np.random.default_rng(5)
    paths = np.column_stack([np.round(rng.uniform(-1, 1, 1200), 1) for _ in range(4)])
    names = ("conservative", "aggressive", "balanced", "contrarian")
    costs = CostModel()
    whole = evaluate_agents(data, {n: paths[:, i] for i, n in enumerate(names)}, costs)
    slices = slice_reports(data, paths, names, costs)
    assert [label for label, _, _ in slices] == ["2020", "2021", "2022", "2023"]  # 2023: 104 bars
    assert sum(periods for _, periods, _ in slices) == 1199
    parts = [report for _, _, report in slices]
    for name in names:
        compounded = np.prod([1 + p["agents"][name]["overall"]["total_return"] for p in parts]) - 1
        assert compounded == pytest.approx(whole["agents"][name]["overall"]["total_return"], rel=1e-12)
    held = np.prod([1 + p["baselines"]["buy_and_hold"]["overall"]["total_return"] for p in parts]) - 1
    assert held == pytest.approx(whole["baselines"]["buy_and_hold"]["overall"]["total_return"], rel=1e-12)
    assert all(set(specialty_checks(report)) == set(names) for report in parts)


def test_by_period_is_a_report_of_its_own(capsys):
    with pytest.raises(SystemExit):
        main(["--by-period", "--robustness", "3"])
    assert "--by-period is a report of its own" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--split", "validation", "--score", "1", "--by-period"],
    ["--split", "validation", "--bands", "0.1", "--by-period"],
    ["--robustness", "1", "--img-dir", "imgs"],
    ["--by-period", "--img-dir", "imgs"],
])
def test_options_that_would_be_ignored_are_refused(argv, capsys):
    from training.agents.evaluate import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "not with" in capsys.readouterr().err
