"""Every dead letter leaves one WARNING line naming the record and the reason, so an operator
reading the function's log sees why a record was dead-lettered without reading the queue.

The Kinesis stages (the shared runner) name the stage, the record's sequence number and
partition key (and the message's place in an aggregated record); the orders consumer names the
SQS message id, its group, the intent id when the intent parsed, and the reject code. The same
values are on the log record as ``dead_letter`` (for a structured log format).
"""

from __future__ import annotations

import json
import logging

import pytest
from ensemble_trader.adapters.memory import MemoryDeadLetters
from ensemble_trader.domain.errors import DataError, InfrastructureError
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.aggregation import pack
from ensemble_trader.runtime.orders import IntentConsumer

from tests.unit.test_orders_handler import fifo_record
from tests.unit.test_orders_router import Rig, intent
from tests.unit.test_stage_runner import bar_json, event_of, failures, world  # noqa: F401 (world: fixture)

STAGE_LOG = "ensemble_trader.runtime.stage"
ORDERS_LOG = "ensemble_trader.runtime.orders"


def dead_letter_lines(caplog, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and hasattr(r, "dead_letter")]


# ---- the Kinesis stages ------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "reason_part"), [
    (b"{not json", "invalid Bar"),
    (bar_json("AAA", 1, volume=13.0), "volume 13 is unlucky for AAA"),  # refused by the step itself
])
def test_a_dead_lettered_kinesis_record_is_logged_with_its_identity_and_reason(world, caplog, payload, reason_part):  # noqa: F811 (the fixture)
    caplog.set_level(logging.WARNING, logger=STAGE_LOG)
    event = event_of([("AAA", bar_json("AAA", 0)), ("AAA", payload), ("AAA", bar_json("AAA", 2))])
    assert failures(world.runner.process(event)) == []
    ((_, reason, source),) = world.dlq.letters
    assert reason_part in reason

    (line,) = dead_letter_lines(caplog, STAGE_LOG)
    assert line.levelno == logging.WARNING
    assert line.dead_letter == {"stage": "tally", "sequence_number": "1001", "partition_key": "AAA",
                                "reason": reason}
    text = line.getMessage()
    assert "tally" in text and "1001" in text and "AAA" in text and reason in text


def test_the_message_of_an_aggregated_record_is_named_by_its_place(world, caplog):  # noqa: F811 (the fixture)
    caplog.set_level(logging.WARNING, logger=STAGE_LOG)
    packed = pack([bar_json("AAA", 0), bar_json("AAA", 1, volume=-5.0), bar_json("AAA", 2)])
    event = kinesis_event([kinesis_record(packed, partition_key="AAA", sequence_number="77", stream="et-test-in")])
    assert failures(world.runner.process(event)) == []
    (line,) = dead_letter_lines(caplog, STAGE_LOG)
    assert line.dead_letter["sequence_number"] == "77"
    assert line.dead_letter["aggregated"] == {"index": 1, "messages": 3}
    assert "message 2 of 3" in line.getMessage() and "volume" in line.dead_letter["reason"]


def test_a_record_that_is_not_a_kinesis_record_is_logged_without_inventing_an_identity(world, caplog):  # noqa: F811 (the fixture)
    caplog.set_level(logging.WARNING, logger=STAGE_LOG)
    good = kinesis_record(bar_json("AAA", 0), partition_key="AAA", sequence_number="5", stream="et-test-in")
    bad = {"kinesis": {"sequenceNumber": "6"}}  # no data, no partition key
    assert failures(world.runner.process({"Records": [good, bad]})) == []
    (line,) = dead_letter_lines(caplog, STAGE_LOG)
    assert line.dead_letter["sequence_number"] == "6" and line.dead_letter["partition_key"] is None
    assert line.dead_letter["reason"].startswith("invalid Kinesis record")


def test_a_long_reason_is_cut_in_the_log_and_kept_whole_in_the_letter(world, caplog):  # noqa: F811 (the fixture)
    caplog.set_level(logging.WARNING, logger=STAGE_LOG)
    event = event_of([("AAA", bar_json("A" * 5000, 0))])  # the reason quotes the 5,000-character symbol
    world.runner.process(event)
    ((_, reason, _),) = world.dlq.letters
    assert len(reason) > 5000
    (line,) = dead_letter_lines(caplog, STAGE_LOG)
    logged = line.dead_letter["reason"]
    assert logged.startswith(reason[:1000]) and len(logged) < 1100
    assert f"{len(reason) - 1000:,} more characters" in logged
    assert len(line.getMessage()) < 1300


