"""Fixtures shared by every test folder.

``local_stack`` (session scope) is one :class:`~ensemble_trader.local.stack.LocalStack` for the
whole run: a moto server and a real redis-server on free ports with every resource of
``constants.py`` created, and the ``ET_*`` / ``AWS_*`` environment pointing at them (restored at
the end). Starting it takes ~2-3 s, so tests share it; to keep them independent use the
``clean_stack`` fixture below, which empties Redis, the queues, the
tables and the model bucket, forgets loaded handlers, stage statistics and unflushed metrics,
and hands out stream marks and emulators that only see records put after the test began
(streams cannot be emptied).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test may reach for the EC2 instance metadata service (169.254.169.254): a boto3 client built
# where no credentials are found would otherwise try it for an instance role (one or more 1 s
# timeouts off EC2; on an EC2 runner, that machine's real role). Tests talk to moto or to nothing.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def _hypothesis_profile() -> None:
    """Under CI (``CI=true``) the property tests draw the same examples on every run, so a red
    run is reproducible from its log and never caused by an unrelated commit's lucky draw;
    locally they keep exploring new examples."""
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        settings.load_profile("ci")


_hypothesis_profile()



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``minutes`` run first (the others keep their order): under ``make test``'s
    pytest-xdist (``--no-loadscope-reorder``: files in this order, not sorted by their number of
    tests) their files go to the first workers at once and overlap the rest of the suite, instead
    of starting last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("minutes") is None)

@pytest.fixture()
def aws(monkeypatch):
    """moto's in-process AWS (``mock_aws``) with test credentials and no endpoint override."""
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture()
def sleeper():
    """A child process that would run for a minute: ``sleeper()`` starts one; all are killed after."""
    import subprocess
    import sys

    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def local_stack():
    from ensemble_trader.local.stack import LocalStack

    stack = LocalStack(allow_fake_redis=False).start()  # the real redis-server `make test` installs
    try:
        yield stack
    finally:
        stack.stop()


# ``clean_stack`` gives a StackSession: the shared stack, emptied, plus helpers that only see what
# this test puts on the streams:
#
#     def test_something(clean_stack):
#         esm = clean_stack.emulator(["features"])     # polls from LATEST: this test's records only
#         clean_stack.put_bars("market-data", bars)     # Bar models or (key, bytes) records
#         esm.run_until_drained()
#         out = clean_stack.new_records("features")     # (partition key, data) put since the start
#         letters = clean_stack.stack.read_queue("features-dlq")

class StackSession:
    """The shared local stack for one test: stream marks taken at the start, helpers."""

    def __init__(self, stack: Any) -> None:
        from ensemble_trader import constants

        self.stack = stack
        self.marks = {s: stack.stream_mark(s) for s in constants.STREAMS}

    def emulator(self, functions: Sequence[str] | None = None, **kwargs: Any):
        from ensemble_trader.local.esm import EventSourceMappingEmulator

        kwargs.setdefault("start_position", "LATEST")
        return EventSourceMappingEmulator(self.stack, functions, **kwargs)

    def put_records(
        self, stream: str, records: Iterable[tuple[str, bytes] | BaseModel], *, aggregate: bool = False
    ) -> int:
        """Put messages on ``stream`` — one record each by default, as an external producer
        would; ``aggregate=True`` packs each key's messages as the stages' own publisher does."""
        from ensemble_trader.adapters.aws.kinesis import KinesisPublisher

        encoded = [
            (r.symbol, r.model_dump_json().encode()) if isinstance(r, BaseModel) else r  # type: ignore[attr-defined]
            for r in records
        ]
        KinesisPublisher(settings=self.stack.settings, aggregate=aggregate).put(stream, encoded)
        return len(encoded)

    put_bars = put_records

    def new_records(self, stream: str) -> list[tuple[str, bytes]]:
        return self.stack.stream_records(stream, since=self.marks[stream])

    def new_kinesis_event(self, stream: str, function: str = "features") -> dict[str, Any]:
        """The records put on ``stream`` during this test, as one Lambda Kinesis event."""
        from ensemble_trader.local.events import kinesis_event, kinesis_record

        name = self.stack.name(stream)
        return kinesis_event(
            [
                kinesis_record(
                    r["Data"], partition_key=r["PartitionKey"], sequence_number=r["SequenceNumber"],
                    stream=name, shard_id=r["_shard"], arrival=r["ApproximateArrivalTimestamp"].timestamp(),
                    function=self.stack.name(function),
                )
                for r in self.stack.iter_stream(stream, since=self.marks[stream])
            ]
        )


def clear_pending_metrics() -> None:
    """Drop metrics a test added but never flushed (say, a runner driven without the handler's
    ``log_metrics``): they would otherwise come out in the next test's EMF of that service."""
    from ensemble_trader.runtime.observability import clear_pending_metrics as clear

    clear()


def fresh_session(stack: Any) -> StackSession:
    """The shared stack emptied; loaded handlers, stage statistics and pending metrics forgotten."""
    from ensemble_trader.local.functions import forget_loaded
    from ensemble_trader.runtime.stage import reset_stage_stats

    stack.reset()
    forget_loaded()
    reset_stage_stats()
    clear_pending_metrics()
    return StackSession(stack)


@pytest.fixture()
def clean_stack(local_stack):
    from ensemble_trader.local.functions import forget_loaded

    yield fresh_session(local_stack)
    forget_loaded()


@pytest.fixture(scope="session")
def shifted_regime_model():
    """``shift(model, by)``: a valid regime model whose state means are ``model``'s plus ``by``
    (another content version, to publish beside the default)."""
    from ensemble_trader.domain.regime_model import RegimeModel

    def shift(model: RegimeModel, by: float) -> RegimeModel:
        return RegimeModel(
            model.features, model.start_prob, model.transmat, model.means + by, model.covariances,
            model.covariance_type, model.state_regimes, log_floor=model.log_floor,
        )  # fmt: skip

    return shift


@pytest.fixture
def models_copy(tmp_path, monkeypatch):
    """A copy of the committed models, made the default folder through ET_MODELS_DIR (a run that
    writes to the default folder cannot touch the committed set)."""
    import shutil

    from ensemble_trader.runtime.settings import Settings

    folder = tmp_path / "models"
    shutil.copytree(Settings().models_dir, folder)
    monkeypatch.setenv("ET_MODELS_DIR", str(folder))
    return folder
