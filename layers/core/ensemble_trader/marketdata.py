"""Market data in and out: the bars CSV format, the daily bars shipped in ``arch``, ../shared/data.

The bars CSV (DESIGN.md §4) has the header ``timestamp,open,high,low,close,volume`` and an
optional ``symbol`` column (then one file holds several symbols). Timestamps are ISO-8601 and
timezone-aware (``2019-10-17T09:00:00Z`` or ``+00:00``), in the form
:func:`~ensemble_trader.domain.models.time_text_problem` takes; they are stored in UTC.

Every row is checked with the rules of the :class:`~ensemble_trader.domain.models.Bar` model
(finite positive prices, ``low <= min(open, close)``, ``high >= max(open, close)``, finite
``volume >= 0``, known symbol format) plus strictly increasing time per symbol. A volume written
``-0`` is such a volume and is read as 0.0 (not -0.0). A bad row raises
:class:`~ensemble_trader.domain.errors.DataError` naming the file, the line, the column and the
value (as the file writes it); nothing is skipped or repaired.

This module does file I/O, so it lives outside ``domain/``.
"""

from __future__ import annotations

import csv
import heapq
import importlib
import io
import math
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.models import (
    SYMBOL_PATTERN,
    Bar,
    outside_time_range,
    read_time_text,
)
from ensemble_trader.domain.synthetic import REGIME_NAMES, SyntheticData, generate, regime_codes

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = ("timestamp", *PRICE_COLUMNS, "volume")
"""The required header of a bars CSV, in the order :func:`write_bars_csv` writes it."""

ARCH_DATASETS: dict[str, str] = {"sp500": "SPX", "nasdaq": "IXIC"}
"""Daily data sets shipped in ``arch.data`` and the symbol each is given."""

SHARED_DATA_ENV = "ET_SHARED_DATA"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)


# --------------------------------------------------------------------------------------------
# Row validation (the Bar model's rules, with line and column numbers)
# --------------------------------------------------------------------------------------------


def _where(source: str, line: int) -> str:
    return f"{source}, line {line}"


SHOWN_CHARS = 200
"""Row or value text quoted in an error message is cut to this many characters."""


def _shown(value: object) -> str:
    """``repr(value)`` of a str or bytes, cut to :data:`SHOWN_CHARS` characters (with ``…`` and the full length)
    when longer: a message must not carry half a file."""
    if isinstance(value, (str, bytes)) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}… ({len(value):,} characters)"
    return repr(value)


def _bad(source: str, line: int, column: str, value: object, reason: str) -> DataError:
    return DataError(f"{_where(source, line)}: column {column}={_shown(value)}: {reason}")


def _row_problem(o: float, h: float, lo: float, c: float, v: float) -> tuple[str, float, str] | None:
    """The first rule of the Bar model this row breaks, as (column, value, reason), or None."""
    for name, x in (("open", o), ("high", h), ("low", lo), ("close", c)):
        if not (math.isfinite(x) and x > 0.0):
            return name, x, "must be a finite number > 0"
    if not (math.isfinite(v) and v >= 0.0):
        return "volume", v, "must be a finite number >= 0"
    if lo > min(o, c):
        return "low", lo, f"must be <= min(open, close) = {min(o, c)!r}"
    if h < max(o, c):
        return "high", h, f"must be >= max(open, close) = {max(o, c)!r}"
    return None


def _text_problem(source: str, line: int, problem: tuple[str, float, str], texts: dict[str, str]) -> DataError:
    """The DataError of a row's ``problem`` (:func:`_row_problem`) quoting the column's text as
    the file has it, not the float read from it: ``1e-400`` reads as 0.0 and ``1e400`` as inf,
    and a message showing those would name a value the file does not hold (so it says so)."""
    column, value, reason = problem
    text = texts[column]
    if value == 0.0 or math.isinf(value):
        try:
            exact = Decimal(text.strip())
        except InvalidOperation:
            exact = Decimal(0)
        if exact.is_finite() and not exact.is_zero():
            reason += f" (the number is beyond float64's range and reads as {value!r})"
    return _bad(source, line, column, text, reason)


