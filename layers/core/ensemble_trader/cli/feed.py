"""``ensemble-trader feed replay``: put bars on a Kinesis stream, as a live feed would.

Works against the local stack (``ET_AWS_ENDPOINT_URL`` set, e.g. by ``ensemble-trader local
up``) or real AWS (credentials from the usual chain). Several symbols are merged by bar time so
they interleave as they would live; the partition key is the symbol, so each symbol's bars stay
in order on their shard. Each symbol comes from one source: two sources of one symbol (two
``synth:`` specs both named SYN, or one source spelled twice) are refused before anything is put.
So are bars dated after now plus the lead the stages allow
(:data:`~ensemble_trader.runtime.stage.MAX_LEAD_SECONDS`): the features stage would dead-letter
each of them (a ``synth:`` spec's daily bars start 2000-01-03, so a long one reaches past today).
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ensemble_trader.domain.bars import BarSeries
    from ensemble_trader.ports import StreamPublisher

CHUNK = 500
MIN_RATE = 1 / 86_400
"""The slowest pace ``--rate`` (and :func:`replay_bars`) takes other than 0: one bar a day,
daily bars at the pace they happened. A replay waits ``1 / rate`` seconds between bars, so a
slower rate is a wait no one means (``--rate 1e-9`` slept 31 years before the second bar and
``1e-300`` died in an OverflowError traceback from ``time.sleep``)."""


def _bar_streams() -> tuple[str, ...]:
    from ensemble_trader import constants

    return tuple(s for s in constants.STREAMS if not any(s in f.outputs for f in constants.FUNCTIONS))


BAR_STREAMS = _bar_streams()
"""The streams that take bars from outside: those no function writes (``market-data``); the
features and regime stages write the others."""


def bar_stream(text: str) -> str:
    """``--stream``: a stream that takes bars — a logical name of :data:`BAR_STREAMS`, or a
    physical name. Any other logical name of the app (``features``, ``market-state``, a queue, a
    table), or the physical name ``et-<stage>-<logical>`` of another stream, is refused: its
    consumer would dead-letter every bar."""
    import re

    from ensemble_trader import constants

    logical = {*constants.STREAMS, *constants.QUEUES, *(t.logical for t in constants.TABLES),
               constants.EVENT_BUS, constants.MODEL_BUCKET}
    others = [s for s in constants.STREAMS if s not in BAR_STREAMS]
    stage_name = re.fullmatch(r"et-[a-z][a-z0-9-]*?-(" + "|".join(map(re.escape, others)) + ")", text)
    if text in BAR_STREAMS or (text not in logical and not stage_name):
        return text
    what = "a stream of the pipeline that carries no bars" if text in others or stage_name else "not a stream"
    raise argparse.ArgumentTypeError(
        f"{text!r} is {what}: bars go on {' or '.join(BAR_STREAMS)} (or its physical name et-<stage>-market-data)")


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import at_least

    feed = sub.add_parser("feed", help="replay bars onto Kinesis (local stack or AWS)")
    feed_sub = feed.add_subparsers(dest="feed_command", metavar="SUBCOMMAND", required=True)
    p = feed_sub.add_parser("replay", help="put bars on a Kinesis stream, partition key = symbol")
    p.add_argument("--bars", action=_AppendSource, required=True,
                   help="a bars CSV or a data spec (arch:sp500, arch:nasdaq, shared:<name>, "
                        "synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]); repeatable, each source once")
    p.add_argument("--stream", type=bar_stream, default=BAR_STREAMS[0],
                   help=f"the stream that takes bars: logical ({', '.join(BAR_STREAMS)}, qualified with ET_STAGE) or "
                        "a physical name (the other streams of the pipeline carry feature vectors and market "
                        "states, and are refused)")
    p.add_argument("--rate", type=replay_rate, default=0.0,
                   help="bars per second: 0 (as fast as possible, the default) or at least 1/86400 (one bar a day)")
    p.add_argument("--limit", type=at_least(1), default=None, help="replay at most N bars in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_replay)


def rate_problem(rate: float) -> str | None:
    """Why ``rate`` (bars per second) is no pace of a replay, or None: it must be 0 (as fast as
    possible) or a finite number >= :data:`MIN_RATE`."""
    import math

    if not isinstance(rate, bool) and isinstance(rate, int | float) and (
            rate == 0 or (math.isfinite(rate) and rate >= MIN_RATE)):
        return None
    return (f"must be 0 (as fast as possible) or a finite number >= 1/86400 = {MIN_RATE:.4g} (one bar a day): "
            "a replay waits 1/rate seconds between bars")


def replay_rate(text: str) -> float:
    """``--rate``: bars per second, 0 or at least :data:`MIN_RATE` (else a usage error naming it)."""
    from ensemble_trader.cli import at_least

    rate = at_least(0.0, float)(text)
    problem = rate_problem(rate)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return rate


class _AppendSource(argparse.Action):
    """``--bars``, repeatable: a source named twice (the same spec, or the same file by another
    path) is a usage error, since every one of its bars would be put on the stream twice."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        given: list[str] = list(getattr(namespace, self.dest, None) or [])
        text = str(values)
        key = _source_key(text)
        earlier = next((g for g in given if _source_key(g) == key), None)
        if earlier is not None:
            same = "" if earlier == text else f" (as {earlier})"
            parser.error(f"argument --bars: {text!r} is named twice{same}: its bars would be sent twice")
        setattr(namespace, self.dest, [*given, text])


