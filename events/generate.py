"""Regenerate the sample Lambda events in this folder: ``python events/generate.py``
(``--out DIR`` writes them to another folder, e.g. to compare them with the committed ones).

The events are built with the same code the ESM emulator uses
(:mod:`ensemble_trader.local.events`), from real S&P 500 / NASDAQ bars (``arch``), so their
shapes are exactly what the handlers receive. Fixed ids and times keep the files stable.

It writes the six files listed in ``main``; ``sqs-order-intents-batch.json`` (valid, malformed
and conflicting intents for the orders tests) and ``eventbridge-reconcile.json`` are kept by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ensemble_trader import constants
from ensemble_trader.domain.models import OrderIntent, Regime, make_intent_id
from ensemble_trader.local.events import eventbridge_event, kinesis_event, kinesis_record, sqs_record
from ensemble_trader.marketdata import load_arch
from ensemble_trader.runtime.aggregation import aggregate

HERE = Path(__file__).resolve().parent
STAGE = "local"
ARRIVAL = 1_735_801_200.0  # 2025-01-02T07:00:00Z
FIRST_SEQUENCE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898


def _bars_event(bad: bool, packed: bool = False) -> dict:
    """Three bars of each index (or, ``packed``, twelve of each as a backlog arrives: packed ten to
    a Kinesis record by :func:`~ensemble_trader.runtime.aggregation.aggregate`)."""
    spx, ixic = load_arch("sp500"), load_arch("nasdaq")
    payloads = []
    for i in range(12 if packed else 3):
        payloads.append(("SPX", spx.bar(i).model_dump_json().encode()))
        payloads.append(("IXIC", ixic.bar(i).model_dump_json().encode()))
    if bad:
        doc = json.loads(spx.bar(3).model_dump_json())
        doc["low"] = doc["high"] + 10.0  # low above high: rejected to features-dlq with this reason
        payloads.insert(4, ("SPX", json.dumps(doc).encode()))
    if packed:
        payloads = aggregate(payloads)
    stream = constants.qualified(STAGE, "market-data")
    return kinesis_event(
        [
            kinesis_record(
                data,
                partition_key=key,
                sequence_number=str(FIRST_SEQUENCE + n),
                stream=stream,
                arrival=ARRIVAL + n / 1000,
                function=constants.qualified(STAGE, "features"),
            )
            for n, (key, data) in enumerate(payloads)
        ]
    )


def _order_intent_event() -> dict:
    bar = load_arch("sp500").bar(100)
    intent = OrderIntent(
        intent_id=make_intent_id("ensemble", bar.symbol, bar.timestamp, "agents-v1"),
        strategy_id="ensemble",
        symbol=bar.symbol,
        timestamp=bar.timestamp,
        target_position=0.5,
        reference_price=bar.close,
        model_version="agents-v1",
        regime=Regime.BULL,
        confidence=0.82,
        agent_weights={"conservative": 0.1, "aggressive": 0.6, "balanced": 0.3, "contrarian": 0.0},
        explanation="BULL (0.82): aggressive agent leads the bandit in this regime",
    )
    queue = constants.qualified(STAGE, "order-intents")
    return {
        "Records": [
            sqs_record(
                intent.model_dump_json(),
                queue=queue,
                message_id="4d6ff9b4-47a0-4bd7-9a4e-5a3c62cb1b38",
                receipt_handle="AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                attributes={
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": str(int(ARRIVAL * 1000)),
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": str(int(ARRIVAL * 1000) + 12),
                    "SequenceNumber": "18849496460467696128",
                    "MessageGroupId": intent.symbol,
                    "MessageDeduplicationId": intent.intent_id,
                },
            )
        ]
    }


def _kill_switch_event(active: bool) -> dict:
    return eventbridge_event(
        "KillSwitch",
        {"active": active, "reason": "operator halt: broker incident" if active else "incident resolved"},
        source=constants.CONTROL_EVENT_SOURCE,
        time="2025-01-02T14:30:00Z" if active else "2025-01-02T15:10:00Z",
    ) | {"id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718" if active else "c41d2e07-5f3a-4b8e-9d16-2a7f0b9e3c54"}


def generated_events() -> dict[str, dict]:
    """The generated events by file name (the hand-kept files are not among them)."""
    return {
        "kinesis-market-data.json": _bars_event(bad=False),
        "kinesis-market-data-bad-record.json": _bars_event(bad=True),
        "kinesis-market-data-packed.json": _bars_event(bad=False, packed=True),
        "sqs-order-intent.json": _order_intent_event(),
        "eventbridge-kill-switch-on.json": _kill_switch_event(True),
        "eventbridge-kill-switch-off.json": _kill_switch_event(False),
    }


def write_events(out_dir: Path = HERE) -> list[Path]:
    """Write :func:`generated_events` into ``out_dir`` (created if missing); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, event in generated_events().items():
        path = out_dir / name
        path.write_text(json.dumps(event, indent=2) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the sample Lambda events.")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: events/)")
    args = parser.parse_args(argv)
    for path in write_events(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
