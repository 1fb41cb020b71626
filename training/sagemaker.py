"""The SageMaker training-container contract shared by the training jobs (local folders work too).

Hyperparameters come from ``/opt/ml/input/config/hyperparameters.json`` if present, else the JSON
in ``$SM_HPS``; data channels are folders of bars CSVs (subfolders included), read into one
series per symbol (:func:`read_channel`); a failed job writes its reason to
``/opt/ml/output/failure``, which SageMaker shows as the job's failure reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError
from pydantic import ValidationError

HYPERPARAMETERS_FILE = Path("/opt/ml/input/config/hyperparameters.json")
FAILURE_FILE = Path("/opt/ml/output/failure")


RESERVED_PREFIXES = ("sagemaker_", "_tuning_")
"""Hyperparameters SageMaker itself adds (the Python SDK's ``sagemaker_program``,
``sagemaker_region`` ...; a tuning job's ``_tuning_objective_metric``): not the job's settings."""


def check_no_arguments(prog: str, job: str, local_command: str, argv: Sequence[str] | None = None) -> None:
    """A training entry point takes no arguments (the container contract passes everything in
    files and variables): ``--help`` says so and exits 0, any other argument exits 2 — neither
    starts a job."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            f"The {job} as a SageMaker training container runs it: hyperparameters from "
            f"{HYPERPARAMETERS_FILE} or $SM_HPS, data channels $SM_CHANNEL_TRAIN and "
            f"$SM_CHANNEL_VALIDATION (folders of bars CSVs), the model to $SM_MODEL_DIR "
            f"(default /opt/ml/model). It takes no arguments; on this machine use `{local_command}`."
        ),
    )
    parser.parse_args(list(argv or ()))


def read_hyperparameters(path: Path = HYPERPARAMETERS_FILE) -> dict[str, Any]:
    """The job's hyperparameters: the JSON file if present, else ``$SM_HPS``, else {} — without
    SageMaker's own keys (:data:`RESERVED_PREFIXES`), and with string values the SageMaker Python
    SDK JSON-encodes (``'"balanced"'``, ``'"[1, 2]"'``) decoded once."""
    try:
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            text = os.environ.get("SM_HPS")
            raw = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"hyperparameters are not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"hyperparameters must be a JSON object, got {type(raw).__name__}")
    return {key: _decoded(value) for key, value in raw.items() if not key.startswith(RESERVED_PREFIXES)}


