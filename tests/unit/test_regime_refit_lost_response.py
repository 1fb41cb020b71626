"""The refit's pointer write and its provenance.

A conditional pointer write that S3 committed but whose response was lost (a read timeout, a
5xx) is retried by botocore with the same ``If-Match``, and S3 answers 412: the pointer pins the
refit's version, so the refit is published and its RegimeModelPublished goes out (it reported
``skipped`` and the event was lost for good). A published refit names only the symbols whose
rows it was fitted on."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError
from ensemble_trader.adapters.aws.s3 import S3ModelStore
from ensemble_trader.adapters.memory.fakes import MemoryEventBus, MemoryModelStore, MemoryStreamPublisher
from ensemble_trader.domain.errors import ConcurrencyError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.regime import RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings
from ensemble_trader.runtime.stage import StreamSink

from tests.unit.test_regime_refit import HistoryTable

NOW = datetime(2030, 3, 4, 22, tzinfo=UTC)


class FakeS3:
    """get/put with ETags and S3's conditional puts. ``lose`` conditional puts commit, but their
    response is lost and botocore's retry of the same request (same condition) gets 412."""

    def __init__(self, lose: int = 0) -> None:
        self.objects: dict[str, bytes] = {}
        self.lose = lose
        self.puts = 0

    @staticmethod
    def _etag(body: bytes) -> str:
        return '"' + hashlib.md5(body).hexdigest() + '"'

    def get_object(self, Bucket, Key):
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        body = self.objects[Key]
        return {"Body": io.BytesIO(body), "ETag": self._etag(body)}

    def put_object(self, Bucket, Key, Body, IfMatch=None, IfNoneMatch=None):
        self.puts += 1
        current = self.objects.get(Key)
        if (IfMatch is not None and (current is None or self._etag(current) != IfMatch)) or (
            IfNoneMatch == "*" and current is not None
        ):
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.objects[Key] = bytes(Body)
        if (IfMatch or IfNoneMatch) and self.lose:
            self.lose -= 1  # committed; the response is lost and the same request is sent again
            return self.put_object(Bucket, Key, Body, IfMatch=IfMatch, IfNoneMatch=IfNoneMatch)
        return {}

    def get_paginator(self, name):
        objects = self.objects

        class Paginator:
            def paginate(self, Bucket, Prefix):
                return [{"Contents": [{"Key": k} for k in sorted(objects) if k.startswith(Prefix)]}]

        return Paginator()


@pytest.fixture(scope="module")
def setup():
    default_dir = get_settings().models_dir / "regime"
    default = RegimeModel.load(default_dir)
    table = HistoryTable()
    # SYNA: 900 bars of history; ONE: a single ready row (WARMUP_BARS bars); QQQ: no row at all
    for symbol, bars in (("SYNA", 900), ("ONE", WARMUP_BARS)):
        step, engine, state, states = RegimeStep(default), FeatureEngine(symbol), None, []
        for bar in generate("realistic", bars, 1, symbol=symbol).series.bars():
            state, outputs, _ = step.apply(state, engine.update(bar))
            states.extend(outputs)
        registry.MarketStateSink(StreamSink(MemoryStreamPublisher(), "market-state"), table).emit(states)
    return load_module("regime", "refit"), default_dir, default, table


@pytest.mark.parametrize("pointer_before", [False, True], ids=["first-pointer", "pointer-moved"])
def test_a_committed_pointer_write_whose_response_was_lost_is_published(setup, shifted_regime_model, pointer_before):
    refit, default_dir, default, table = setup
    client = FakeS3()
    store = S3ModelStore(client, settings=get_settings(), bucket="models")
    previous = default.version
    if pointer_before:  # If-Match on the pinned pointer's ETag; else If-None-Match: *
        pinned = shifted_regime_model(default, 0.05)
        registry.publish(store, pinned, previous=None)
        previous = pinned.version
    client.lose = 1
    bus = MemoryEventBus()
    out = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=NOW)
    assert client.lose == 0  # the lost response happened
    # was: published False, skipped "... changed while it was written", no event
    assert out["published"] and "skipped" not in out and out["previous"] == previous
    assert registry.pinned_version(store) == out["version"]
    assert [(e.version, e.previous) for e in bus.events] == [(out["version"], previous)]


def test_a_refused_write_after_which_the_pointer_pins_the_model_is_a_publish(shifted_regime_model):
    default = RegimeModel.load(get_settings().models_dir / "regime")
    first, refit = (shifted_regime_model(default, by) for by in (0.1, 0.2))

    class LostResponse(MemoryModelStore):
        """The write lands; the answer to its retry is a refusal."""

        def replace(self, key, data, expected):
            super().replace(key, data, expected)
            raise ConcurrencyError(f"model artifact {key!r} changed while it was written")

    store = LostResponse()
    registry.publish(store, first, previous=None)
    registry.publish(store, refit, previous=first.version, expected_pin=first.version)  # no error
    assert registry.pinned_version(store) == refit.version
    # a refusal with another version pinned (an operator's publish in between) still raises:
    # test_regime_registry's race test, whose conditional write now takes this path too


def test_a_pointer_already_on_the_refits_version_is_published_not_skipped(shifted_regime_model):
    """Another run of the same refit (the schedule's event delivered twice) pinned the same
    content-addressed version first: this run publishes too, without writing the pointer again."""
    default = RegimeModel.load(get_settings().models_dir / "regime")
    first, refit = shifted_regime_model(default, 0.1), shifted_regime_model(default, 0.2)
    store = MemoryModelStore()
    registry.publish(store, first, previous=None)
    registry.publish(store, refit, previous=first.version, expected_pin=first.version)  # the other run
    pointer = store.read(registry.POINTER)
    registry.publish(store, refit, previous=first.version, expected_pin=first.version)  # no error
    assert store.read(registry.POINTER) == pointer


def test_the_manifest_and_the_event_name_only_the_symbols_whose_rows_were_fitted(setup, caplog):
    refit, default_dir, default, table = setup
    store, bus = MemoryModelStore(), MemoryEventBus()
    out = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA", "QQQ", "ONE"]}, now=NOW)
    assert out["published"] and out["n_samples"] == 900 - (WARMUP_BARS - 1)
    assert out["symbols_without_rows"] == ["QQQ", "ONE"]
    info = registry.load_version(store, out["version"]).info
    assert info["symbols"] == ["SYNA"]  # was ["SYNA", "QQQ", "ONE"]
    assert [e.symbols for e in bus.events] == [["SYNA"]]
    assert any("without ready history rows" in r.getMessage() for r in caplog.records)

    # every symbol contributing: no key in the result
    out = refit.run_refit(MemoryModelStore(), table, MemoryEventBus(), default_dir, {"symbols": ["SYNA"]}, now=NOW)
    assert out["published"] and "symbols_without_rows" not in out
