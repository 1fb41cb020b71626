"""Powertools Logger, Metrics and Tracer shared by every handler.

Each handler asks for its trio once at import time::

    obs = observability("features")
    logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer

The service name is ``POWERTOOLS_SERVICE_NAME`` when set (the CDK app sets it per function),
else the name passed in, so handlers loaded side by side in one local process still log under
their own names. Metrics go to the ``EnsembleTrader`` namespace with the dimensions ``service``
and ``stage`` (``ET_STAGE``), except ``ColdStart``: ``log_metrics(capture_cold_start_metric=True)``
publishes it in a metric set of its own with the dimensions ``function_name`` and ``service``, no
``stage`` (the function name ``et-<stage>-<fn>`` carries it; see docs/deployment.md). Each
service has its own ``EphemeralMetrics`` (Powertools' plain ``Metrics`` share one metric set per
process, so handlers side by side in the local stack would flush each other's metrics under the
wrong service). The tracer is disabled outside Lambda (Powertools' own rule) and by
``POWERTOOLS_TRACE_DISABLED``, which the local stack sets.

Powertools' ``Logger(service=...)`` also puts a filter on every handler the root logger has then
(in Lambda, the runtime's), so that its own records, which propagate, are not written twice. That
filter drops every record whose logger *name contains* the service name, and the core's module
loggers are named after their modules: the service ``orders`` silenced
``ensemble_trader.runtime.orders`` (the dead-letter, reconciliation and kill-switch warnings),
``regime`` the regime registry's, ``features`` and ``meta_agent`` their stages'. It is replaced
here by one that drops the service's own logger and its children only.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging.filters import SuppressFilter
from aws_lambda_powertools.metrics import EphemeralMetrics

METRICS_NAMESPACE = "EnsembleTrader"


@dataclass(frozen=True)
class Observability:
    service: str
    logger: Logger
    metrics: EphemeralMetrics
    tracer: Tracer


_lock = threading.Lock()
_instances: dict[str, Observability] = {}


def observability(default_service: str) -> Observability:
    """The Logger/Metrics/Tracer of a service (created once per process and service)."""
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or default_service
    with _lock:
        found = _instances.get(service)
        if found is None:
            from ensemble_trader.runtime.settings import get_settings

            metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=service)
            metrics.set_default_dimensions(stage=get_settings().stage)
            found = Observability(
                service=service,
                logger=Logger(service=service),
                metrics=metrics,
                tracer=Tracer(service=service),
            )
            _own_records_only(service)
            _instances[service] = found
        return found


class OwnRecordsFilter(logging.Filter):
    """Drops the records of the logger ``service`` and its children (``service.x``), which the
    Powertools Logger of that name writes itself; passes every other record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return not (name == self.service or name.startswith(self.service + "."))


def _own_records_only(service: str) -> None:
    """Replace Powertools' name-contains filter for ``service`` on the root handlers (see the
    module's docstring) by :class:`OwnRecordsFilter`."""
    for handler in logging.root.handlers:
        for found in list(handler.filters):
            if isinstance(found, SuppressFilter) and found.logger == service:
                handler.removeFilter(found)
                handler.addFilter(OwnRecordsFilter(service))


def clear_pending_metrics() -> None:
    """Drop the metrics every service added but has not flushed yet (for the local stack's tests)."""
    with _lock:
        for found in _instances.values():
            found.metrics.clear_metrics()