def _invalid_rows(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of rows that break a Bar rule (the vectorised twin of :func:`_row_problem`)."""
    with np.errstate(invalid="ignore"):
        ok = np.ones(len(o), dtype=bool)
        for x in (o, h, lo, c):
            ok &= np.isfinite(x) & (x > 0.0)
        ok &= np.isfinite(v) & (v >= 0.0)
        ok &= lo <= np.minimum(o, c)
        ok &= h >= np.maximum(o, c)
    return np.flatnonzero(~ok)


def _not_after(source: str, line: int, symbol: str, when: datetime, previous_line: int) -> DataError:
    stamp = when.isoformat().replace("+00:00", "Z")
    reason = f"not after the previous {symbol} bar (line {previous_line}): time must increase strictly"
    return _bad(source, line, "timestamp", stamp, reason)


def _parse_timestamp(text: str, source: str, line: int) -> datetime:
    try:
        when = read_time_text(text.strip(), "not an ISO-8601 datetime")
    except ValueError as exc:
        raise _bad(source, line, "timestamp", text, str(exc)) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise _bad(source, line, "timestamp", text, "has no timezone (write a trailing Z or +00:00 for UTC)")
    problem = outside_time_range(when)
    if problem:
        raise _bad(source, line, "timestamp", text, problem)
    return when.astimezone(UTC)


def _parse_float(text: str, column: str, source: str, line: int) -> float:
    # float() also reads "1_500" and non-ASCII digits: neither is a number in a bars file
    if "_" in text or not text.isascii():
        raise _bad(source, line, column, text, "not a number")
    try:
        return float(text)
    except ValueError:
        raise _bad(source, line, column, text, "not a number") from None


def _check_symbol(symbol: str, source: str, line: int | None, column: str = "symbol") -> str:
    # fullmatch: the pattern's "$" also matches before a trailing line break ("SYN\n")
    if not isinstance(symbol, str) or _SYMBOL_RE.fullmatch(symbol) is None:
        reason = f"not a valid symbol (pattern {SYMBOL_PATTERN})"
        if line is None:
            raise DataError(f"{source}: symbol {symbol!r}: {reason}")
        raise _bad(source, line, column, symbol, reason)
    return symbol


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _csv_lines(file: Path, source: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every line of a UTF-8 CSV file (a byte order mark is allowed).

    Quotes are read strictly: a field is quoted whole or not at all (``"10"0`` is an error, not
    ``100``), and a quoted field cannot run past the end of its line (no field of a bars or
    truth file holds a line break), so an unclosed quote is reported on the line it opened on,
    as soon as the reader would go on to the next line. A byte that is not UTF-8 is reported
    with the line and the column (or the header) holding it.

    Any path that exists and is not a folder is read, once, front to back: a regular file, a
    pipe (``/dev/stdin``, a shell's ``<(...)``, a FIFO).
    """
    problem = _not_readable(file)
    if problem:
        raise DataError(f"{source}: {problem}")
    # surrogateescape: a byte that is not UTF-8 becomes a lone surrogate in its line, found there
    # (a decoding error would come from a block of ~8 KB read ahead, with no line to name)
    with file.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        end = 0  # the line the last record ended on: the next one starts on line end + 1
        text = ""  # the last line handed to the csv reader
        header: list[str] | None = None  # the first row that is not blank

        def lines() -> Iterator[str]:
            nonlocal text
            for number, line in enumerate(handle, 1):
                if number > end + 1:  # the record that started on the line before is still open
                    raise _unclosed_quote(source, end + 1, text, "a field cannot run past the end of its line")
                if not line.isascii() and _NOT_UTF8.search(line):
                    raise _not_utf8(source, number, line, header)
                text = line
                yield line

        reader = csv.reader(lines(), strict=True)
        try:
            for row in reader:
                end = reader.line_num
                if header is None and not _is_blank(row):
                    header = row
                yield end, row
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):  # strict: the file ends inside a quoted field
                raise _unclosed_quote(source, end + 1, text, "the file ends inside it") from None
            hint = " (a field is quoted whole or not at all)" if "expected after" in str(exc) else ""
            raise DataError(f"{_where(source, end + 1)}: {exc}{hint}: {_shown(text.rstrip(_EOL))}") from None


