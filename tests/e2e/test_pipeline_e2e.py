"""End to end: 1,000 real bars replayed through Kinesis, the features Lambda and its DLQ.

Every record put on market-data must be accounted for: a FeatureVector on the features stream
or a dead letter with its reason (out + rejected = in), with nothing emitted twice.
"""

from __future__ import annotations

import base64

import pytest
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.cli.demo import malformed_records
from ensemble_trader.cli.feed import replay_bars
from ensemble_trader.domain.models import FeatureVector
from ensemble_trader.marketdata import load_arch


@pytest.mark.slow
def test_1000_bars_every_one_accounted_for(clean_stack):
    stack = clean_stack.stack
    series = [load_arch("sp500")[1000:1497], load_arch("nasdaq")[1000:1497]]
    bad = malformed_records()
    esm = clean_stack.emulator(["features"])
    replay = replay_bars(series, KinesisPublisher(settings=stack.settings), "market-data", inject=bad)
    assert replay.bars == 1000 == 994 + len(bad)

    stats = esm.run_until_drained()["features"]

    records_in = clean_stack.new_records("market-data")
    out = [FeatureVector.parse(data) for _, data in clean_stack.new_records("features")]
    letters = stack.read_queue("features-dlq")
    assert len(records_in) == 1000
    assert len(out) + len(letters) == len(records_in)
    assert len({(v.symbol, v.timestamp) for v in out}) == len(out) == 994
    for symbol, s in (("SPX", series[0]), ("IXIC", series[1])):
        got = [v.bar for v in out if v.symbol == symbol]
        assert got == list(s.bars())  # same bars, same order
    rejected = sorted(base64.b64decode(letter["record"]["kinesis"]["data"]) for letter in letters)
    assert rejected == sorted(data for _, data in bad)
    assert all(letter["reason"].startswith("invalid Bar") for letter in letters)
    # the replay packs each symbol's bars 10 to a record: far fewer Kinesis records than bars
    raw = list(stack.iter_stream("market-data", since=clean_stack.marks["market-data"]))
    assert stats.records_received == len(raw) <= 1000 / 8 and stats.messages_received == 1000
    assert stats.item_failures == 0 and stats.dead_lettered == 0
