"""`data synth --bars` and `--seed` are checked as arguments: a bad value is argparse's usage error
naming the option (exit 2). Before, `--bars -5` reached the generator and read
"error: n_bars=-5: must be an integer >= 1", naming a field the user never typed."""

from __future__ import annotations

import pytest
from ensemble_trader.cli import main


@pytest.mark.parametrize("option, value, words", [
    ("--bars", "-5", "argument --bars: '-5' must be an integer >= 1"),
    ("--bars", "0", "argument --bars: '0' must be an integer >= 1"),
    ("--bars", "ten", "argument --bars: 'ten' is not an integer"),
    ("--seed", "-1", "argument --seed: '-1' must be an integer >= 0"),
    ("--seed", str(2**32), f"argument --seed: '{2**32}' must be an integer below 2**32"),
])
def test_a_bad_count_or_seed_names_the_option(tmp_path, capsys, option, value, words):
    with pytest.raises(SystemExit) as caught:
        main(["data", "synth", option, value, "--out", str(tmp_path / "out")])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "n_bars" not in err
    assert not (tmp_path / "out").exists()


def test_the_help_gives_the_defaults_and_the_daily_limit(capsys):
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 5,000)" in text and "95,792 daily bars from 2000-01-03" in text
    assert "default realistic" in text and "(default SYN)" in text and "(default 1D)" in text
