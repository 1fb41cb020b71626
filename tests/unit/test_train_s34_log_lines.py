"""A training job without a terminal (SageMaker's, whose stderr goes to CloudWatch) writes its
progress as lines: each seed's first and last checkpoints, and at most one line per
LOG_EVERY_SECONDS between. Before, the bars were off without a terminal and the job's log showed
nothing but warnings for its whole training."""

from __future__ import annotations

import pytest
from test_train_s34_failure import container  # noqa: F401 (the fixture: the job in a container's layout)

import training.agents.train as train


@pytest.mark.usefixtures("container")
def test_a_job_without_a_terminal_logs_each_seeds_progress(monkeypatch, capsys):
    monkeypatch.setattr(train, "LOG_EVERY_SECONDS", 1e9)  # only the first and last lines
    assert train.sagemaker_main([]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train balanced seed ")]
    seeds = list(train.TrainConfig(quick=True).agent_seeds("balanced"))  # the Balanced bags five
    assert len(lines) == 2 * len(seeds) == 10, lines
    for k, seed in enumerate(seeds):
        first, last = lines[2 * k: 2 * k + 2]
        assert first.startswith(f"train balanced seed {seed}: 0 of 2,048 steps, best validation score ")
        assert last.startswith(f"train balanced seed {seed}: ") and last.endswith(" s")
        assert int(last.split(": ")[1].split(" of ")[0].replace(",", "")) >= 2048


@pytest.mark.usefixtures("container")
def test_between_them_a_line_at_most_every_log_every_seconds(monkeypatch, capsys):
    monkeypatch.setattr(train, "LOG_EVERY_SECONDS", 0.0)  # every checkpoint
    assert train.sagemaker_main([]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train balanced seed ")]
    assert len(lines) == 3 * 5  # each seed's checkpoints at 0, 1,024 and 2,048 steps (--quick: every 1,024)

