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
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Tracer
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
            _instances[service] = found
        return found


def clear_pending_metrics() -> None:
    """Drop the metrics every service added but has not flushed yet (for the local stack's tests)."""
    with _lock:
        for found in _instances.values():
            found.metrics.clear_metrics()
