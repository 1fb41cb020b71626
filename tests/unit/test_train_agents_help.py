"""``train agents --help`` names the data sets the job trains on by default.

The help listed four default data sets, written out by hand, while ``default_bars()`` adds the
shared BTC-USD hourly bars wherever the shared data folder holds them (the development machine
trained on five). The help is now built from ``DEFAULT_BARS`` and ``QUICK_BARS`` and names the
BTC addition, and whether this machine has it.
"""

from __future__ import annotations

import pytest
from ensemble_trader.cli import main

from training.agents.train import DEFAULT_BARS, QUICK_BARS, SHARED_BTC


def _help(capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        main(["train", "agents", "--help"])
    assert caught.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps the description


@pytest.mark.parametrize("has_btc", [True, False])
def test_the_help_lists_the_default_data_and_the_btc_addition(monkeypatch, tmp_path, capsys, has_btc):
    if has_btc:
        (tmp_path / f"{SHARED_BTC}.csv").write_text("timestamp,open,high,low,close,volume\n")
    monkeypatch.setenv("ET_SHARED_DATA", str(tmp_path))
    text = _help(capsys)
    assert f"Default data: {', '.join(DEFAULT_BARS)}, plus shared:{SHARED_BTC} where the shared data folder" in text
    assert f"holds {SHARED_BTC}.csv ({'included' if has_btc else 'not found'} here)" in text
    assert f"--quick: {', '.join(QUICK_BARS)}." in text
