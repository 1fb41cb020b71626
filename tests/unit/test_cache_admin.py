"""The cache maintenance path without a server: the request, glob escaping, the flush's batches
and refusals, the event-source mapping check, the handler and the CLI's deployed path (a stub
Lambda client). Against a real redis-server: tests/integration/test_cache_admin_live.py."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import fakeredis
import pytest
from botocore.exceptions import ClientError
from ensemble_trader import constants
from ensemble_trader.adapters.aws.lambda_api import EventSourceMappingCheck, invoke_json
from ensemble_trader.adapters.redis.cache import GLOB_SPECIAL, RedisCache, glob_escape
from ensemble_trader.domain.errors import InfrastructureError, InvalidMessageError
from ensemble_trader.runtime.cache_admin import (
    CACHE_STAGES,
    MAPPINGS_ENV,
    CacheAdmin,
    CacheAdminRequest,
    CacheFlushRefusedError,
    mapping_ids_from_env,
    quiet_seconds,
)
from ensemble_trader.runtime.settings import EnvironmentSettingError

# -- the request ------------------------------------------------------------------------------


def test_defaults_a_flush_is_a_dry_run_and_a_count_covers_every_stage():
    flush = CacheAdminRequest.parse({"action": "flush", "stage": "regime"})
    assert flush.dry_run and not flush.deletes and flush.symbols is None and flush.stages == ("regime",)
    count = CacheAdminRequest.parse('{"action": "count"}')
    assert count.stages == CACHE_STAGES == ("features", "regime", "meta_agent")
    named = CacheAdminRequest.parse({"action": "flush", "stage": "features", "dry_run": False,
                                     "symbols": ["SPX", "^GSPC", "SPX", "BTC/USD"]})
    assert named.deletes and named.symbols == ("SPX", "^GSPC", "BTC/USD")  # once each, in order


@pytest.mark.parametrize(
    ("payload", "field", "says"),
    [
        ({"action": "flush"}, "stage", "a flush names the stage"),
        ({"action": "flush", "stage": "feature"}, "stage", "'features', 'regime' or 'meta_agent'"),
        ({"action": "flush", "stage": "orders"}, "stage", "'features', 'regime' or 'meta_agent'"),
        ({"action": "delete", "stage": "features"}, "action", "'flush' or 'count'"),
        ({"stage": "features"}, "action", "missing"),
        ({"action": "flush", "stage": "features", "dry_run": "false"}, "dry_run", "valid boolean"),
        ({"action": "flush", "stage": "features", "dry_run": 0}, "dry_run", "valid boolean"),
        ({"action": "count", "dry_run": False}, "dry_run", "a count deletes nothing"),
        ({"action": "flush", "stage": "features", "symbols": []}, "symbols", "1 to 1000 symbols"),
        ({"action": "flush", "stage": "features", "symbols": "SPX"}, "symbols", "valid tuple"),
        ({"action": "flush", "stage": "features", "symbols": ["spx"]}, "symbols.0", "should match pattern"),
        ({"action": "flush", "stage": "features", "symbols": ["SPX", "S*"]}, "symbols.1", "should match pattern"),
        ({"action": "flush", "stage": "features", "symbols": [""]}, "symbols.0", "should match pattern"),
        ({"action": "flush", "stage": "features", "force": True}, "force", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_request_names_the_field(payload, field, says):
    with pytest.raises(InvalidMessageError) as caught:
        CacheAdminRequest.parse(payload)
    assert caught.value.model == "CacheAdminRequest"
    assert [p.field for p in caught.value.problems] == [field]
    assert says in str(caught.value)


def test_too_many_symbols_and_a_request_that_is_not_an_object_are_refused():
    with pytest.raises(InvalidMessageError, match="symbols=.*1 to 1000 symbols"):
        CacheAdminRequest.parse({"action": "count", "symbols": [f"S{i}" for i in range(1001)]})
    with pytest.raises(InvalidMessageError, match="<message>"):
        CacheAdminRequest.parse(["flush"])


def test_the_cache_stages_are_the_steps_the_runners_key_their_states_by():
    """The keys deleted are the keys the stage runners write: ``<deploy stage>:`` (the runner's
    cache prefix) + ``step.key(symbol)``, and the stages are the Kinesis-fed functions."""
    from ensemble_trader.domain.meta_agent import MetaAgentStep
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.runtime.features_stage import FeaturesStep

    assert CACHE_STAGES == tuple(f.logical for f in constants.FUNCTIONS if f.mapping.kind == "kinesis")
    steps = (FeaturesStep, RegimeStep, MetaAgentStep)
    assert tuple(step.name for step in steps) == CACHE_STAGES
    for step in steps:
        assert step.key(step, "SPX") == f"{step.name}:SPX"
    assert {stage: quiet_seconds(stage) for stage in CACHE_STAGES} == dict.fromkeys(CACHE_STAGES, 30.0)


# -- glob escaping ----------------------------------------------------------------------------


def test_glob_escape_backslashes_exactly_the_special_characters():
    assert GLOB_SPECIAL == set("*?[]\\")
    assert glob_escape("dev:features:") == "dev:features:"
    assert glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_escape("^GSPC/BRK.B-x=y_z") == "^GSPC/BRK.B-x=y_z"  # special only inside [...]


def _redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_scan_under_a_prefix_with_glob_characters_matches_it_literally():
    client = _redis()
    prefix = "st*g[1]?:"
    for name in (f"{prefix}features:SPX", f"{prefix}features:QQQ", "stXg1Y:features:SPX", "stg1:features:SPX",
                 f"{prefix}regime:SPX", f"{prefix}featuresX:SPX", "st*g[1]?:features"):
        client.set(name, b"x")
    cache = RedisCache(client, prefix=prefix)
    found = sorted(name for page in cache.scan_names("features:", count=2) for name in page)
    assert found == [f"{prefix}features:QQQ".encode(), f"{prefix}features:SPX".encode()]


def test_scan_delete_and_exists_turn_redis_errors_into_infrastructure_errors():
    class Broken:
        def scan(self, **_):
            raise ConnectionError("connection refused")

    with pytest.raises(InfrastructureError, match=r"SCAN MATCH dev:features:\* failed: connection refused"):
        list(RedisCache(Broken(), prefix="dev:").scan_names("features:"))
    with pytest.raises(ValueError, match="count"):
        list(RedisCache(_redis()).scan_names(count=0))


# -- the admin over fakeredis ---------------------------------------------------------------------


class Quiet:
    def __init__(self, busy: dict[str, str] | None = None):
        self.busy = busy or {}
        self.asked: list[tuple[str, ...]] = []

    def check(self, stages):
        self.asked.append(tuple(stages))
        return {s: ({"mapping": f"uuid-{s}"}, self.busy.get(s)) for s in stages}


class Counting(RedisCache):
    """A RedisCache that records the size of each DEL pipeline and each EXISTS pipeline."""

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.deletes: list[int] = []
        self.exists: list[int] = []

    def delete_names(self, names):
        self.deletes.append(len(names))
        return super().delete_names(names)

    def exist_names(self, names):
        self.exists.append(len(names))
        return super().exist_names(names)


def _filled(symbols=("SPX", "IXIC", "QQQ"), stages=CACHE_STAGES, deploy="dev") -> fakeredis.FakeRedis:
    client = _redis()
    for stage in stages:
        for symbol in symbols:
            client.set(f"{deploy}:{stage}:{symbol}", f"{stage}-{symbol}".encode())
    client.set("prod:features:SPX", b"another deploy stage")
    client.set("dev:featuresX:SPX", b"not a stage key")
    return client


def _flush(stage, symbols=None, dry_run=True):
    payload = {"action": "flush", "stage": stage, "dry_run": dry_run}
    if symbols is not None:
        payload["symbols"] = symbols
    return CacheAdminRequest.parse(payload)


def test_a_dry_run_deletes_nothing_and_counts_the_stage_keys():
    client = _filled()
    before = sorted(client.keys())
    doc = CacheAdmin(RedisCache(client, prefix="dev:"), Quiet()).run(_flush("features"))
    assert sorted(client.keys()) == before
    assert doc["dry_run"] is True and doc["complete"] is True
    assert (doc["found"], doc["deleted"]) == (3, 0)
    assert doc["stages"] == {"features": {"found": 3, "deleted": 0, "symbols": ["IXIC", "QQQ", "SPX"]}}
    assert doc["consumers"] == {"features": {"mapping": "uuid-features"}} and "refused" not in doc
    assert doc["prefix"] == "dev:"


def test_a_stage_flush_deletes_that_stage_only_in_bounded_batches():
    client = _filled(symbols=tuple(f"S{i}" for i in range(7)))
    cache = Counting(client, prefix="dev:")
    doc = CacheAdmin(cache, Quiet(), scan_count=3, delete_batch=2).run(_flush("regime", dry_run=False))
    assert (doc["found"], doc["deleted"]) == (7, 7)
    assert max(cache.deletes) <= 2 and sum(cache.deletes) == 7
    left = {k.decode() for k in client.keys()}
    assert not [k for k in left if k.startswith("dev:regime:")]
    assert len([k for k in left if k.startswith("dev:features:")]) == 7
    assert {"prod:features:SPX", "dev:featuresX:SPX"} <= left


def test_a_symbol_flush_deletes_the_exact_keys_and_names_the_missing_ones():
    client = _filled()
    client.set("dev:features:SPXW", b"a longer symbol")  # not a pattern: SPX never takes SPXW
    cache = Counting(client, prefix="dev:")
    doc = CacheAdmin(cache, Quiet(), delete_batch=2).run(_flush("features", ["SPX", "NOPE", "QQQ"], dry_run=False))
    assert doc["stages"]["features"] == {"found": 2, "deleted": 2, "symbols": ["QQQ", "SPX"], "missing": ["NOPE"]}
    assert client.get("dev:features:SPX") is None and client.get("dev:features:QQQ") is None
    assert client.get("dev:features:SPXW") == b"a longer symbol"
    assert client.get("dev:features:IXIC") is not None and client.get("dev:regime:SPX") is not None
    assert cache.exists == [2, 1]  # three names in batches of two


def test_a_busy_stage_refuses_before_anything_is_deleted_and_a_dry_run_says_it_would():
    client = _filled()
    before = sorted(client.keys())
    consumers = Quiet(busy={"features": "its mapping is Enabled"})
    with pytest.raises(CacheFlushRefusedError) as caught:
        CacheAdmin(RedisCache(client, prefix="dev:"), consumers).run(_flush("features", dry_run=False))
    assert caught.value.stage == "features"
    assert str(caught.value) == "cache flush of features refused, nothing deleted: its mapping is Enabled"
    assert sorted(client.keys()) == before
    doc = CacheAdmin(RedisCache(client, prefix="dev:"), consumers).run(_flush("features"))
    assert doc["refused"] == {"features": "its mapping is Enabled"} and doc["found"] == 3
    # another stage is not held back by the busy one
    doc = CacheAdmin(RedisCache(client, prefix="dev:"), consumers).run(_flush("regime", dry_run=False))
    assert doc["deleted"] == 3 and "refused" not in doc


def test_a_count_reports_every_stage_and_deletes_nothing():
    client = _filled(stages=("features", "meta_agent"))
    consumers = Quiet(busy={"meta_agent": "Enabled"})
    doc = CacheAdmin(RedisCache(client, prefix="dev:"), consumers).run(CacheAdminRequest.parse({"action": "count"}))
    assert "dry_run" not in doc and doc["deleted"] == 0 and doc["found"] == 6
    assert {s: d["found"] for s, d in doc["stages"].items()} == {"features": 3, "regime": 0, "meta_agent": 3}
    assert doc["refused"] == {"meta_agent": "Enabled"}
    assert consumers.asked == [CACHE_STAGES]


def test_a_flush_stops_scanning_near_the_invocations_end_and_says_so():
    client = _filled(symbols=tuple(f"S{i:02d}" for i in range(40)))
    left = iter([60.0, 60.0, 4.0])  # seconds left after each page
    admin = CacheAdmin(RedisCache(client, prefix="dev:"), Quiet(), scan_count=5, delete_batch=4,
                       time_left=lambda: next(left))
    doc = admin.run(_flush("features", dry_run=False))
    assert doc["complete"] is False and "run the same request again" in doc["note"]
    gone = doc["deleted"]
    assert 0 < gone == doc["found"] < 40  # what it found is deleted, nothing more
    assert len([k for k in client.keys() if k.startswith(b"dev:features:")]) == 40 - gone
    again = CacheAdmin(RedisCache(client, prefix="dev:"), Quiet()).run(_flush("features", dry_run=False))
    assert again["complete"] and again["deleted"] == 40 - gone


# -- the event-source mapping check ----------------------------------------------------------------


class StubLambda:
    def __init__(self, answers):
        self.answers = answers
        self.calls: list[str] = []

    def get_event_source_mapping(self, UUID):  # noqa: N803 - boto3's parameter name
        self.calls.append(UUID)
        answer = self.answers[UUID]
        if isinstance(answer, Exception):
            raise answer
        return answer


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


def _mapping(state: str, seconds_ago: float) -> dict:
    return {"UUID": "u", "State": state, "FunctionArn": "arn:aws:lambda:eu-west-1:1:function:et-dev-features:live",
            "LastModified": datetime.fromtimestamp(NOW - seconds_ago, tz=UTC)}


def _check(answers, mappings):
    return EventSourceMappingCheck(mappings, quiet_seconds, lambda_client=StubLambda(answers), clock=lambda: NOW)


def test_only_a_mapping_disabled_for_longer_than_the_function_timeout_is_quiet():
    answers = {"a": _mapping("Enabled", 3600), "b": _mapping("Disabled", 10), "c": _mapping("Disabled", 31)}
    found = _check(answers, {"features": "a", "regime": "b", "meta_agent": "c"}).check(CACHE_STAGES)
    detail, why = found["features"]
    assert detail["state"] == "Enabled" and detail["mapping"] == "a"
    assert "is Enabled, not Disabled" in why and "aws lambda update-event-source-mapping --uuid a --no-enabled" in why
    detail, why = found["regime"]
    assert detail["disabled_for_s"] == 10.0 and "modified 10 s ago" in why and "(30 s)" in why and "in 20 s" in why
    detail, why = found["meta_agent"]
    assert why is None and detail["last_modified"].startswith("2026-11-29T11:59:29")
    for state in ("Enabling", "Disabling", "Updating", "Creating"):
        assert _check({"a": _mapping(state, 3600)}, {"features": "a"}).check(["features"])["features"][1]


def test_a_stage_without_a_mapping_is_quiet_and_a_failed_call_names_it():
    check = _check({}, {})
    assert check.check(["regime"]) == {"regime": ({"mapping": None, "note": "no event-source mapping deployed"},
                                                  None)}
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}},
                         "GetEventSourceMapping")
    detail, why = _check({"a": denied}, {"features": "a"}).check(["features"])["features"]
    assert detail["mapping"] == "a" and "AccessDenied" in detail["error"]
    assert why.startswith("the features event-source mapping could not be read: Lambda GetEventSourceMapping a "
                          "(stage features)")


def test_a_mapping_that_cannot_be_read_refuses_a_flush_and_is_reported_by_a_count():
    """A count must not fail on it (the runbook says a count reports each mapping); a deleting
    flush fails closed, nothing deleted."""
    denied = ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "gone"}},
                         "GetEventSourceMapping")
    client = _filled()
    admin = CacheAdmin(RedisCache(client, prefix="dev:"), _check({"a": denied}, {"features": "a"}))
    doc = admin.run(CacheAdminRequest.parse({"action": "count", "stage": "features"}))
    assert doc["found"] == 3 and "could not be read" in doc["refused"]["features"]
    assert "ResourceNotFound" in doc["consumers"]["features"]["error"]
    with pytest.raises(CacheFlushRefusedError, match="could not be read"):
        admin.run(_flush("features", dry_run=False))
    assert len(client.keys("dev:features:*")) == 3


def test_a_disabled_mapping_without_its_modification_time_is_not_taken_as_quiet():
    answer = _mapping("Disabled", 3600)
    del answer["LastModified"]
    detail, why = _check({"a": answer}, {"features": "a"}).check(["features"])["features"]
    assert detail["last_modified"] is None and "reports no LastModified" in why


def test_symbols_null_is_refused_not_read_as_every_key():
    with pytest.raises(InvalidMessageError, match="symbols is null"):
        CacheAdminRequest.parse({"action": "flush", "stage": "features", "symbols": None, "dry_run": False})


def test_the_mapping_ids_come_from_the_environment_or_nothing_is_flushed():
    assert mapping_ids_from_env({MAPPINGS_ENV: '{"features": "u1", "meta_agent": "u3"}'}) == {
        "features": "u1", "meta_agent": "u3"}
    assert mapping_ids_from_env({MAPPINGS_ENV: "{}"}) == {}
    for raw, says in ((None, "unset"), ("  ", "unset"), ("{", "not valid JSON"), ('["u1"]', "JSON object"),
                      ('{"features": 3}', "JSON object"), ('{"orders": "u"}', "names no cache stage: orders")):
        with pytest.raises(EnvironmentSettingError, match=says) as caught:
            mapping_ids_from_env({} if raw is None else {MAPPINGS_ENV: raw})
        assert caught.value.variable == MAPPINGS_ENV


# -- the handler -------------------------------------------------------------------------------------


@pytest.fixture()
def handler_module(monkeypatch):
    from ensemble_trader.local.functions import load_module

    module = load_module("cache_admin", fresh=True)
    client = _filled()
    monkeypatch.setattr(module, "admin", lambda: CacheAdmin(RedisCache(client, prefix="dev:"),
                                                            Quiet(busy={"regime": "Enabled"})))
    return module, client


def _context():
    from ensemble_trader.local.events import FakeLambdaContext

    return FakeLambdaContext("et-dev-cache-admin", timeout_seconds=60)


def test_the_handler_parses_runs_and_answers(handler_module, capsys):
    module, client = handler_module
    doc = module.lambda_handler({"action": "flush", "stage": "features", "symbols": ["SPX"], "dry_run": False},
                                _context())
    assert doc["deleted"] == 1 and client.get("dev:features:SPX") is None
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [(d["cache_admin_keys_found"], d["cache_admin_keys_deleted"]) for d in emf if "cache_admin_keys_found" in d] \
        == [([1.0], [1.0])]


def test_the_handler_raises_a_bad_payload_and_a_refusal(handler_module):
    module, client = handler_module
    with pytest.raises(InvalidMessageError, match="stage='featurez'"):
        module.lambda_handler({"action": "flush", "stage": "featurez"}, _context())
    with pytest.raises(CacheFlushRefusedError, match="regime refused"):
        module.lambda_handler({"action": "flush", "stage": "regime", "dry_run": False}, _context())
    assert client.get("dev:regime:SPX") is not None


# -- invoking the function (the CLI's deployed path) ---------------------------------------------


class StubInvoke:
    def __init__(self, answer: dict, error: str | None = None):
        self.answer, self.error = answer, error
        self.calls: list[dict] = []

    def invoke(self, **kwargs):
        self.calls.append(kwargs)
        response = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.answer).encode())}
        if self.error:
            response["FunctionError"] = self.error
        return response


def test_invoke_json_sends_the_payload_once_and_reads_the_answer():
    stub = StubInvoke({"found": 0})
    assert invoke_json("et-dev-cache-admin", {"action": "count"}, wait_seconds=90, lambda_client=stub) == (
        {"found": 0}, None)
    assert stub.calls == [{"FunctionName": "et-dev-cache-admin", "InvocationType": "RequestResponse",
                           "Payload": b'{"action": "count"}'}]


def _dry_run_answer() -> dict:
    return {"action": "flush", "dry_run": True, "prefix": "dev:", "complete": True, "found": 2, "deleted": 0,
            "stages": {"features": {"found": 2, "deleted": 0, "symbols": ["IXIC", "SPX"]}},
            "consumers": {"features": {"mapping": "u", "state": "Enabled"}},
            "refused": {"features": "the features event-source mapping u is Enabled"}}


@pytest.fixture()
def deployed_shell(monkeypatch):
    """A shell aimed at a deployed stage: no endpoint, a region, stage dev."""
    from ensemble_trader.runtime.settings import get_settings

    monkeypatch.delenv("ET_AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("ET_STAGE", "dev")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_cli_invokes_the_stages_function_and_prints_its_answer(deployed_shell, monkeypatch, capsys):
    import ensemble_trader.adapters.aws.lambda_api as lambda_api
    from ensemble_trader.cli import main

    stub = StubInvoke(_dry_run_answer())
    built: list[dict] = []

    def fake_client(service, settings=None, *, config=None):
        built.append({"service": service, "read_timeout": config.read_timeout,
                      "attempts": config.retries["total_max_attempts"]})
        return stub

    monkeypatch.setattr(lambda_api, "client", fake_client)
    assert main(["cache", "flush", "--stage", "features", "--symbol", "SPX", "--symbol", "IXIC"]) == 0
    assert built == [{"service": "lambda", "read_timeout": 90, "attempts": 1}]
    [call] = stub.calls
    assert call["FunctionName"] == "et-dev-cache-admin"
    assert json.loads(call["Payload"]) == {"action": "flush", "stage": "features", "symbols": ["SPX", "IXIC"],
                                           "dry_run": True}
    out, err = capsys.readouterr()
    assert json.loads(out) == _dry_run_answer()
    assert "cache flush: stage dev, region eu-west-1, function et-dev-cache-admin" in err
    assert "dry run: 2 keys would be deleted (features 2); nothing deleted — add --yes" in err
    assert "would be refused for features: the features event-source mapping u is Enabled" in err

    stub.answer, stub.error = {"errorType": "CacheFlushRefusedError", "errorMessage": "cache flush of features "
                               "refused, nothing deleted: ..."}, "Unhandled"
    assert main(["cache", "flush", "--stage", "features", "--yes"]) == 1
    assert json.loads(stub.calls[-1]["Payload"])["dry_run"] is False
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: et-dev-cache-admin: CacheFlushRefusedError: cache flush of features refused" in err


def test_the_cli_refuses_a_bad_symbol_before_any_call(deployed_shell, monkeypatch, capsys):
    import ensemble_trader.adapters.aws.lambda_api as lambda_api
    from ensemble_trader.cli import main

    monkeypatch.setattr(lambda_api, "client", lambda *a, **k: pytest.fail("no call for a bad request"))
    with pytest.raises(SystemExit) as caught:
        main(["cache", "count", "--symbol", "spx"])
    assert caught.value.code == 2
    # named as the option, with the spelling that would pass (was pydantic's "symbols.0='spx': String
    # should match pattern ...")
    assert "argument --symbol: 'spx' is not a valid symbol (an upper-case ticker" in (err := capsys.readouterr().err)
    assert "did you mean SPX?" in err and "symbols.0" not in err
    with pytest.raises(SystemExit):
        main(["cache", "flush", "--stage", "orders"])  # not a cache stage: argparse's choices
