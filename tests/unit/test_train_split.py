"""Walk-forward windows of the agents' training job: ordered in time, and never the whole series by accident."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ensemble_trader.domain.features import WARMUP_BARS
from pydantic import ValidationError

from training.agents.train import Source, TrainConfig, agent_training_data, calendar_cuts, split_source

SPEC = "synth:realistic:3:800:SPLT"


def test_default_windows_are_ordered_and_disjoint():
    src = split_source(SPEC, TrainConfig())
    assert set(src.windows) == {"train", "validation", "test"}
    assert src.windows["train"][1] < src.windows["validation"][0]
    assert src.windows["validation"][1] < src.windows["test"][0]


def test_fractions_summing_to_one_leave_no_test_window():
    src = split_source(SPEC, TrainConfig(train_fraction=0.9, validation_fraction=0.1))
    assert src.test is None and "test" not in src.windows
    assert src.windows["train"][1] < src.windows["validation"][0]


def test_all_training_leaves_no_validation_or_test_window():
    src = split_source(SPEC, TrainConfig(train_fraction=1.0, validation_fraction=0.0))
    assert src.validation is None and src.test is None
    assert set(src.windows) == {"train"}


def test_real_series_are_cut_at_the_same_calendar_dates(tmp_path):
    """A later-starting real series is cut at the dates of the one that starts first: none of
    its bars can be trained on after another series' test window has begun."""
    from ensemble_trader.domain.synthetic import generate
    from ensemble_trader.marketdata import write_bars_csv

    early, late = tmp_path / "early.csv", tmp_path / "late.csv"
    first_series = generate("realistic", 1000, seed=1, symbol="EARLY").series
    write_bars_csv(early, first_series)
    later = generate("realistic", 600, seed=2, symbol="LATE").series
    shift = first_series.timestamp[400] - later.timestamp[0]  # begins inside the early one's training window
    write_bars_csv(late, dataclasses.replace(later, timestamp=later.timestamp + shift))
    config = TrainConfig()
    cuts = calendar_cuts(_series(early, late, SPEC), config)
    first = split_source(str(early), config, cuts=cuts)
    second = split_source(str(late), config, cuts=cuts)
    assert first.windows == split_source(str(early), config).windows  # the first keeps its fractions
    assert second.train is not None and second.windows["train"][1] < first.windows["validation"][0]
    assert second.windows["test"][0] >= first.windows["test"][0]
    test_start = np.datetime64(first.windows["test"][0])
    assert np.all(second.train.timestamp < test_start) and np.all(second.validation.timestamp < test_start)
    # a real series that begins after the test cut is test data only
    after = tmp_path / "after.csv"
    write_bars_csv(after, dataclasses.replace(later, timestamp=later.timestamp + 2 * shift))
    only = split_source(str(after), config, cuts=calendar_cuts(_series(early, after), config))
    assert only.train is None and only.validation is None and set(only.windows) == {"test"}
    assert calendar_cuts(_series(SPEC), config) is None  # synthetic series keep their own fractions
    # one that begins fewer bars before a cut than the features need to warm up has no window there
    warm_only = tmp_path / "warm_only.csv"
    validation_cut = np.datetime64(first.windows["validation"][0])
    # (it begins WARMUP_BARS - 30 bars before the cut: its first warm bar is the cut's 30th, read
    # from the features' own warm-up length, which changes with the features)
    begin = int(np.searchsorted(first_series.timestamp, validation_cut)) - (WARMUP_BARS - 30)
    write_bars_csv(warm_only, dataclasses.replace(later, timestamp=later.timestamp + (first_series.timestamp[begin]
                                                                                        - later.timestamp[0])))
    short = split_source(str(warm_only), config, cuts=calendar_cuts(_series(early, warm_only), config))
    assert short.train is None and "train" not in short.windows
    assert short.validation is not None and np.all(short.validation.timestamp >= validation_cut)


def _series(*specs) -> dict:
    from ensemble_trader.backtest.engine import load_series

    return {str(spec): load_series(str(spec))[0] for spec in specs}


def _sources(*specs: str) -> list[Source]:
    return [Source(spec, series=None, regimes=None) for spec in specs]


