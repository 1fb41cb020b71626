"""What the docs say happens to a symbol whose feature state the stage cannot use (review).

docs/features.md ("State format") and the features stage's docstring said the symbol's records
'are retried, never dead-lettered, until the state under the key is replaced'; the features
mapping retries a batch ``retry_attempts`` = 3 times, then Lambda sends its metadata to
features-dlq and goes on (the review's probe through the local mapping emulator: five bars, five
letters 'batch item failure after 3 retries'). The docs now say that, name the alarm that
catches it and point to the runbook's recovery."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ensemble_trader import constants
from ensemble_trader.domain.errors import StateError
from ensemble_trader.runtime import features_stage

ROOT = Path(__file__).resolve().parents[2]
SPEC = constants.function_spec("features")
DLQ = SPEC.dead_letter_queue
ALARM = "".join(part.capitalize() for part in DLQ.split("-")) + "NotEmpty"  # as infra_cdk/constructs/monitoring.py


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _state_format() -> str:
    text = (ROOT / "docs" / "features.md").read_text()
    return _flat(text[text.index("## State format"):text.index("## Performance")])


def test_the_mapping_is_as_the_docs_describe():
    assert SPEC.mapping.kind == "kinesis" and SPEC.mapping.report_batch_item_failures
    assert SPEC.mapping.retry_attempts == 3
    assert DLQ == "features-dlq" and ALARM == "FeaturesDlqNotEmpty"


@pytest.mark.parametrize(
    "text",
    [_state_format(), _flat(features_stage.__doc__)],
    ids=["features.md State format", "features_stage docstring"],
)
def test_the_docs_say_the_records_end_in_the_dlq_after_the_retries(text):
    assert "never dead-lettered" not in text
    assert f"``retry_attempts`` = {SPEC.mapping.retry_attempts}" in text or \
        f"`retry_attempts` = {SPEC.mapping.retry_attempts}" in text
    assert DLQ in text
    assert ALARM in text  # the alarm that catches it
    assert "runbook" in text and "§5" in text  # where the recovery is


def test_the_runbook_section_pointed_to_is_a_re_feed():
    runbook = _flat((ROOT / "docs" / "runbook.md").read_text())
    section = runbook[runbook.index("## 5. Dead-letter queues"):runbook.index("## 6.")]
    assert "(c) Kinesis on-failure records after retries" in section
    assert "step failed on <SYMBOL>" in section  # the cause of this case is named there
    assert "re-feed the symbol's bars **from its first bar**" in section
    upgrade = runbook[runbook.index("**Upgrading the feature version**"):runbook.index("## 5. Dead-letter queues")]
    assert "are retried (`features_failed_items`" not in upgrade
    assert ALARM in upgrade


def test_another_symbols_state_is_a_state_error_the_runner_fails_not_rejects():
    """The behaviour the docs describe: StateError (not DataError), so the runner fails the
    symbol's records for the mapping to retry; the mapping's retries then end in the DLQ."""
    from datetime import UTC, datetime

    from ensemble_trader.domain.features import FeatureEngine
    from ensemble_trader.domain.models import Bar

    bar = Bar(symbol="SPX", timestamp=datetime(2024, 1, 2, tzinfo=UTC), open=1.0, high=1.0, low=1.0, close=1.0,
              volume=1.0)
    with pytest.raises(StateError, match="stored under the key of SPX"):
        features_stage.FeaturesStep().apply(FeatureEngine("IXIC"), bar)
