"""The progress bar of one seed's training names the seed and shows the best validation score
readably, as it stands after the last checkpoint.

An agent trains ``n_seeds`` times (five for the Balanced) and every bar read ``train balanced``;
the score was printed with three decimals, so the Conservative's (a mean reward per step, 1e-4 in
a ``--quick`` run) read ``val=0.000@0`` whatever its checkpoints scored; and the checkpoint taken
after the last update never reached the bar. Each test fails on the code before.
"""

from __future__ import annotations

import re

import pytest
from ensemble_trader.backtest.engine import prepare
from ensemble_trader.domain.synthetic import generate

import training.agents.train as train
from training.agents.train import TrainConfig


@pytest.fixture(scope="module")
def tiny():
    return prepare(generate("realistic", 400, seed=3).series)


def _last_postfix(err: str, desc: str) -> tuple[float, int]:
    """The ``val=<score>@<step>`` of the last refresh of the bar named ``desc``."""
    lines = [part for part in re.split(r"[\r\n]", err) if part.startswith(f"{desc}:")]
    assert lines, err[-500:]
    match = re.search(r"val=(\S+?)@(\d+)\]", lines[-1])
    assert match, lines[-1]
    return float(match.group(1)), int(match.group(2))


def test_the_bar_names_the_seed_and_shows_four_significant_digits(tiny, capsys):
    config = TrainConfig(quick=True, total_timesteps=1024, eval_every=256, agent_overrides={})
    trained = train.train_agent("conservative", [tiny], [tiny], config, seed=107, progress=True)
    err = capsys.readouterr().err
    score, step = _last_postfix(err, "train conservative seed 107")
    best = max(trained.history, key=lambda row: row["score"])
    assert step == trained.validation["selected_at"] == best["timesteps"]
    assert score != 0.0
    assert score == pytest.approx(best["score"], rel=1e-3, abs=1e-6)


def test_the_checkpoint_after_the_last_update_reaches_the_bar(tiny, capsys, monkeypatch):
    """With checkpoints every 768 steps over 1,024 (two rollouts of 512), the only trained
    checkpoint is the one after the last update; the bar showed the untrained network's."""
    scores = iter([-1.0, -0.5, 0.25])  # step 0, step 768 (within the second rollout), step 1,024

    def scored(*args, **kwargs):
        value = next(scores)
        return {"score": value, "mean_reward": value}

    monkeypatch.setattr(train, "validate", scored)
    config = TrainConfig(quick=True, total_timesteps=1024, eval_every=768, agent_overrides={})
    trained = train.train_agent("balanced", [tiny], [tiny], config, seed=9, progress=True)
    assert [row["timesteps"] for row in trained.history] == [0, 768, 1024]
    assert _last_postfix(capsys.readouterr().err, "train balanced seed 9") == (0.25, 1024)