def test_data_per_agent_default_rule_and_override():
    sources = _sources("arch:sp500", "synth:realistic:11:5000", "synth:mean_reverting:12:5000", "shared:btcusd_1h")
    specs = lambda agent, config=None: [s.spec for s in agent_training_data(agent, sources, config)]  # noqa: E731
    assert specs("contrarian") == ["synth:mean_reverting:12:5000"]
    assert specs("balanced") == ["arch:sp500", "synth:realistic:11:5000", "shared:btcusd_1h"]
    mixed = TrainConfig(agent_data={"contrarian": ["mean_reverting", "arch:", "shared:"]})
    assert specs("contrarian", mixed) == ["arch:sp500", "synth:mean_reverting:12:5000", "shared:btcusd_1h"]
    assert specs("balanced", mixed) == specs("balanced")  # agents not named keep the default rule
    assert specs("contrarian", TrainConfig(agent_data={"contrarian": ["nothing"]})) == [s.spec for s in sources]
    with pytest.raises(ValidationError, match="unknown agents"):
        TrainConfig(agent_data={"trend": ["arch:"]})


def test_a_validation_channel_selects_each_agent_on_its_own_kind_of_data(monkeypatch, tmp_path):
    """With separate validation bars (SageMaker's validation channel) each agent is selected on
    the validation files of the kind it trains on, as it is without a channel."""
    import training.agents.train as train

    seen: dict[str, tuple[list[str], list[str]]] = {}

    class Recorded(Exception):
        pass

    def recorder(agent, train_data, validation, config, seed, progress=True, log_lines=False):
        seen[agent] = ([s.symbol for s in train_data], [s.symbol for s in validation])
        raise Recorded

    monkeypatch.setattr(train, "train_agent", recorder)
    for agent in ("contrarian", "balanced"):
        config = TrainConfig(
            bars=["synth:mean_reverting:1:400:TMR", "synth:realistic:2:400:TRL"],
            validation_bars=["synth:mean_reverting:3:400:VMR", "synth:realistic:4:400:VRL"],
            agents=[agent],
        )
        with pytest.raises(Recorded):
            train.run_job(config, tmp_path / agent, progress=False)
    assert seen["contrarian"] == (["TMR"], ["VMR"])
    assert seen["balanced"] == (["TRL"], ["VRL"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"agent_overrides": {"contrarian": {"gamma": 5}}}, r"agent_overrides\[contrarian\]: gamma: "),
        ({"rewards": {"timid": {"lam": 1.0}}}, r"rewards: unknown agents \['timid'\]"),
        ({"rewards": {"conservative": {"nonsense": 1.0}}}, r"rewards\[conservative\]: bad parameters"),
    ],
)
def test_every_agents_settings_are_checked_before_any_trains(settings, message):
    """A bad value for the last agent once failed the job after the other agents had trained."""
    with pytest.raises(ValidationError, match=message):
        TrainConfig(**settings)


def test_the_manifest_records_the_calendar_cuts_exactly():
    """``training.calendar_cuts`` (where the evaluation starts a real series the job never read):
    the S&P 500's dates, and a cut after the last bar (1 ns after it) rounded up to the
    microsecond, never down onto the last bar."""
    from training.agents.train import recorded_cuts

    cuts = calendar_cuts(_series("arch:sp500", SPEC), TrainConfig())
    assert recorded_cuts(cuts) == {"validation": "2013-01-02T00:00:00", "test": "2014-12-31T00:00:00"}
    last = np.datetime64("2018-12-31T00:00:00", "ns")
    assert recorded_cuts((last, last + np.timedelta64(1, "ns")))["test"] == "2018-12-31T00:00:00.000001"
    assert recorded_cuts(None) is None



def test_a_whole_series_records_the_rows_the_agents_see():
    """A series used whole (a validation channel's files, or the train channel's beside one)
    records the first and last bar of its prepared rows, not the features' warm-up bars before
    them, as the cut windows do."""
    whole = split_source(SPEC, TrainConfig(), whole=True)
    ts = whole.train.timestamp
    assert whole.windows == {"train": [str(np.datetime_as_string(np.datetime64(t, "s"))) for t in (ts[0], ts[-1])]}
    assert np.datetime64(whole.windows["train"][0]) > whole.series.timestamp[0]  # the warm-up is not in it