def test_a_dead_letter_the_queue_refuses_is_logged_as_not_sent_with_its_reason(world, caplog):  # noqa: F811 (the fixture)
    caplog.set_level(logging.WARNING, logger=STAGE_LOG)
    world.dlq.failures.fail("send")
    response = world.runner.process(event_of([("AAA", b"{not json")]))
    assert failures(response) == ["1000"]  # retried: the reason must not be lost meanwhile
    assert dead_letter_lines(caplog, STAGE_LOG) == []  # no letter was stored
    (line,) = [r for r in caplog.records if r.name == STAGE_LOG and "1000" in r.getMessage()]
    text = line.getMessage()
    assert "not dead-lettered" in text and "injected failure of send" in text and "invalid Bar" in text


# ---- the orders consumer -----------------------------------------------------------------------


def test_a_malformed_intent_is_logged_with_its_message_id_group_and_reject_code(caplog):
    caplog.set_level(logging.WARNING, logger=ORDERS_LOG)
    rig = Rig()
    letters = MemoryDeadLetters()
    consumer = IntentConsumer(rig.router, letters)
    body = json.dumps({**json.loads(intent(1, 0.5, 100.0).model_dump_json()), "target_position": True})
    record = dict(fifo_record("m-7", "SPX", 7), body=body)
    assert consumer.process(body, record)["dead_lettered"] is True
    ((_, reason, _),) = letters.letters

    (line,) = dead_letter_lines(caplog, ORDERS_LOG)
    assert line.levelno == logging.WARNING
    assert line.dead_letter == {"source": "orders", "message_id": "m-7", "message_group": "SPX",
                                "intent_id": None, "reason_code": "MALFORMED_INTENT", "reason": reason}
    text = line.getMessage()
    assert "m-7" in text and "MALFORMED_INTENT" in text and "target_position" in text


def test_an_intent_that_cannot_be_routed_is_logged_with_its_intent_id(caplog):
    caplog.set_level(logging.WARNING, logger=ORDERS_LOG)
    rig = Rig()

    def route(intent):
        raise DataError("share count overflows a float")

    consumer = IntentConsumer(rig.router, MemoryDeadLetters(), route=route)
    it = intent(1, 0.5, 100.0)
    consumer.process(it.model_dump_json(), dict(fifo_record("m-8", "SPX", 8), body=it.model_dump_json()))
    (line,) = dead_letter_lines(caplog, ORDERS_LOG)
    assert line.dead_letter["intent_id"] == it.intent_id and line.dead_letter["message_id"] == "m-8"
    assert it.intent_id in line.getMessage() and "share count overflows" in line.getMessage()


def test_an_intent_dead_lettered_without_its_sqs_record_is_still_logged(caplog):
    caplog.set_level(logging.WARNING, logger=ORDERS_LOG)
    consumer = IntentConsumer(Rig().router, MemoryDeadLetters())
    consumer.process("{nope")
    (line,) = dead_letter_lines(caplog, ORDERS_LOG)
    assert line.dead_letter["message_id"] is None and line.dead_letter["reason_code"] == "MALFORMED_INTENT"


def test_an_intent_the_dead_letter_queue_refuses_fails_and_its_reason_is_logged(caplog):
    caplog.set_level(logging.WARNING, logger=ORDERS_LOG)
    letters = MemoryDeadLetters()
    letters.failures.fail("send")
    consumer = IntentConsumer(Rig().router, letters)
    with pytest.raises(InfrastructureError, match="injected failure of send"):
        consumer.process("{nope", dict(fifo_record("m-9", "SPX", 9), body="{nope"))
    assert dead_letter_lines(caplog, ORDERS_LOG) == []  # nothing was stored
    (line,) = [r for r in caplog.records if r.name == ORDERS_LOG and "m-9" in r.getMessage()]
    assert "not dead-lettered" in line.getMessage() and "MALFORMED_INTENT" in line.getMessage()
