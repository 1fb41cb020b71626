"""Columnar bars: one symbol's OHLCV history as numpy arrays.

``Bar`` (in :mod:`.models`) is the message for one bar; ``BarSeries`` is the same data for many
bars at once, for training, backtests and the vectorised feature code. Conversions validate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.models import (
    EARLIEST_TIME,
    LATEST_TIME,
    TIME_RANGE_TEXT,
    Bar,
    outside_time_range,
    read_time_text,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(ts: np.datetime64) -> datetime:
    """A numpy datetime64 (UTC) as a timezone-aware datetime (exact to the microsecond)."""
    micros = int(ts.astype("datetime64[us]").astype(np.int64))
    return _EPOCH + timedelta(microseconds=micros)


def to_datetime64(when: datetime) -> np.datetime64:
    if when.tzinfo is None:
        raise DataError(f"timestamp {when!r} has no timezone")
    problem = outside_time_range(when)
    if problem:
        raise DataError(f"timestamp {problem}")
    return np.datetime64(when.astimezone(UTC).replace(tzinfo=None), "ns")


_EARLIEST_US = np.datetime64(EARLIEST_TIME.replace(tzinfo=None), "us")
_LATEST_US = np.datetime64(LATEST_TIME.replace(tzinfo=None), "us")


_REDUCED_DATE = re.compile(r"\d{4}(-\d{2})?")
"""A year (``2015``) or a month (``2015-01``): ISO-8601 dates of reduced precision, which
:meth:`datetime.fromisoformat` does not read."""


def parse_datetime64(text: str | np.datetime64) -> np.datetime64:
    """An ISO-8601 date or time (UTC when it names no offset), or a datetime64, as datetime64[ns].

    Text is read by the rules of a bar's timestamp (the form
    :func:`~ensemble_trader.domain.models.time_text_problem` takes, then
    :meth:`datetime.fromisoformat`: the basic form ``20150101`` is a date, as for ``data synth
    --start``, not the year 20150101 numpy makes of it), and a year or a month (``2015``,
    ``2015-01``) is its first instant. Digits past the microsecond are refused, not dropped, and
    so are a separator other than ``T``, ``t`` or a space between date and time, a fraction of an
    hour or a minute (``T12.5`` was read as 12:00:00.5) and a time outside the range
    datetime64[ns] holds (numpy would wrap year 0224 round to a day of 1977). Raises
    :class:`DataError` naming the text and what is wrong with it."""
    if isinstance(text, np.datetime64):
        if np.isnat(text) or not _EARLIEST_US <= text.astype("datetime64[us]") < _LATEST_US:
            raise DataError(f"{text!r} {TIME_RANGE_TEXT}")
        return text.astype("datetime64[ns]")
    stripped = text.strip()
    if _REDUCED_DATE.fullmatch(stripped):
        stripped = (stripped + "-01-01")[:10]
    try:
        when = read_time_text(stripped, "is not an ISO-8601 date or time (e.g. 2015-01-02)")
    except ValueError as exc:
        raise DataError(f"{text!r} {exc}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if outside_time_range(when):
        raise DataError(f"{text!r} {TIME_RANGE_TEXT}")
    return np.datetime64(when.astimezone(UTC).replace(tzinfo=None), "ns")


_NS = np.dtype("datetime64[ns]")


def _as_nanoseconds(symbol: str, timestamp: np.ndarray) -> np.ndarray:
    """``timestamp`` (datetime64 of any unit) as datetime64[ns], or a DataError naming the first
    row that unit cannot hold: numpy's conversion wraps a time outside 1677-09-22 … 2262-04-11
    round silently (year 1500 of datetime64[D] became 2084) and drops digits past the
    nanosecond, so the conversion is read back and compared."""
    times = np.asarray(timestamp)
    if times.dtype.kind != "M":
        raise DataError(f"{symbol}: timestamp must be datetime64 (UTC), got an array of {times.dtype}")
    ns = times.astype(_NS)
    lost = (ns.astype(times.dtype) != times) & ~np.isnat(times)
    if lost.any():
        i = int(np.argmax(lost))
        finer = np.datetime_data(times.dtype)[0] in ("ps", "fs", "as")
        why = "has digits past the nanosecond" if finer else TIME_RANGE_TEXT
        raise DataError(f"{symbol}: timestamp row {i} ({times[i]}) {why}: bar times are datetime64[ns]")
    return ns


@dataclass(frozen=True)
class BarSeries:
    """Bars of one symbol, oldest first. ``timestamp`` is datetime64[ns] in UTC: a datetime64
    array of another unit is converted (a time that unit cannot hold is a DataError), and one
    that is not datetime64 is refused, so the int64 view of every series counts nanoseconds."""

    symbol: str
    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        if getattr(self.timestamp, "dtype", None) != _NS:
            object.__setattr__(self, "timestamp", _as_nanoseconds(self.symbol, self.timestamp))
        n = len(self.timestamp)
        for name in ("open", "high", "low", "close", "volume"):
            col = getattr(self, name)
            if len(col) != n:
                raise DataError(f"{self.symbol}: column {name} has {len(col)} rows, timestamp has {n}")
        # a NaT compares false with every time, so the order check finds one among several bars
        if n == 1 and np.isnat(self.timestamp[0]):
            raise DataError(f"{self.symbol}: timestamp row 0 is NaT (not a time)")
        if n > 1 and not np.all(self.timestamp[1:] > self.timestamp[:-1]):
            i = int(np.argmin(self.timestamp[1:] > self.timestamp[:-1])) + 1
            for row in (i - 1, i):
                if np.isnat(self.timestamp[row]):
                    raise DataError(f"{self.symbol}: timestamp row {row} is NaT (not a time)")
            raise DataError(
                f"{self.symbol}: timestamps must increase strictly; row {i} "
                f"({self.timestamp[i]}) is not after row {i - 1} ({self.timestamp[i - 1]})"
            )

    def __len__(self) -> int:
        return len(self.timestamp)

    def __getitem__(self, index: slice) -> BarSeries:
        if not isinstance(index, slice):
            raise TypeError("BarSeries supports slicing only; use .bar(i) for one Bar")
        return BarSeries(
            self.symbol,
            self.timestamp[index],
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume[index],
        )

    def bar(self, i: int) -> Bar:
        return Bar(
            symbol=self.symbol,
            timestamp=to_datetime(self.timestamp[i]),
            open=float(self.open[i]),
            high=float(self.high[i]),
            low=float(self.low[i]),
            close=float(self.close[i]),
            volume=float(self.volume[i]),
        )

    def bars(self) -> Iterator[Bar]:
        """Every row as a validated :class:`Bar` (raises InvalidMessageError on a bad row)."""
        for i in range(len(self)):
            yield self.bar(i)

    @classmethod
    def from_bars(cls, bars: Sequence[Bar]) -> BarSeries:
        if not bars:
            raise DataError("no bars")
        symbols = {b.symbol for b in bars}
        if len(symbols) != 1:
            raise DataError(f"BarSeries holds one symbol, got {sorted(symbols)}")
        return cls(
            symbol=bars[0].symbol,
            timestamp=np.array([to_datetime64(b.timestamp) for b in bars], dtype="datetime64[ns]"),
            open=np.array([b.open for b in bars], dtype=np.float64),
            high=np.array([b.high for b in bars], dtype=np.float64),
            low=np.array([b.low for b in bars], dtype=np.float64),
            close=np.array([b.close for b in bars], dtype=np.float64),
            volume=np.array([b.volume for b in bars], dtype=np.float64),
        )

    def between(self, start: str | None = None, end: str | None = None) -> BarSeries:
        """Rows with start <= timestamp < end (ISO dates or datetimes, UTC)."""
        mask = np.ones(len(self), dtype=bool)
        if start is not None:
            mask &= self.timestamp >= parse_datetime64(start)
        if end is not None:
            mask &= self.timestamp < parse_datetime64(end)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return self[0:0]
        return self[int(idx[0]) : int(idx[-1]) + 1]
