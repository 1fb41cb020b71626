"""The regime Lambda and its refit entry through the local stack (moto server + real Redis)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.models import REGIMES, FeatureVector, MarketState
from ensemble_trader.domain.regime import RegimeDetector, RegimeModel, label_series
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_handler, load_module
from ensemble_trader.runtime.stage import stage_stats

N_BARS = WARMUP_BARS + 159  # 160 ready rows per symbol


@pytest.fixture(scope="module")
def data():
    """Synthetic bars of two symbols and their feature vectors, interleaved bar by bar."""
    series = {s: generate("easy", N_BARS, seed, symbol=s).series for s, seed in (("SYNA", 1), ("SYNB", 2))}
    vectors = {}
    for symbol, bars in series.items():
        engine = FeatureEngine(symbol)
        vectors[symbol] = [engine.update(bar) for bar in bars.bars()]
    interleaved = [v for pair in zip(vectors["SYNA"], vectors["SYNB"], strict=True) for v in pair]
    return series, interleaved


def market_states(records) -> list[MarketState]:
    return [MarketState.parse(body) for _, body in records]


def cached(stack, symbol: str) -> bytes | None:
    return stack.redis_client().get(f"{stack.stage}:regime:{symbol}")


def test_market_states_history_events_and_redelivery(clean_stack, data):
    series, vectors = data
    stack = clean_stack.stack
    esm = clean_stack.emulator(["regime"])
    clean_stack.put_records("features", vectors)
    esm.run_until_drained()

    records = clean_stack.new_records("market-state")
    states = market_states(records)
    assert len(states) == 2 * N_BARS
    assert {key for key, _ in records} == {"SYNA", "SYNB"}
    assert all(key == s.symbol for (key, _), s in zip(records, states, strict=True))

    # the Lambda's labels are exactly those of the offline path over the same bars
    model = RegimeModel.load(stack.settings.models_dir / "regime")
    for symbol, bars in series.items():
        mine = [s for s in states if s.symbol == symbol]
        assert [s.timestamp for s in mine] == [bar.timestamp for bar in bars.bars()]
        offline = label_series(RegimeDetector(model), bars)
        assert [s.regime.regime for s in mine] == [REGIMES[i] for i in offline.regime]
        np.testing.assert_allclose([s.regime.probabilities for s in mine], offline.probabilities, atol=1e-12)
        assert {s.regime.model_version for s in mine} == {model.version}

    # regime history: one row per bar, keyed by symbol and ISO time, with the features
    ddb = stack.client("dynamodb")
    rows = ddb.query(
        TableName=stack.name("regime-history"),
        KeyConditionExpression="symbol = :s",
        ExpressionAttributeValues={":s": {"S": "SYNA"}},
    )["Items"]
    assert len(rows) == N_BARS
    last = max(rows, key=lambda r: r["timestamp"]["S"])
    expected = [s for s in states if s.symbol == "SYNA"][-1]
    assert last["timestamp"]["S"] == expected.timestamp.isoformat()
    assert last["regime"]["S"] == expected.regime.regime.value
    assert "range_vol_1" in last["features"]["M"]

    # RegimeChanged events on the bus, one per change of the reported regime
    events = [e for e in stack.published_events() if e.get("detail-type") == "RegimeChanged"]
    changes = sum(
        1
        for symbol in series
        for a, b in zip(
            [s for s in states if s.symbol == symbol][:-1], [s for s in states if s.symbol == symbol][1:], strict=True
        )
        if a.features.ready and a.regime.regime != b.regime.regime  # warm-up shows the prior, no event
    )
    assert changes > 0 and len(events) == changes
    detail = events[0]["detail"]
    assert detail["from_regime"] != detail["to_regime"] and detail["symbol"] in series

    # redelivery of the whole batch to the same warm container: a no-op
    before = {s: cached(stack, s) for s in series}
    handler = load_handler("regime")
    response = handler(clean_stack.new_kinesis_event("features", "regime"), FakeLambdaContext("et-local-regime"))
    assert response == {"batchItemFailures": []}
    assert {s: cached(stack, s) for s in series} == before
    assert len(clean_stack.new_records("market-state")) == 2 * N_BARS
    assert stage_stats("regime").duplicates == 2 * N_BARS
    assert [e for e in stack.published_events() if e.get("detail-type") == "RegimeChanged"] == []

    # the demo's section: accounting and the timeline of each symbol
    from ensemble_trader.local.reports.regime import summarize, timelines

    per_symbol, distinct, _ = timelines(stack)
    assert distinct == 2 * N_BARS
    assert sum(p.bars for p in per_symbol["SYNA"]) == N_BARS - (WARMUP_BARS - 1)  # bars past the feature warm-up
    text = summarize(stack)
    assert "timeline SYNA" in text and "every record accounted for" in text
    assert "       0  in regime-dlq\n" in text  # no dead letters: no "with reasons:" heading over nothing
    first = per_symbol["SYNA"][0]
    assert f"{first.regime:<9}" in text and 0.0 < first.mean_confidence <= 1.0


def test_bad_records_go_to_the_dlq_with_their_reason(clean_stack, data):
    _, vectors = data
    esm = clean_stack.emulator(["regime"])
    good = vectors[:40]
    records = [(v.symbol, v.model_dump_json().encode()) for v in good]
    broken = json.loads(records[7][1])
    broken["warmup_remaining"] = -3
    records[7] = (broken["bar"]["symbol"], json.dumps(broken).encode())
    lacking = FeatureVector(bar=vectors[41].bar, values={"ret_1": 0.0}, warmup_remaining=0)
    records.append((lacking.symbol, lacking.model_dump_json().encode()))
    clean_stack.put_records("features", records)
    esm.run_until_drained()

    assert len(clean_stack.new_records("market-state")) == 39
    letters = clean_stack.stack.read_queue("regime-dlq")
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(letters) == 2 and all(letter["source"] == "regime" for letter in letters)
    assert any("warmup_remaining=-3" in r for r in reasons)
    assert any("range_vol_1" in r and "lacks" in r for r in reasons)


def test_history_keys_of_a_local_time_feed_sort_as_time_in_dynamodb(clean_stack):
    """Bars in Berlin time across the October daylight-saving change: DynamoDB returns the rows
    in key order, which must be the order the bars happened (the refit reads them so)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from ensemble_trader.domain.models import Bar

    berlin = ZoneInfo("Europe/Berlin")
    engine = FeatureEngine("DAX")
    vectors = [
        engine.update(Bar(**{**bar.model_dump(), "timestamp": bar.timestamp.astimezone(berlin)}))
        for bar in generate("easy", 72, 1, symbol="DAX", start="2024-10-26T00:00:00", freq="1h").series.bars()
    ]
    esm = clean_stack.emulator(["regime"])
    clean_stack.put_records("features", vectors)
    esm.run_until_drained()

    stack = clean_stack.stack
    rows = stack.client("dynamodb").query(
        TableName=stack.name("regime-history"),
        KeyConditionExpression="symbol = :s",
        ExpressionAttributeValues={":s": {"S": "DAX"}},
    )["Items"]
    times = [datetime.fromisoformat(r["timestamp"]["S"]).astimezone(UTC) for r in rows]
    assert len(times) == len(vectors) and times == sorted(times)  # key order is time order
    assert [r["timestamp"]["S"] for r in rows] == [v.timestamp.astimezone(UTC).isoformat() for v in vectors]


