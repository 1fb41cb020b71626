"""Review of the generator's intake: the bar count is capped before anything is allocated, and
``1B`` bars start at ``start`` on the start's own (local) business days."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain import synthetic
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import MAX_BARS, bar_times, generate


@pytest.fixture
def no_drawing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any random draw fails the test at once: a refused count must be refused before the
    generator allocates (on the old code it would have gone on to ~14 GB)."""

    def drawn(*args: object) -> None:
        raise AssertionError("the generator started drawing")

    monkeypatch.setattr(synthetic, "_simulate_chain", drawn)


def test_generate_refuses_more_than_max_bars_naming_the_limit_and_why(no_drawing: None) -> None:
    with pytest.raises(DataError) as info:
        generate("easy", MAX_BARS + 1, 0, freq="1s")
    text = str(info.value)
    assert text.startswith(f"n_bars={MAX_BARS + 1:,}: at most {MAX_BARS:,} bars in one run")
    assert "bytes a bar" in text and "distinct seeds" in text


def test_bar_times_refuses_more_than_max_bars() -> None:
    """One-second bars from 2000 fit 2262 until 8.3e9 of them: only the cap refuses them (2e9
    asked numpy for 16 GB of times; the test asks for one bar more than the cap)."""
    with pytest.raises(DataError, match=f"n={MAX_BARS + 1:,}: at most {MAX_BARS:,} bars"):
        bar_times("2000-01-03", "1s", MAX_BARS + 1)


def test_the_time_limit_is_still_named_first_when_the_bars_would_pass_2262() -> None:
    with pytest.raises(DataError, match="would end after 2262-04-11.*at most 95,792 bars of 1D"):
        generate("easy", 10**9, 0)


def test_max_bars_themselves_are_accepted_by_bar_times() -> None:
    stamps = bar_times("2000-01-03", "1s", MAX_BARS)
    assert len(stamps) == MAX_BARS and stamps[-1] == np.datetime64("2000-01-03", "ns") + np.timedelta64(MAX_BARS - 1, "s")


def test_data_synth_refuses_too_many_bars_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_drawing: None
) -> None:
    """``--bars 100000000 --freq 1min`` died in a MemoryError asking for ~14 GB; one bar over the
    cap is enough to show the refusal."""
    out = tmp_path / "big"
    assert main(["data", "synth", "--bars", str(MAX_BARS + 1), "--freq", "1min", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"n_bars={MAX_BARS + 1:,}: at most {MAX_BARS:,} bars in one run" in err
    assert not out.exists()


def test_the_help_of_data_synth_bars_names_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """The help text holds the number itself (the CLI does not import numpy to print it)."""
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    assert f"at most {MAX_BARS:,}" in " ".join(capsys.readouterr().out.split())
