"""Benchmarks: each module here defines ``run(quick: bool) -> dict[str, float | int | str]``.

``run_all`` merges them into the JSON that ``ensemble-trader bench --json`` prints. Keys are
``<stage>_<what>_<unit>`` (``features_update_us_p50``). Timings use ``time.perf_counter_ns``
and the stage's own code, measured side by side with its naive counterpart in the same run.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import platform
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def percentiles_us(samples_ns: Iterable[int], prefix: str) -> dict[str, float]:
    """p50/p99 in microseconds of a list of nanosecond samples."""
    arr = np.asarray(list(samples_ns), dtype=np.float64) / 1e3
    return {
        f"{prefix}_us_p50": round(float(np.percentile(arr, 50)), 3),
        f"{prefix}_us_p99": round(float(np.percentile(arr, 99)), 3),
    }


def committed_models() -> tuple[Any, Any]:
    """The committed agent set and regime model as ``(AgentPool, RegimeStep)``, from the settings'
    models folder; :class:`~ensemble_trader.domain.errors.ModelArtifactError` when one is missing."""
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.runtime.settings import Settings

    models = Settings().models_dir
    return AgentPool.load(models / "agents"), RegimeStep(RegimeModel.load(models / "regime"))


def models_missing(key: str, exc: Exception) -> dict[str, str]:
    """The note a benchmark that needs :func:`committed_models` returns instead of its figures."""
    return {key: f"absent: the committed agent set or regime model is missing ({type(exc).__name__})"}


class HandlerMetrics:
    """Powertools metrics as a stage's Lambda emits them: the runner adds ``<stage>_compute_us``
    for every record and counts per batch, and :meth:`flush` writes the EMF document at the end
    of the invocation — to a discarded buffer, as the real one goes to CloudWatch Logs. Part of
    the handler path's cost (about half again the runner's own per record), so the throughput
    figures include it."""

    def __init__(self, service: str):
        from aws_lambda_powertools.metrics import EphemeralMetrics

        from ensemble_trader.runtime.observability import METRICS_NAMESPACE

        self.metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=service)
        self.metrics.set_default_dimensions(stage="bench")

    def process(self, runner: Any, event: Any) -> Any:
        """``runner.process(event)`` and the flush, with the EMF output (Powertools prints it,
        also when a metric reaches 100 values mid-batch) kept off the benchmark's stdout."""
        with contextlib.redirect_stdout(io.StringIO()):
            response = runner.process(event)
            self.metrics.flush_metrics()
        return response


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 50) -> list[int]:
    """Nanoseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def time_calls_with_cpu(fn: Callable[[], object], repeats: int, warmup: int = 50) -> tuple[list[int], list[int]]:
    """Nanoseconds of each of ``repeats`` calls of ``fn``, wall-clock and the thread's CPU time
    (``time.thread_time_ns``, which leaves out the time the thread was preempted: on a shared
    machine the wall-clock p99 is mostly the scheduler)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    perf, thread = time.perf_counter_ns, time.thread_time_ns
    for _ in range(repeats):
        t0, c0 = perf(), thread()
        fn()
        cpu.append(thread() - c0)
        wall.append(perf() - t0)
    return wall, cpu


def run_all(quick: bool = False, only: list[str] | None = None, progress: bool = True) -> dict:
    """Every benchmark module's results (or those named in ``only``; an unknown name is a DataError)."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__))
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        from ensemble_trader.domain.errors import DataError

        raise DataError(f"unknown benchmark(s) {unknown}; choose from {names}")
    results: dict[str, object] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    for name in names:
        if only and name not in only:
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        run = getattr(module, "run", None)
        if not callable(run):
            continue
        if progress:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results.update(run(quick=quick))
    return results
