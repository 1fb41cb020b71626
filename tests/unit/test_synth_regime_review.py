"""Review fixes of the synthetic generator and the regime tools: time limits through the CLI,
evaluation input checks, historical episode windows, training-job inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from ensemble_trader.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["regime", "fit", "--bars", "synth:easy:0:100000", "--out", "MODEL"],
        ["regime", "evaluate", "--scenarios", "easy", "--methods", "true_params", "--train-bars", "100000"],
    ],
)
def test_a_synth_source_past_the_time_limit_says_how_many_bars_fit(argv, tmp_path, capsys):
    """These commands cannot set a freq: the message must not tell them to choose one."""
    argv = [str(tmp_path / a) if a == "MODEL" else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "would end after 2262-04-11" in err and "at most 95,792 bars of 1D fit" in err
    assert "shorter freq" not in err


# --------------------------------------------------------------------------------------------
# regime evaluate: the training run's size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hmmlearn", "jumpmodels", "true_params", "ours"])
@pytest.mark.parametrize("train_bars", [1, 70, 291])
def test_evaluate_refuses_a_training_run_too_small_for_any_method(method, train_bars):
    """hmmlearn and jumpmodels gave a silent 0.000 row on 70 bars and an sklearn ValueError on 1;
    true_params failed 'means: contains non-finite values'. Every method now needs what our fit
    needs: WARMUP_BARS - 1 = 172 warm-up bars + 20 usable rows per state of K = 6."""
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.features import WARMUP_BARS

    from training.regime.evaluate import EvalConfig, evaluate, min_train_bars

    assert min_train_bars() == WARMUP_BARS - 1 + 20 * 6 == 292
    cfg = EvalConfig(scenarios=("easy",), seeds=(0,), n_bars=WARMUP_BARS + 39, train_bars=train_bars,
                     methods=(method,), n_restarts=1)
    with pytest.raises(DataError, match=rf"train_bars={train_bars}: .*at least 292 bars"):
        evaluate(cfg)


def test_evaluate_cli_refuses_train_bars_below_the_minimum_as_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["regime", "evaluate", "--scenarios", "easy", "--seeds", "0", "--methods", "jumpmodels",
              "--bars", "100", "--train-bars", "1"])  # fmt: skip
    assert info.value.code == 2
    assert "--train-bars" in capsys.readouterr().err


def test_true_parameter_model_names_a_regime_missing_from_the_training_run():
    """easy, 500 bars of seed 10,000 (the evaluation's training seed) hold no SIDEWAYS bar past the warm-up."""
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.features import WARMUP_BARS
    from ensemble_trader.domain.synthetic import generate

    from training.regime.evaluate import true_parameter_model

    train = generate("easy", 500, 10_000)
    assert "SIDEWAYS" not in set(train.regimes[WARMUP_BARS - 1 :].tolist())
    with pytest.raises(DataError, match=r"SIDEWAYS has 0(, VOLATILE has 0)? training rows.*at least 2"):
        true_parameter_model(train)


# --------------------------------------------------------------------------------------------
# regime evaluate: a test seed is never the training seed
# --------------------------------------------------------------------------------------------


def test_evaluate_refuses_the_training_seed_as_a_test_seed():
    """The generator's regime path depends on the seed only (a shorter run is a prefix of a
    longer one): test seed 10,000 would be scored on the training run's own regime path."""
    import numpy as np
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.synthetic import generate

    from training.regime.evaluate import TRAIN_SEED_OFFSET, EvalConfig, evaluate

    assert np.array_equal(generate("easy", 300, 10_000).regimes, generate("easy", 6000, 10_000).regimes[:300])
    for random_state in (0, 4):
        train_seed = TRAIN_SEED_OFFSET + random_state
        cfg = EvalConfig(scenarios=("easy",), seeds=(0, train_seed), n_bars=300, methods=("true_params",),
                         random_state=random_state)  # fmt: skip
        with pytest.raises(DataError, match=rf"test seed {train_seed} is the training run's seed"):
            evaluate(cfg)


def test_evaluate_cli_refuses_the_training_seed_as_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["regime", "evaluate", "--scenarios", "easy", "--seeds", "1", "10000", "--methods", "true_params",
              "--bars", "100"])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "10000" in err and "training" in err


# --------------------------------------------------------------------------------------------
# historical validation: an episode's date-only end includes that whole day
# --------------------------------------------------------------------------------------------


def _constant_labels(n: int, regime: int):
    import numpy as np
    from ensemble_trader.domain.regime import Labels

    probs = np.eye(4)[np.full(n, regime)]
    return Labels(probs, probs, np.full(n, regime), np.ones(n), np.ones(n, dtype=bool))


def test_an_episode_ending_on_a_date_includes_that_days_intraday_bars():
    """ts <= 2018-01-02 stopped at 00:00: two whole days of hourly bars gave 25 bars, not 48."""
    from ensemble_trader.domain.synthetic import generate

    from training.regime.historical import STRESS, Episode, episode_table

    hourly = generate("easy", 96, 1, start="2017-12-31", freq="1h").series  # 2017-12-31 … 2018-01-03 23:00
    labels = _constant_labels(len(hourly), 3)
    [row] = episode_table(hourly, labels, (Episode("two days", "2018-01-01", "2018-01-02", STRESS),))
    assert row["bars"] == 48
    [row] = episode_table(hourly, labels, (Episode("to a time", "2018-01-01", "2018-01-02T05:00", STRESS),))
    assert row["bars"] == 24 + 6  # an end with a time of day is the last bar time included


def test_daily_bars_are_counted_as_before():
    from ensemble_trader.domain.synthetic import generate

    from training.regime.historical import STRESS, Episode, episode_table

    daily = generate("easy", 20, 1, start="2018-01-01", freq="1B").series
    [row] = episode_table(daily, _constant_labels(len(daily), 3), (Episode("week", "2018-01-01", "2018-01-05", STRESS),))
    assert row["bars"] == 5


# --------------------------------------------------------------------------------------------
# docs/regime.md's historical tables come out of the code
# --------------------------------------------------------------------------------------------

REGIME_DOC = Path(__file__).resolve().parents[2] / "docs" / "regime.md"


def _table_rows(markdown_table: str) -> list[str]:
    return markdown_table.splitlines()[2:]  # past the header and the rule


def test_the_sp500_history_table_in_the_docs_is_what_the_code_gives():
    from ensemble_trader.cli.regime import default_model_dir
    from ensemble_trader.domain.regime import RegimeDetector, RegimeModel, label_series
    from ensemble_trader.marketdata import load_arch

    from training.regime.historical import SP500_EPISODES, episode_table, markdown

    spx = load_arch("sp500")
    rows = episode_table(spx, label_series(RegimeDetector(RegimeModel.load(default_model_dir())), spx), SP500_EPISODES)
    doc = REGIME_DOC.read_text(encoding="utf-8")
    for line in _table_rows(markdown(rows, "trading days")):
        assert line in doc