def _decoded(value: Any) -> Any:
    """A JSON-encoded string value (starting and ending with a double quote) decoded once."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


TRUTH_HEADER = ("timestamp", "regime")
"""The header of a regime-truth file (``marketdata.write_truth_csv``): labels, not bars."""


def is_truth_file(path: Path) -> bool:
    """A regime-truth CSV, not bars: named ``truth.csv`` (as ``data synth`` writes it) or
    ``*.truth.csv``, or any CSV whose header is ``timestamp,regime``."""
    name = path.name.lower()  # as the channel search reads suffixes
    if name == "truth.csv" or name.endswith(".truth.csv"):
        return True
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = fh.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False  # the bars reader names the problem
    return tuple(h.strip() for h in first.strip().split(",")) == TRUTH_HEADER


def refuse_channel_beside(key: str, channel: str, given: Collection[str]) -> None:
    """DataError when the channel ``channel`` (``SM_CHANNEL_TRAIN``) is set and the hyperparameter
    ``key`` it replaces is among those ``given`` too: a job reads that data from one, not both (the
    channel's files replaced the specs without a word)."""
    if os.environ.get(channel) and key in given:
        raise DataError(f"both the {channel.removeprefix('SM_CHANNEL_').lower()} channel (${channel}) and "
                        f"the '{key}' hyperparameter are given: the job reads that data from one, not both; "
                        f"drop '{key}' or the channel")


def channel_files(channel: str | None) -> list[Path]:
    """The bars CSVs of a channel folder and its subfolders, sorted by path (an S3Prefix channel
    keeps the keys' folders below the prefix: ``s3://bucket/bars/2024/spx.csv`` arrives as
    ``<channel>/2024/spx.csv``). Regime-truth files (:func:`is_truth_file`) are skipped: a folder
    written by ``ensemble-trader data synth`` holds bars.csv and truth.csv. [] when the channel
    is not set. The jobs read a channel with :func:`read_channel`, which joins the files of one
    symbol."""
    if not channel:
        return []
    folder = Path(channel)
    if not folder.is_dir():
        raise DataError(f"channel folder {folder} does not exist")
    # any case of the suffix: a channel synced from a store that kept upper-case names (SPX.CSV)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".csv" and p.is_file() and not is_truth_file(p))
    if not files:
        raise DataError(f"channel folder {folder} holds no bars CSV (subfolders included)")
    return files


@dataclass(frozen=True)
class ChannelSeries:
    """One symbol's bars in a channel: ``files`` (in time order) joined into one ``series``."""

    symbol: str
    series: BarSeries
    files: tuple[Path, ...]

    @property
    def spec(self) -> str:
        """How the jobs name these bars (the agents' data spec, the manifests' data): the file's
        path, or the paths joined by `` + `` when the symbol is split over several files."""
        return " + ".join(str(f) for f in self.files)


def read_channel(files: Sequence[Path]) -> list[ChannelSeries]:
    """The bars of a channel's ``files`` (:func:`channel_files`), one series per symbol, in order
    of the symbol's first file by path. A symbol split over several files (one per year:
    ``2005/spx.csv``, ``2006/spx.csv``; a file without a ``symbol`` column holds the symbol of its
    upper-cased stem) is joined in time order into one series, so its features warm up once and
    the regime HMM sees one unbroken sequence; files of one symbol whose bar times overlap or
    repeat are refused (:func:`join_series`). Gaps between files are allowed (a market's holidays
    are gaps too). [] for no files (a channel that is not set)."""
    from ensemble_trader.marketdata import read_bars_csv

    pieces: dict[str, list[tuple[Path, BarSeries]]] = {}
    for path in files:
        for series in read_bars_csv(path):
            pieces.setdefault(series.symbol, []).append((path, series))
    out = []
    for symbol, parts in pieces.items():
        ordered = sorted(parts, key=lambda part: part[1].timestamp[0])
        out.append(ChannelSeries(symbol, join_series(ordered), tuple(path for path, _ in ordered)))
    return out


def _when(t: np.datetime64) -> str:
    """A bar time as ISO text, without a fraction of zeros."""
    text = str(np.datetime_as_string(np.datetime64(t, "ns")))
    return text.rstrip("0").rstrip(".") if "." in text else text


def join_series(parts: Sequence[tuple[Path, BarSeries]]) -> BarSeries:
    """One symbol's series read from several files (``(file, series)`` in time order: sorted by
    first bar) as one series. Each file must begin after the previous one ends: a repeated or
    overlapping bar time raises :class:`DataError` naming both files and the times."""
    if not parts:
        raise DataError("no series to join")
    for (before, a), (after, b) in zip(parts, parts[1:], strict=False):
        if b.timestamp[0] <= a.timestamp[-1]:
            inside = int(np.count_nonzero(b.timestamp <= a.timestamp[-1]))
            raise DataError(
                f"{a.symbol}: {after} (bars {_when(b.timestamp[0])} .. {_when(b.timestamp[-1])}) overlaps "
                f"{before} (bars {_when(a.timestamp[0])} .. {_when(a.timestamp[-1])}): {inside} of its bars "
                f"are at or before {_when(a.timestamp[-1])}; a symbol's files in a channel must not repeat "
                "or overlap bar times"
            )
    if len(parts) == 1:
        return parts[0][1]
    series = [s for _, s in parts]
    return BarSeries(
        symbol=series[0].symbol,
        **{name: np.concatenate([getattr(s, name) for s in series])
           for name in ("timestamp", "open", "high", "low", "close", "volume")},
    )


FAILURE_REASON_BYTES = 1024
"""The most of the failure file SageMaker shows as the job's ``FailureReason`` (UTF-8 bytes)."""


def validation_problems(exc: ValidationError, what: str, known: Iterable[str] = ()) -> str:
    """pydantic's errors as one line after ``what``, without its links: each error as
    ``field=value: message`` (the value left out where the message starts with ``field=``
    already, and for a check of the whole input, whose message names what it is about; a value
    longer than 80 characters cut, ending in ``…``), joined by ``; ``. With more than one error
    the fields come first, ``bad hyperparameters (2: clip_range, log_std_init): ...``, so that a
    reason cut to :data:`FAILURE_REASON_BYTES` still names them all. Given the ``known`` names
    (a model's fields), a name the model forbids is ``name: unknown hyperparameter; known: a,
    b, ...`` rather than pydantic's "Extra inputs are not permitted". The jobs' failure reasons
    and ``ensemble-trader train agents`` use this one form."""
    known = tuple(known)
    errors = exc.errors(include_url=False)
    problems = []
    for error in errors:
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(map(str, error["loc"]))
        if known and error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown hyperparameter; known: {', '.join(known)}")
        elif not where or message.startswith(f"{where}="):
            problems.append(message)
        else:
            shown = repr(error["input"])
            problems.append(f"{where}={shown if len(shown) <= 80 else shown[:79] + '…'}: {message}")
    if len(errors) > 1:
        what += f" ({len(errors)}: {', '.join('.'.join(map(str, e['loc'])) or '(the whole input)' for e in errors)})"
    return " ".join(f"{what}: {'; '.join(problems)}".split())


def failure_reason(exc: Exception) -> str:
    """What a failed job reports: the error in one line (pydantic's multi-line report as
    :func:`validation_problems`; any other message with its line breaks made spaces)."""
    text = validation_problems(exc, f"invalid {exc.title}") if isinstance(exc, ValidationError) else str(exc)
    return " ".join(text.split())


def capped(text: str, limit: int = FAILURE_REASON_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (never inside a character), ending in
    ``…`` where it was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    mark = "…"
    return data[: limit - len(mark.encode("utf-8"))].decode("utf-8", errors="ignore") + mark


class UnexpectedJobError(Exception):
    """How the container job reports an error that is not one of its own (not an
    :class:`EnsembleTraderError`): the error's type first, whose message alone may say little
    (``'close'`` for a KeyError, nothing for a MemoryError)."""

    def __init__(self, cause: BaseException):
        text = str(cause)
        super().__init__(f"{type(cause).__name__}: {text}" if text else type(cause).__name__)


def report_failure(job: str, exc: Exception, failure_file: Path = FAILURE_FILE) -> None:
    """Print the reason to stderr and, inside a SageMaker container, to its failure file: one
    line (:func:`failure_reason`), cut to the :data:`FAILURE_REASON_BYTES` SageMaker shows
    (pydantic's report, several lines with a link each, was written as it was, cut at 1,000
    characters rather than bytes)."""
    reason = failure_reason(exc)
    print(f"{job} failed: {reason}", file=sys.stderr)
    if failure_file.parent.is_dir():
        failure_file.write_text(capped(reason), encoding="utf-8")
