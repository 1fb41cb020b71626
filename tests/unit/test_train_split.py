"""Walk-forward windows of the agents' training job: ordered in time, and never the whole series by accident."""

from __future__ import annotations

from training.agents.train import TrainConfig, split_source

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