@pytest.mark.slow
def test_refit_publishes_a_new_version_that_new_containers_serve(clean_stack, data, monkeypatch):
    series, vectors = data
    stack = clean_stack.stack
    esm = clean_stack.emulator(["regime"])
    clean_stack.put_records("features", vectors)
    esm.run_until_drained()
    stack.published_events()  # drop the RegimeChanged events

    refit = load_handler("regime", module="refit")
    default = RegimeModel.load(stack.settings.models_dir / "regime")
    result = refit({"detail": {"symbols": sorted(series)}}, FakeLambdaContext("et-local-regime-refit"))
    assert result["published"] and result["previous"] == default.version
    assert result["n_samples"] == 2 * (N_BARS - (WARMUP_BARS - 1))  # ready rows only (past the feature warm-up)
    assert result["log_likelihood"] >= result["previous_log_likelihood"]

    s3 = stack.client("s3")
    bucket = stack.settings.bucket
    pointer = json.loads(s3.get_object(Bucket=bucket, Key="regime/current.json")["Body"].read())
    assert pointer == {**pointer, "version": result["version"], "previous": default.version}
    published = [e for e in stack.published_events() if e.get("detail-type") == "RegimeModelPublished"]
    assert [e["detail"]["version"] for e in published] == [result["version"]]

    from ensemble_trader.adapters.aws.s3 import S3ModelStore
    from ensemble_trader.runtime import regime_registry as registry

    served = registry.load_pinned(S3ModelStore(settings=stack.settings), stack.settings.models_dir / "regime")
    assert served.version == result["version"] and served.info["refit_of"] == default.version

    monkeypatch.delenv("ET_REGIME_SYMBOLS", raising=False)
    with pytest.raises(DataError, match="no symbols to refit on"):
        refit({"detail": {}}, FakeLambdaContext("et-local-regime-refit"))