def _source_key(text: str) -> str:
    """What identifies a source: an existing file by its real path, anything else by its text."""
    path = Path(text)
    return str(path.resolve()) if path.is_file() else text


@dataclass(frozen=True)
class ReplayResult:
    """What a replay put: ``bars`` records in all (the injected ones included), ``symbols`` the
    symbols of the bars actually sent (in the order of their first bar), ``bars_by_symbol`` how
    many bars of each, ``unsent`` the symbols given whose bars were none of them (``--limit``
    reached first, or an empty series)."""

    bars: int
    seconds: float
    symbols: tuple[str, ...]
    bars_by_symbol: dict[str, int] = field(default_factory=dict)
    unsent: tuple[str, ...] = ()
    injected: int = 0

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.seconds if self.seconds > 0 else float("inf")


def interleave(series: Sequence[BarSeries], limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """``(symbol, Bar JSON)`` of every series merged by bar time (ties: the order given)."""
    heads = [(int(s.timestamp[0].astype("int64")), k, 0) for k, s in enumerate(series) if len(s)]
    heapq.heapify(heads)
    produced = 0
    while heads and (limit is None or produced < limit):
        _, k, i = heapq.heappop(heads)
        s = series[k]
        yield s.symbol, s.bar(i).model_dump_json().encode()
        produced += 1
        if i + 1 < len(s):
            heapq.heappush(heads, (int(s.timestamp[i + 1].astype("int64")), k, i + 1))


def _check_distinct_symbols(sources: Sequence[tuple[str, BarSeries]]) -> None:
    """Refuse two series of one symbol (``sources``: (where it came from, series)), naming both.

    The consumers key a bar by (symbol, timestamp): of two series with the same symbol and
    timestamps the second's bars are skipped downstream as duplicates (nothing dead-lettered,
    while the replay counts them as put), and with other timestamps they would be merged into one
    series of that symbol."""
    from ensemble_trader.domain.errors import DataError

    first: dict[str, str] = {}
    for origin, s in sources:
        if s.symbol in first:
            raise DataError(
                f"{first[s.symbol]} and {origin} both hold symbol {s.symbol}: the consumers key a bar by "
                "(symbol, timestamp), so one source's bars would be skipped as duplicates or mixed into the "
                "other's series; give each source its own symbol (synth:<scenario>:<seed>:<bars>:<symbol>)"
            )
        first[s.symbol] = origin


def _check_not_future(
    sources: Sequence[tuple[str, BarSeries]],
    limit: int | None,
    *,
    now: float,
    max_lead_seconds: float | None = None,
) -> None:
    """Refuse bars that would be put dated more than ``max_lead_seconds`` (default: the stages'
    :data:`~ensemble_trader.runtime.stage.MAX_LEAD_SECONDS`) after ``now`` (seconds since the
    epoch), naming how many, the first of them and how to leave them out.

    The features stage dead-letters a bar dated more than that after it reached the stream (a
    future date would make every later bar look like a redelivery), so a replay that put them
    would report them all put while each one went to ``features-dlq``. ``sources``: (where it came
    from, series); ``limit``: the bars to put in all, earliest first (:func:`interleave`)."""
    import numpy as np

    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.runtime.stage import MAX_LEAD_SECONDS, iso_utc

    lead = MAX_LEAD_SECONDS if max_lead_seconds is None else max_lead_seconds
    cutoff = int(now * 1e9) + int(lead * 1e9)
    times = {origin: s.timestamp.astype("datetime64[ns]").astype(np.int64) for origin, s in sources}
    total = sum(len(t) for t in times.values())
    put = total if limit is None else min(limit, total)
    # the merge by time puts every series' bars up to the cutoff before any bar after it
    in_time = {origin: int(np.searchsorted(t, cutoff, side="right")) for origin, t in times.items()}
    allowed = sum(in_time.values())
    if put <= allowed:
        return
    reaching = [(origin, s) for origin, s in sources if in_time[origin] < len(s)]
    first_ns, first_symbol = min((int(times[origin][in_time[origin]]), s.symbol) for origin, s in reaching)
    per_source = "; ".join(f"{origin}: its first {in_time[origin]:,} of {len(s):,} bars" for origin, s in reaching)
    raise DataError(
        f"{put - allowed:,} of the {put:,} bars to put are dated more than {lead:,.0f} s after now "
        f"({iso_utc(int(now) * 1_000_000_000)}), the first {first_symbol} {iso_utc(first_ns)}: the features stage "
        f"dead-letters a bar dated more than {lead:,.0f} s after it reaches the stream, so nothing was put. Put "
        f"only the bars up to now: --limit {allowed} (the earliest bars of all sources), or fewer bars from each "
        f"source that reaches past now ({per_source}; a synth: spec's daily bars start 2000-01-03)"
    )


def replay_bars(
    series: Sequence[BarSeries],
    publisher: StreamPublisher,
    stream: str,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    inject: Sequence[tuple[str, bytes]] = (),
    on_progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
    now: Callable[[], float] = time.time,
    max_lead_seconds: float | None = None,
) -> ReplayResult:
    """Put the bars of ``series`` (merged by time) on ``stream``.

    ``inject`` records (partition key, data) are spread evenly among the bars — the demo uses
    them to show malformed input reaching the dead-letter queue while the rest flows.

    ``rate`` > 0 paces the feed at that many bars per second (in chunks of at most one second's
    bars, each sent when its first bar is due: nothing waits after the last one); 0 sends as fast
    as PutRecords allows (chunks of 500). A rate other than 0 below :data:`MIN_RATE` (one bar a
    day), or not a finite number, is a DataError before anything is put. ``on_progress(n)`` is called
    after each chunk with the number of records it held. Two series of one symbol are refused
    (:class:`~ensemble_trader.domain.errors.DataError`) before anything is put, and so are bars
    to put dated more than ``max_lead_seconds`` (default: the stages' ``MAX_LEAD_SECONDS``, 300 s)
    after ``now()``: the features stage would dead-letter each of them.
    """
    problem = rate_problem(rate)
    if problem:
        from ensemble_trader.domain.errors import DataError

        raise DataError(f"rate={rate!r}: {problem}")
    sources = [(f"series {k + 1} ({s.symbol})", s) for k, s in enumerate(series)]
    _check_distinct_symbols(sources)
    _check_not_future(sources, limit, now=now(), max_lead_seconds=max_lead_seconds)
    records = list(interleave(series, limit))
    sent: dict[str, int] = {}
    for symbol, _ in records:
        sent[symbol] = sent.get(symbol, 0) + 1
    step = len(records) // (len(inject) + 1) if inject else 0
    for n, record in enumerate(inject, start=1):
        records.insert(n * step + n - 1, record)
    chunk = CHUNK if rate <= 0 else max(1, min(CHUNK, int(rate)))
    t0 = clock()
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        if rate > 0:
            ahead = start / rate - (clock() - t0)
            if ahead > 0:
                sleep(ahead)
        publisher.put(stream, part)
        if on_progress is not None:
            on_progress(len(part))
    unsent = tuple(s.symbol for s in series if s.symbol not in sent)
    return ReplayResult(len(records), clock() - t0, tuple(sent), sent, unsent, len(inject))


def _run_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ensemble_trader.adapters.aws._names import physical
    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.marketdata import load_bars
    from ensemble_trader.runtime.settings import get_settings

    sources = [(f"--bars {spec}", s) for spec in args.bars for s in load_bars(spec)]
    _check_distinct_symbols(sources)
    _check_not_future(sources, args.limit, now=time.time())  # named by spec, before anything is set up
    series = [s for _, s in sources]
    total = sum(len(s) for s in series)
    if args.limit is not None:
        total = min(total, args.limit)
    settings = get_settings()
    publisher = KinesisPublisher(settings=settings)
    target = physical(args.stream, settings)
    where = settings.aws_endpoint_url or "AWS"
    with tqdm(total=total, unit="bar", desc=f"replay → {target}", disable=args.no_progress, file=sys.stderr) as bar:
        result = replay_bars(series, publisher, args.stream, rate=args.rate, limit=args.limit, on_progress=bar.update)
    print(
        f"put {result.bars:,} bars of {', '.join(result.symbols) or 'no symbol'} on {target} ({where}) in "
        f"{result.seconds:.2f} s ({result.bars_per_second:,.0f} bars/s; {publisher.retried_entries} entries retried)"
    )
    if len(result.symbols) > 1:
        print(f"bars per symbol: {_per_symbol(result)}")
    empty = {s.symbol for s in series if not len(s)}
    cut = [symbol for symbol in result.unsent if symbol not in empty]
    if cut:
        print(f"not sent (--limit {args.limit:,} reached before their first bar): {', '.join(cut)}")
    if empty:
        print(f"not sent (no bars): {', '.join(symbol for symbol in result.unsent if symbol in empty)}")
    return 0


def _per_symbol(result: ReplayResult) -> str:
    """``SPX 500, IXIC 499``: the bars sent of each symbol."""
    return ", ".join(f"{symbol} {n:,}" for symbol, n in result.bars_by_symbol.items())