_EOL = "\r\n"


_NOT_UTF8 = re.compile("[\udc80-\udcff]+")
"""Bytes that are not UTF-8, as ``errors="surrogateescape"`` decodes them."""


def _not_utf8(source: str, line: int, text: str, header: list[str] | None) -> DataError:
    fields = next(csv.reader([text]), None) or [text]
    i, field = next(((i, f) for i, f in enumerate(fields) if _NOT_UTF8.search(f)), (0, text))
    if header is None:
        where = "the header"
    else:
        where = f"column {header[i].strip() if i < len(header) else f'#{i + 1}'}"
    found = _NOT_UTF8.search(field)
    bad = found.group().encode("utf-8", "surrogateescape") if found else b""
    raw = field.encode("utf-8", "surrogateescape")
    return DataError(
        f"{_where(source, line)}: {where}: not UTF-8 text: byte(s) {bad!r} in {_shown(raw)} (save the file as UTF-8)"
    )


def _unclosed_quote(source: str, line: int, text: str, why: str) -> DataError:
    return DataError(
        f"{_where(source, line)}: the quote opened on line {line} is not closed ({why}): {_shown(text.rstrip(_EOL))}"
    )


def _not_readable(file: Path) -> str | None:
    """Why ``file`` cannot be read as a data file ('no such file', 'a folder, not a file'), or None."""
    if file.is_dir():
        return "a folder, not a file"
    if not file.exists():
        return "no such file"
    return None


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _header(lines: Iterator[tuple[int, list[str]]]) -> tuple[int, list[str]] | None:
    """The first row that is not blank (the header) and its line, or None when there is none:
    blank lines are not rows, before the header either."""
    return next(((line, row) for line, row in lines if not _is_blank(row)), None)


@dataclass
class _Columns:
    """Parsed rows of one symbol (plain lists while reading, arrays at the end)."""

    micros: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=lambda: [[], [], [], [], []])


