"""The core's module loggers reach the root handler (Lambda's) under every service name.

Powertools' ``Logger(service=...)`` filters the root handlers it finds by *name contains the
service*: with the orders function's service ``orders``, every record of
``ensemble_trader.runtime.orders`` (its dead-letter warnings among them) was dropped in Lambda,
where the runtime's handler is on the root logger before the function module is imported. Tests
did not see it: Powertools spares pytest's capture handler.
"""

from __future__ import annotations

import io
import logging

import pytest
from ensemble_trader.runtime import observability as obs_module


@pytest.fixture
def root_handler(monkeypatch):
    """A plain root handler, in place before the service's Logger is made (as Lambda's is)."""
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logging.root.addHandler(handler)
    yield stream, handler
    logging.root.removeHandler(handler)


@pytest.mark.parametrize(("service", "module_logger"), [
    ("orders_probe", "ensemble_trader.runtime.orders_probe"),
    ("regime_probe", "ensemble_trader.runtime.regime_probe_registry"),
    ("features_probe", "ensemble_trader.domain.features_probe"),
])
def test_a_module_logger_named_like_the_service_still_reaches_the_root_handler(root_handler, service, module_logger):
    stream, _ = root_handler
    assert service not in obs_module._instances  # a fresh Logger, as at a cold start
    try:
        obs_module.observability(service)
        logging.getLogger(module_logger).warning("dead-lettered message m-1: MALFORMED_INTENT: bad")
        assert "dead-lettered message m-1" in stream.getvalue()
    finally:
        obs_module._instances.pop(service, None)


def test_the_services_own_records_are_still_not_written_twice(root_handler):
    stream, handler = root_handler
    service = "dedup_probe"
    try:
        found = obs_module.observability(service)
        [own] = [f for f in handler.filters if isinstance(f, obs_module.OwnRecordsFilter)]
        assert own.service == service
        found.logger.warning("from the service logger")  # written by Powertools' own handler
        logging.getLogger(f"{service}.child").warning("from a child of it")
        assert stream.getvalue() == ""
    finally:
        obs_module._instances.pop(service, None)
