"""Review fixes of the synthetic generator and the regime tools: time limits through the CLI,
evaluation input checks, historical episode windows, training-job inputs."""

from __future__ import annotations

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