class _Reader:
    """Line-numbered row parser shared by :func:`read_bars_csv` and :func:`iter_bars_csv`."""

    def __init__(self, path: str | os.PathLike[str], symbol: str | None):
        self.path = Path(path)
        self.source = str(path)
        self.symbol = symbol

    def rows(self) -> Iterator[tuple[int, str, datetime, tuple[float, float, float, float, float]]]:
        """Yield (line, symbol, timestamp, (open, high, low, close, volume)) for every data row."""
        lines = _csv_lines(self.path, self.source)
        first = _header(lines)
        if first is None:
            raise DataError(f"{self.source}: empty file (expected the header {','.join(BAR_COLUMNS)})")
        header_line, header = first
        index = self._header_index([h.strip() for h in header], header_line)
        if "symbol" in index:
            fixed = None
        elif self.symbol is not None:
            fixed = _check_symbol(self.symbol, self.source, None)
        else:
            fixed = self.path.stem.upper()
            if _SYMBOL_RE.fullmatch(fixed) is None:
                raise DataError(
                    f"{self.source}: symbol {fixed!r}, taken from the file name, is not a valid symbol "
                    f"(pattern {SYMBOL_PATTERN}): rename the file or add a symbol column"
                )
        width = len(header)
        columns = [(name, index[name]) for name in (*PRICE_COLUMNS, "volume")]
        t_col = index["timestamp"]
        s_col = index.get("symbol")
        for line, row in lines:
            if _is_blank(row):
                continue  # a blank line holds no data
            if len(row) != width:
                raise DataError(
                    f"{_where(self.source, line)}: expected {width} columns "
                    f"({','.join(h.strip() for h in header)}), got {len(row)}: {_shown(','.join(row))}"
                )
            if s_col is not None:
                sym = _check_symbol(row[s_col].strip(), self.source, line)
            else:
                sym = fixed  # type: ignore[assignment]
            when = _parse_timestamp(row[t_col], self.source, line)
            o, h, lo, c, v = (_parse_float(row[i], name, self.source, line) for name, i in columns)
            problem = _row_problem(o, h, lo, c, v)
            if problem is not None:
                raise _text_problem(self.source, line, problem, {name: row[i] for name, i in columns})
            # a volume of -0 passes >= 0 (as in the Bar message) and is kept as the 0 it is, not -0.0
            yield line, sym, when, (o, h, lo, c, v + 0.0)

    def _header_index(self, header: list[str], line: int) -> dict[str, int]:
        known = set(BAR_COLUMNS) | {"symbol"}
        unknown = [h for h in header if h not in known]
        if unknown:
            raise DataError(
                f"{_where(self.source, line)}: unknown column(s) {unknown}; a bars CSV has "
                f"{','.join(BAR_COLUMNS)} and an optional symbol column"
            )
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError(f"{_where(self.source, line)}: duplicated column(s) {duplicated}")
        missing = [c for c in BAR_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{_where(self.source, line)}: missing column(s) {missing} in header {header}")
        return {name: i for i, name in enumerate(header)}


def _micros(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def read_bars_csv(path: str | os.PathLike[str], symbol: str | None = None) -> list[BarSeries]:
    """Read a bars CSV into one :class:`BarSeries` per symbol (in order of first appearance).

    Without a ``symbol`` column, the symbol is ``symbol`` or the file's stem upper-cased. With a
    ``symbol`` column, ``symbol`` (if given) selects that symbol's rows only and a DataError says
    so when the file has none. Any bad row raises DataError naming file, line, column and value.
    """
    reader = _Reader(path, symbol)
    per_symbol: dict[str, _Columns] = {}
    for line, sym, when, values in reader.rows():
        cols = per_symbol.get(sym)
        if cols is None:
            cols = per_symbol[sym] = _Columns()
        t = _micros(when)
        if cols.micros and t <= cols.micros[-1]:
            raise _not_after(reader.source, line, sym, when, cols.lines[-1])
        cols.micros.append(t)
        cols.lines.append(line)
        for target, x in zip(cols.values, values, strict=True):
            target.append(x)
    if not per_symbol:
        raise DataError(f"{reader.source}: no data rows after the header")
    out = []
    for sym, cols in per_symbol.items():
        o, h, lo, c, v = (np.asarray(x, dtype=np.float64) for x in cols.values)
        out.append(
            BarSeries(
                symbol=sym,
                timestamp=np.asarray(cols.micros, dtype=np.int64)
                .astype("datetime64[us]")
                .astype("datetime64[ns]"),
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=v,
            )
        )
    if symbol is not None and any(s.symbol != symbol for s in out):
        chosen = [s for s in out if s.symbol == symbol]
        if not chosen:
            raise DataError(
                f"{reader.source}: no rows for symbol {symbol!r}; it holds {[s.symbol for s in out]}"
            )
        return chosen
    return out


def iter_bars_csv(path: str | os.PathLike[str], symbol: str | None = None) -> Iterator[Bar]:
    """Stream a bars CSV row by row as validated :class:`Bar` messages, in constant memory
    whatever the file's length (for a caller that sends or checks bars one at a time; ``feed
    replay`` does not use it: it reads through :func:`load_bars` / :func:`read_bars_csv`, which
    checks every row before the first bar is sent).

    Same rules and errors as :func:`read_bars_csv`; a bad row raises when it is reached, after
    the rows before it were yielded. ``symbol`` names the symbol of a file without a symbol
    column; with a symbol column it selects one symbol.
    """
    reader = _Reader(path, symbol)
    last: dict[str, tuple[datetime, int]] = {}
    has_rows = chosen = False
    for line, sym, when, (o, h, lo, c, v) in reader.rows():
        has_rows = True
        prev = last.get(sym)
        if prev is not None and when <= prev[0]:
            raise _not_after(reader.source, line, sym, when, prev[1])
        last[sym] = (when, line)
        if symbol is not None and sym != symbol:
            continue
        chosen = True
        yield Bar(symbol=sym, timestamp=when, open=o, high=h, low=lo, close=c, volume=v)
    if not has_rows:
        raise DataError(f"{reader.source}: no data rows after the header")
    if not chosen:
        raise DataError(f"{reader.source}: no rows for symbol {symbol!r}; it holds {sorted(last)}")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@contextmanager
def atomic_writer(path: str | os.PathLike[str], *, newline: str | None = None,
                  encoding: str = "utf-8", binary: bool = False) -> Iterator:
    """Open a text file for writing so that ``path`` holds either its old content or the
    complete new file, never a part of it.

    Writes go to a temporary file in the same folder (created with the usual permissions, i.e.
    0o666 less the umask); when the ``with`` block ends normally the file is flushed, synced and
    :func:`os.replace`-d into place. On any failure (a full disk, a file size limit, Ctrl-C, an
    exception raised by the caller) the temporary file is deleted and the error propagates.
    The folder is created when missing. ``binary``: a file of bytes (images).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        opened = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline=newline, encoding=encoding)
        with opened as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """``Path(path).write_text(text)`` through :func:`atomic_writer`."""
    with atomic_writer(path, encoding=encoding) as handle:
        handle.write(text)


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig: Any) -> None:
    """``fig.savefig(path, **savefig)`` through :func:`atomic_writer`: the image is drawn in
    memory (its format from the file's suffix) and the file holds the old image or the whole new
    one, never a part."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    with atomic_writer(path, binary=True) as handle:
        handle.write(buffer.getvalue())


def _format_float(x: float) -> str:
    """Shortest text that reads back as the same float (``12.0`` is written ``12``)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _timestamp_unit(ts: np.ndarray) -> str:
    """``"s"`` when every time is a whole second, else ``"us"``; sub-microsecond times raise."""
    ns = ts.astype("datetime64[ns]").astype(np.int64)
    whole_seconds = np.all(ns % 1_000_000_000 == 0)
    if not whole_seconds and np.any(ns % 1_000 != 0):
        raise DataError("timestamps with sub-microsecond precision cannot be written as ISO-8601 text")
    return "s" if whole_seconds else "us"


def _format_timestamps(ts: np.ndarray) -> list[str]:
    unit = _timestamp_unit(ts)
    return [s + "Z" for s in np.datetime_as_string(ts.astype("datetime64[ns]"), unit=unit).tolist()]


_WRITE_CHUNK = 16_384
"""Rows of a series formatted at a time by :func:`write_bars_csv`."""


def _csv_rows(s: BarSeries, unit: str, multi: bool) -> Iterator[tuple[int, list[str]]]:
    """(time in ns, CSV fields) of every row of ``s``, formatted a chunk at a time."""
    ns_all = s.timestamp.astype("datetime64[ns]")
    for a in range(0, len(s), _WRITE_CHUNK):
        ns = ns_all[a : a + _WRITE_CHUNK]
        stamps = np.datetime_as_string(ns, unit=unit).tolist()
        keys = ns.astype(np.int64).tolist()
        cols = [c[a : a + _WRITE_CHUNK].tolist() for c in (s.open, s.high, s.low, s.close, s.volume)]
        for i, stamp in enumerate(stamps):
            values = [_format_float(c[i]) for c in cols]
            yield keys[i], [stamp + "Z", s.symbol, *values] if multi else [stamp + "Z", *values]


def write_bars_csv(
    path: str | os.PathLike[str], series: Sequence[BarSeries], *, symbol_column: bool | None = None
) -> None:
    """Write bars as CSV (timestamps in UTC with a trailing Z; floats round-trip exactly).

    One series gives ``timestamp,open,high,low,close,volume``; several give
    ``timestamp,symbol,open,...`` with the rows merged in time order (ties keep the order of
    ``series``). ``symbol_column=True`` writes the symbol column for a single series too, so the
    symbol survives a file name that is not the ticker. Parent directories are created. Rows
    are formatted and written as they go (several series merged lazily), not built in memory.
    """
    if isinstance(series, BarSeries):
        series = [series]
    if not series:
        raise DataError(f"{path}: nothing to write (no series)")
    symbols = [s.symbol for s in series]
    if len(set(symbols)) != len(symbols):
        raise DataError(f"{path}: symbols must be distinct, got {symbols}")
    for s in series:
        _check_symbol(s.symbol, str(path), None)
        bad = _invalid_rows(s.open, s.high, s.low, s.close, s.volume)
        if bad.size:
            i = int(bad[0])
            column, value, reason = _row_problem(
                float(s.open[i]), float(s.high[i]), float(s.low[i]), float(s.close[i]), float(s.volume[i])
            ) or ("?", None, "invalid")
            raise DataError(
                f"{s.symbol} row {i}: column {column}={value!r}: {reason} (not written to {path})"
            )
    multi = len(series) > 1 if symbol_column is None else symbol_column
    if len(series) > 1 and not multi:
        raise DataError(f"{path}: several series need the symbol column (symbol_column=False given)")
    header = ["timestamp", "symbol", *PRICE_COLUMNS, "volume"] if multi else list(BAR_COLUMNS)
    units = [_timestamp_unit(s.timestamp) for s in series]  # raises before the file is touched
    per_series = [_csv_rows(s, unit, multi) for s, unit in zip(series, units, strict=True)]
    # each series' times increase strictly (BarSeries), and heapq.merge keeps the order of the
    # series on a tie: the order of sorting every row by (time, series, row), without the rows
    rows = per_series[0] if len(per_series) == 1 else heapq.merge(*per_series, key=lambda r: r[0])
    with atomic_writer(path, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(r[1] for r in rows)


# --------------------------------------------------------------------------------------------
# Ground truth of synthetic data (the generator is pure; its files are written here)
# --------------------------------------------------------------------------------------------

TRUTH_COLUMNS: tuple[str, ...] = ("timestamp", "regime")


def write_truth_csv(path: str | os.PathLike[str], data: SyntheticData) -> None:
    """Write the hidden regime of every bar: header ``timestamp,regime``."""
    stamps = _format_timestamps(data.series.timestamp)
    if len(stamps) != len(data.regimes):
        raise DataError(f"{path}: {len(stamps)} bars but {len(data.regimes)} regime labels")
    regime_codes(data.regimes)  # raises on an unknown label
    with atomic_writer(path, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows(zip(stamps, data.regimes.tolist(), strict=True))


def read_truth_csv(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a truth CSV: (timestamps as datetime64[ns] UTC, regimes as an array of str).

    Labels must be BULL, BEAR, SIDEWAYS or VOLATILE and time must increase strictly; a bad row
    raises DataError naming the file, line, column and value.
    """
    source = str(path)
    micros: list[int] = []
    labels: list[str] = []
    lines = _csv_lines(Path(path), source)
    header_line, header = _header(lines) or (1, [])
    header = [h.strip() for h in header]
    if header != list(TRUTH_COLUMNS):
        raise DataError(f"{_where(source, header_line)}: expected the header {','.join(TRUTH_COLUMNS)}, got {header}")
    for line, row in lines:
        if _is_blank(row):
            continue
        if len(row) != 2:
            raise DataError(f"{_where(source, line)}: expected 2 columns (timestamp,regime), got {len(row)}")
        t = _micros(_parse_timestamp(row[0], source, line))
        label = row[1].strip()
        if label not in REGIME_NAMES:
            raise _bad(source, line, "regime", row[1], f"must be one of {list(REGIME_NAMES)}")
        if micros and t <= micros[-1]:
            raise _bad(
                source,
                line,
                "timestamp",
                row[0],
                "not after the previous row: time must increase strictly",
            )
        micros.append(t)
        labels.append(label)
    if not micros:
        raise DataError(f"{source}: no data rows after the header")
    stamps = np.asarray(micros, dtype=np.int64).astype("datetime64[us]").astype("datetime64[ns]")
    return stamps, np.asarray(labels, dtype="<U8")


# --------------------------------------------------------------------------------------------
# Data sets: arch, ../shared/data, and one entry point for the CLIs
# --------------------------------------------------------------------------------------------


def load_arch(name: str) -> BarSeries:
    """Daily bars shipped in ``arch.data`` (no network): ``"sp500"`` → SPX, ``"nasdaq"`` → IXIC.

    Bars are stamped 00:00 UTC of the trading day; columns Open/High/Low/Close/Volume (not Adj
    Close). Nothing is repaired: a row breaking a Bar rule raises DataError with the count of
    such rows and the first one (arch 8.0 ships none: all 5,031 rows of both sets pass).
    """
    symbol = ARCH_DATASETS.get(name)
    if symbol is None:
        raise DataError(f"unknown arch data set {name!r}; choose one of {sorted(ARCH_DATASETS)}")
    module = importlib.import_module(f"arch.data.{name}")
    frame = module.load()
    source = f"arch.data.{name}"
    missing = [c for c in ("Open", "High", "Low", "Close", "Volume") if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; it has {list(frame.columns)}")
    index = frame.index
    if getattr(index, "tz", None) is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    days = np.asarray(index.values).astype("datetime64[D]")
    arrays = [frame[c].to_numpy(dtype=np.float64) for c in ("Open", "High", "Low", "Close", "Volume")]
    bad = _invalid_rows(*arrays)
    if bad.size:
        i = int(bad[0])
        column, value, reason = _row_problem(*(float(a[i]) for a in arrays)) or ("?", None, "invalid")
        raise DataError(
            f"{source}: {bad.size} row(s) break the Bar rules and are not repaired; first on "
            f"{days[i]}: column {column}={value!r}: {reason}"
        )
    return BarSeries(symbol, days.astype("datetime64[ns]"), *arrays)


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$ET_SHARED_DATA`` if set, else ``../shared/data`` beside the repo.

    Returns None when the folder does not exist (a fresh clone has no ../shared).
    """
    env = os.environ.get(SHARED_DATA_ENV)
    candidate = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def load_shared(name: str = "btcusd_1h") -> BarSeries:
    """One data set of the shared data folder (``<name>.csv``), e.g. BTC-USD hourly bars."""
    folder = shared_data_dir()
    if folder is None:
        env = os.environ.get(SHARED_DATA_ENV)
        where = f"${SHARED_DATA_ENV}={env}" if env else "../shared/data next to the repository"
        raise DataError(
            f"shared data folder not found ({where}); it exists only on the development machine. "
            f"Set ${SHARED_DATA_ENV} or use arch:sp500 / tests/fixtures/btcusd_1h_slice.csv"
        )
    path = folder / f"{name}.csv"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.csv"))
        raise DataError(
            f"shared data set {name!r} not found in the shared data folder; available: {available}"
        )
    series = read_bars_csv(path)
    if len(series) != 1:
        raise DataError(
            f"shared data set {name!r} holds {len(series)} symbols {[s.symbol for s in series]}; "
            "use read_bars_csv for multi-symbol files"
        )
    return series[0]


SYNTH_SPEC = "synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]"
SYNTH_DEFAULT_SYMBOL = "SYN"
SYNTH_DEFAULT_BARS = 2_000


class SynthSpec(NamedTuple):
    """A ``synth:`` data spec, read: what :func:`~ensemble_trader.domain.synthetic.generate` takes."""

    scenario: str
    seed: int
    bars: int
    symbol: str


class _ReadSynthSpec(SynthSpec):
    """A :class:`SynthSpec` that keeps the text it was read from (``text``: an attribute, not a
    field, so it compares, unpacks and prints as the SynthSpec it is)."""

    text: str

    def __repr__(self) -> str:
        return "SynthSpec" + SynthSpec.__repr__(self).removeprefix(type(self).__name__)


def parse_synth_spec(spec: str, default_bars: int = SYNTH_DEFAULT_BARS) -> SynthSpec | None:
    """``synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]`` read (seed 0, ``default_bars`` bars and
    symbol SYN when left out), or None when ``spec`` is not a ``synth:`` spec. The one reader of
    the form: :func:`load_bars` and :func:`ensemble_trader.backtest.engine.load_series` (which
    keeps the true regimes) both use it. A malformed spec (no scenario, more than four parts, a
    seed or bar count that is not ASCII digits) raises :class:`DataError`; the scenario, the
    count and the symbol are checked by ``generate`` (:func:`generate_synth`)."""
    kind, sep, rest = spec.partition(":")
    if not (sep and kind == "synth"):
        return None
    parts = rest.split(":")
    if not parts[0] or len(parts) > 4 or not all(re.fullmatch("[0-9]+", p) for p in parts[1:3]):
        raise DataError(f"{spec!r}: expected {SYNTH_SPEC} with integer seed and bars")
    read = _ReadSynthSpec(
        scenario=parts[0],
        seed=int(parts[1]) if len(parts) > 1 else 0,
        bars=int(parts[2]) if len(parts) > 2 else default_bars,
        symbol=parts[3] if len(parts) > 3 else SYNTH_DEFAULT_SYMBOL,
    )
    read.text = spec
    return read


def generate_synth(synth: SynthSpec) -> SyntheticData:
    """The synthetic bars and regimes of a read ``synth:`` spec (daily bars from 2000-01-03).

    What the generator refuses (an unknown scenario, 0 bars, more bars than fit, a bad symbol)
    raises DataError quoting the spec as it was typed, e.g. ``'synth:realistic:1:0': n_bars=0:
    must be an integer >= 1`` (a SynthSpec made in code is quoted with all four parts)."""
    try:
        return generate(synth.scenario, synth.bars, synth.seed, symbol=synth.symbol)
    except DataError as exc:
        text = getattr(synth, "text", None) or f"synth:{synth.scenario}:{synth.seed}:{synth.bars}:{synth.symbol}"
        raise DataError(f"{text!r}: {exc}") from None


def load_bars(spec: str) -> list[BarSeries]:
    """One entry point for the CLIs.

    ``arch:sp500`` / ``arch:nasdaq``; ``shared:<name>`` (a CSV of the shared data folder);
    ``synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]`` (generated daily bars; seed 0, 2,000 bars
    and symbol SYN by default); anything else is a bars CSV path.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind == "arch":
        return [load_arch(rest)]
    if sep and kind == "shared":
        return [load_shared(rest or "btcusd_1h")]
    synth = parse_synth_spec(spec)
    if synth is not None:
        return [generate_synth(synth).series]
    path = Path(spec)
    problem = _not_readable(path)
    if problem:
        raise DataError(
            f"{spec!r}: {problem}; a data spec is arch:sp500, arch:nasdaq, shared:<name>, "
            f"{SYNTH_SPEC} or a bars CSV path"
        )
    return read_bars_csv(path)  # reads the file once: a pipe will do
