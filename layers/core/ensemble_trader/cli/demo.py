"""``ensemble-trader demo`` (``make demo``): the pipeline end to end in the local stack.

Starts the local stack, replays the S&P 500 and NASDAQ daily bars shipped with ``arch`` (5,031
each) plus a handful of deliberately malformed records through Kinesis, runs the emulated
event-source mappings over every deployed function until the pipeline is drained, and prints a
summary: the mappings' counters, end-to-end throughput, and one section per stage from
``ensemble_trader.local.reports.<function>`` when such a module exists.

The market stages (features, regime: they only write streams) see the whole history; the
trading stages (meta-agent, orders) are attached for the last ``--trade-bars`` bars of each symbol,
as if they went live after the market state had warmed up. That keeps the demo to minutes: each
order costs a dozen DynamoDB round trips to moto. The paper account is split equally between the
symbols (``ET_ORDERS_DEFAULT_ALLOCATION`` = 1/number of symbols, unless it is set).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ensemble_trader.constants import FunctionSpec
    from ensemble_trader.runtime.orders import OrdersSettings

TRADE_BARS = 250

MALFORMED = (
    ("SPX", {"symbol": "SPX", "timestamp": "2010-06-01T00:00:00+00:00", "open": 1070.0, "high": 1060.0,
             "low": 1050.0, "close": 1065.0, "volume": 1.0}),  # high below open/close
    ("SPX", {"symbol": "SPX", "timestamp": "2010-06-02T00:00:00", "open": 1070.0, "high": 1080.0,
             "low": 1060.0, "close": 1075.0, "volume": 1.0}),  # timestamp without a time zone
    ("IXIC", {"symbol": "IXIC", "timestamp": "2010-06-03T00:00:00+00:00", "open": -5.0, "high": 2300.0,
              "low": 2200.0, "close": 2250.0, "volume": 1.0}),  # negative price
    ("ixic", {"symbol": "ixic", "timestamp": "2010-06-04T00:00:00+00:00", "open": 2250.0, "high": 2300.0,
              "low": 2200.0, "close": 2260.0, "volume": 1.0}),  # symbol not in the ticker format
    ("SPX", {"symbol": "SPX", "open": 1070.0, "high": 1080.0, "low": 1060.0, "close": 1075.0}),  # no timestamp
    ("SPX", None),  # not JSON at all
)


def malformed_records() -> list[tuple[str, bytes]]:
    """The deliberately bad records the demo injects (each fails validation for its own reason)."""
    return [
        (key, b"<bar>this is not JSON</bar>" if doc is None else json.dumps(doc).encode())
        for key, doc in MALFORMED
    ]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="replay S&P 500 + NASDAQ bars through the local stack and summarise")
    from ensemble_trader.cli import at_least

    p.add_argument("--limit", type=at_least(1), default=None,
                   help="replay only the first N bars of each symbol (default: all 5,031)")
    p.add_argument("--trade-bars", type=at_least(0), default=TRADE_BARS,
                   help="attach the trading stages for the last N bars of each symbol "
                        f"(default {TRADE_BARS}, about a year; 0 = the whole history)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def split_stages(functions: Sequence[FunctionSpec]) -> tuple[list[FunctionSpec], list[FunctionSpec]]:
    """(market stages, trading stages): a market stage only writes Kinesis streams (features,
    regime); the others (meta-agent, orders) decide and trade."""
    from ensemble_trader import constants

    market = [f for f in functions if f.outputs and all(o in constants.STREAMS for o in f.outputs)]
    return market, [f for f in functions if f not in market]


@contextmanager
def env_default(name: str, value: str) -> Iterator[str]:
    """Set the environment variable ``name`` to ``value`` unless it is set; restore it afterwards.
    Yields the value in force."""
    previous = os.environ.get(name)
    if previous is None:
        os.environ[name] = value
    try:
        yield os.environ[name]
    finally:
        if previous is None:
            os.environ.pop(name, None)


def _checked_orders_settings(functions: Sequence[FunctionSpec]) -> OrdersSettings | None:
    """The orders stage's settings (``ET_ORDERS_*``, ``ET_RISK_*``) read before the stack starts,
    when the orders function is deployed (else None): a bad variable raises
    :class:`~ensemble_trader.runtime.settings.EnvironmentSettingError` naming it at once, instead
    of failing every intent of the run and then the orders section of the summary."""
    if not any(f.logical == "orders" for f in functions):
        return None
    from ensemble_trader.runtime.orders import read_order_settings

    settings, _limits = read_order_settings()  # every bad variable of both prefixes named at once
    return settings


def _stopped_by(exc: BaseException) -> BaseException | None:
    """The interruption (``KeyboardInterrupt``) or termination (SIGTERM,
    :class:`~ensemble_trader.local.servers.Terminated`) ``exc`` is, or was raised while handling
    (a cleanup that failed because a server was gone by then); None when it is neither."""
    from ensemble_trader.local.servers import Terminated

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, Terminated)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _run(args: argparse.Namespace) -> int:
    """The demo. Interrupted (Ctrl-C) or terminated (SIGTERM, raised as an exception so that the
    stack's cleanup runs: servers stopped, Redis' folder removed), one line on stderr and exit
    130 or 143."""
    from ensemble_trader.local.servers import Terminated, sigterm_raises

    try:
        with sigterm_raises():
            return _demo(args)
    except BaseException as exc:
        cause = _stopped_by(exc)
        if cause is None:
            raise
        if isinstance(cause, Terminated):
            print("ensemble-trader demo: terminated (SIGTERM); the local stack is stopped", file=sys.stderr)
            return 128 + cause.signum
        print("ensemble-trader demo: interrupted; the local stack is stopped", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.cli.feed import replay_bars
    from ensemble_trader.cli.progress import log_lines_above_bars, shows_progress
    from ensemble_trader.local.esm import EventSourceMappingEmulator, drain, summarize_stats
    from ensemble_trader.local.functions import deployed_functions
    from ensemble_trader.local.stack import LocalStack
    from ensemble_trader.marketdata import load_arch

    # a handler invocation that only skipped redelivered records flushes no metrics; Powertools
    # warns about that on every such call, which is noise in a demo
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    t_start = time.perf_counter()
    series = [load_arch("sp500"), load_arch("nasdaq")]
    if args.limit is not None:
        series = [s[: args.limit] for s in series]
    bad = malformed_records()
    functions = deployed_functions()
    market, trading = split_stages(functions)
    n_trade = min(args.trade_bars, min(len(s) for s in series)) if trading and args.trade_bars > 0 else 0
    split = [len(s) - n_trade for s in series] if n_trade else [0] * len(series)
    print(f"ensemble-trader demo: {', '.join(f'{s.symbol} {len(s):,} bars' for s in series)}, "
          f"{len(bad)} malformed records; functions: {', '.join(f.logical for f in functions) or 'none'}")
    if n_trade:
        print(f"market stages ({', '.join(f.logical for f in market)}) run over the whole history; the trading "
              f"stages ({', '.join(f.logical for f in trading)}) are attached for the last {n_trade:,} bars "
              f"of each symbol (--trade-bars)")
    allocation = env_default("ET_ORDERS_DEFAULT_ALLOCATION", f"{1 / len(series):.6g}")
    with allocation:
        orders = _checked_orders_settings(functions)  # a bad ET_ORDERS_* / ET_RISK_* fails here, not at the end
        with LocalStack(quiet=True) as stack:
            if orders is not None:
                print(f"paper account split between the symbols: {orders.default_allocation:.0%} of equity each "
                      "(ET_ORDERS_DEFAULT_ALLOCATION)")
            print(f"local stack: moto {stack.endpoint_url}, "
                  f"{'fakeredis (fallback!)' if stack.redis.fake else 'redis-server'} {stack.redis_url}")
            # a stage that fails on every record (e.g. its model is not trained yet) is switched off
            # after 20 dead letters in a row instead of bisecting through all 10,000 records
            emulators = [EventSourceMappingEmulator(stack, market if n_trade else functions, disable_after_errors=20)]
            publisher = KinesisPublisher(settings=stack.settings)
            total_in = sum(len(s) for s in series) + len(bad)
            first = functions[0].logical if functions else None
            replayed, replay_s, t_drain = 0, 0.0, time.perf_counter()
            phases = ([[s[:k] for s, k in zip(series, split, strict=True)], [s[k:] for s, k in zip(series, split, strict=True)]]
                      if n_trade else [series])
            # the dead letters' WARNING lines go above the bar, not through it, on a terminal
            with tqdm(total=total_in, unit="rec", desc="pipeline (bars through features)", file=sys.stderr,
                      disable=args.no_progress) as bar, \
                    log_lines_above_bars(sys.stderr, enabled=shows_progress(args.no_progress, sys.stderr)):
                def on_batch(function: str, n: int) -> None:
                    if function == first:
                        bar.update(n)
                    else:
                        bar.set_postfix({k: v.messages_received for e in emulators for k, v in e.stats().items()
                                         if k != first})

                for number, part in enumerate(phases):
                    if number == 1:  # the trading stages start reading from here on
                        emulators.append(EventSourceMappingEmulator(stack, trading, start_position="LATEST",
                                                                    disable_after_errors=20))
                    replay = replay_bars(part, publisher, "market-data", inject=bad if number == 0 else ())
                    replayed += replay.bars
                    replay_s += replay.seconds
                    stats = drain(emulators, on_batch=on_batch)
            drain_s = time.perf_counter() - t_drain - replay_s

            print()
            print(f"replayed {replayed:,} records in {replay_s:.2f} s ({replayed / replay_s:,.0f} records/s into Kinesis)")
            print(f"pipeline drained in {drain_s:.2f} s: {replayed / drain_s:,.0f} bars/s through the whole pipeline "
                  f"(moto + Redis + handlers on this machine)")
            print()
            print(summarize_stats(stats))
            for s in stats.values():
                if s.invoke_seconds > 0:
                    print(f"  {s.function}: {s.messages_received / s.invoke_seconds:,.0f} messages/s inside the handler "
                          f"({s.messages_received:,} in {s.records_received:,} records, {s.invocations:,} invocations, "
                          f"{1e3 * s.invoke_seconds / max(s.invocations, 1):.1f} ms each)")
            for spec in functions:
                try:
                    report = importlib.import_module(f"ensemble_trader.local.reports.{spec.logical}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"ensemble_trader.local.reports.{spec.logical}":
                        raise
                    continue
                print()
                print(report.summarize(stack))
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s")
    return 0
