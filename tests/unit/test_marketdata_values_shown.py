"""A bad row of a bars CSV is reported with the column's text as the file has it (review): the
messages showed the float read from it, so ``1e-400`` was reported as ``open=0.0`` and ``1e400``
as ``high=inf``, values the file does not hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.marketdata import iter_bars_csv, read_bars_csv

HEADER = "timestamp,open,high,low,close,volume\n"
FIRST = "2020-01-01T00:00:00Z,1,2,0.5,1.5,10\n"


@pytest.mark.parametrize(("row", "expected"), [
    ("1e-400,2,0.5,1.5,10", "column open='1e-400': must be a finite number > 0 (the number is beyond float64's "
                            "range and reads as 0.0)"),
    ("1,1e400,0.5,1.5,10", "column high='1e400': must be a finite number > 0 (the number is beyond float64's "
                           "range and reads as inf)"),
    ("1,2,0.5,1.5,-1e999", "column volume='-1e999': must be a finite number >= 0 (the number is beyond "
                           "float64's range and reads as -inf)"),
    ("1,2,0.5,0,10", "column close='0': must be a finite number > 0"),  # a zero is a zero: nothing to add
    ("1,2,0.5,1.5, -1 ", "column volume=' -1 ': must be a finite number >= 0"),
    ("1,2, 1.50,1.2,10", "column low=' 1.50': must be <= min(open, close) = 1.0"),
    ("1,1.10,0.5,1.2,10", "column high='1.10': must be >= max(open, close) = 1.2"),
    ("1,2,0.5,1.5,inf", "column volume='inf': must be a finite number >= 0"),
])
def test_a_bad_value_is_quoted_as_the_file_writes_it(tmp_path: Path, row: str, expected: str) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + FIRST + "2020-01-02T00:00:00Z," + row + "\n")
    for read in (read_bars_csv, lambda p: list(iter_bars_csv(p))):
        with pytest.raises(DataError) as info:
            read(path)
        assert str(info.value) == f"{path}, line 3: {expected}"


@pytest.mark.parametrize("text", ["-0", "-0.0", "-0e5", " -0 "])
def test_a_volume_of_minus_zero_is_read_as_zero(tmp_path: Path, text: str) -> None:
    """``-0`` passes the rule volume >= 0 (as it does in the Bar message) and was stored as -0.0,
    written back as ``-0``; it is the zero volume it means."""
    import math

    from ensemble_trader.marketdata import write_bars_csv

    path = tmp_path / "bars.csv"
    path.write_text(HEADER + FIRST.replace(",10\n", f",{text}\n"))
    [s] = read_bars_csv(path)
    assert s.volume[0] == 0.0 and math.copysign(1.0, s.volume[0]) == 1.0
    [bar] = iter_bars_csv(path)
    assert math.copysign(1.0, bar.volume) == 1.0
    write_bars_csv(tmp_path / "back.csv", [s])
    assert (tmp_path / "back.csv").read_text().splitlines()[1].endswith(",0")