def test_a_symbol_published_with_its_own_model_is_labelled_by_it(clean_stack, data, tmp_path, capsys, shifted_regime_model):
    from ensemble_trader.cli import main

    series, vectors = data
    stack = clean_stack.stack
    default = RegimeModel.load(stack.settings.models_dir / "regime")
    own = shifted_regime_model(default, 0.3)
    own.save(tmp_path / "own")
    assert main(["regime", "publish", "--model", str(tmp_path / "own"), "--symbol", "SYNA"]) == 0
    assert f"regime model {own.version} pinned for symbol SYNA" in capsys.readouterr().out

    esm = clean_stack.emulator(["regime"])  # a container started after the publish
    clean_stack.put_records("features", vectors)
    esm.run_until_drained()
    states = market_states(clean_stack.new_records("market-state"))
    for symbol, model in (("SYNA", own), ("SYNB", default)):
        mine = [s for s in states if s.symbol == symbol]
        assert len(mine) == N_BARS and {s.regime.model_version for s in mine} == {model.version}
        offline = label_series(RegimeDetector(model), series[symbol])
        np.testing.assert_allclose([s.regime.probabilities for s in mine], offline.probabilities, atol=1e-12)
    s3 = stack.client("s3")
    pointer = json.loads(s3.get_object(Bucket=stack.settings.bucket, Key="regime/symbols/SYNA/current.json")["Body"].read())
    assert pointer["version"] == own.version and pointer["symbol"] == "SYNA"

    # the refit refines SYNA's own model on SYNA's rows alone, and the shared one on SYNB's
    stack.published_events()
    refit = load_handler("regime", module="refit")
    result = refit({"detail": {"symbols": ["SYNA", "SYNB"]}}, FakeLambdaContext("et-local-regime-refit"))
    assert result["previous"] == default.version and result["n_samples"] == N_BARS - (WARMUP_BARS - 1)
    syna = result["symbols"]["SYNA"]
    assert set(result["symbols"]) == {"SYNA"} and syna["previous"] == own.version and syna["n_samples"] == N_BARS - (WARMUP_BARS - 1)
    assert result["published"] and syna["published"]  # EM moved both models on their own rows
    published = [e["detail"] for e in stack.published_events() if e.get("detail-type") == "RegimeModelPublished"]
    assert sorted((e["symbol_model"] or "", e["previous"], e["version"]) for e in published) == sorted(
        [("", default.version, result["version"]), ("SYNA", own.version, syna["version"])]
    )
    moved = json.loads(s3.get_object(Bucket=stack.settings.bucket, Key="regime/symbols/SYNA/current.json")["Body"].read())
    assert moved["version"] == syna["version"] and moved["previous"] == own.version
    shared = json.loads(s3.get_object(Bucket=stack.settings.bucket, Key="regime/current.json")["Body"].read())
    assert shared["version"] == result["version"] and "symbol" not in shared


def test_refit_rejects_malformed_options_naming_the_field(monkeypatch):
    options = load_module("regime", "refit").refit_options
    monkeypatch.setenv("ET_REGIME_SYMBOLS", " SPX, IXIC ,")
    assert options({}) == (["SPX", "IXIC"], 2_000)
    with pytest.raises(DataError, match=r"detail.symbols='SPX'"):
        options({"symbols": "SPX"})  # a string, not a list: not the symbols S, P, X
    for bad in ("500", 1.5, 0, True):
        with pytest.raises(DataError, match="detail.lookback_bars="):
            options({"symbols": ["SPX"], "lookback_bars": bad})
