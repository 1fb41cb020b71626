"""Agents benchmark: one decision of all four ONNX agents (the meta-agent stage's inner call).

``agents_infer_us_p50/_p99`` time :meth:`AgentPool.act` with the committed model set as served
(the fused graph: one onnxruntime call for the four agents), and ``agents_infer_cpu_us_*`` the
same calls in the thread's CPU time (preemption left out). Side by side, the same decision
with one session per agent (``agents_infer_separate_us_*``), and the backtest throughput of the
pool (bars per second, the sequential loop where each agent sees its own position).
"""

from __future__ import annotations

import time

import numpy as np

from ensemble_trader.bench import percentiles_us, time_calls, time_calls_with_cpu


def _feature_rows(n: int) -> np.ndarray:
    from ensemble_trader.domain.features import compute_features
    from ensemble_trader.domain.synthetic import generate

    fm = compute_features(generate("realistic", n + 100, seed=5).series)
    return fm.values[fm.ready][:n].astype(np.float32)


def run(quick: bool) -> dict[str, float | int | str]:
    from ensemble_trader.backtest.engine import run_pool
    from ensemble_trader.domain.agents import AgentPool

    repeats = 500 if quick else 5_000
    rows = _feature_rows(1_000)
    fused = AgentPool.load()
    separate = AgentPool.load(fused=False)
    positions = np.zeros(len(fused.names), dtype=np.float32)
    counter = iter(range(1 << 30))

    def decide(pool: AgentPool):
        def call() -> None:
            pool.act(rows[next(counter) % len(rows)], positions)

        return call

    results: dict[str, float | int | str] = {"agents_model_version": fused.version}
    mode = "fused" if fused.manifest.fused is not None else "separate"
    results["agents_infer_mode"] = mode
    wall, cpu = time_calls_with_cpu(decide(fused), repeats)
    results.update(percentiles_us(wall, "agents_infer"))
    results.update(percentiles_us(cpu, "agents_infer_cpu"))
    results.update(percentiles_us(time_calls(decide(separate), repeats), "agents_infer_separate"))
    n = 300 if quick else len(rows)
    t0 = time.perf_counter()
    run_pool(fused, rows[:n])
    results["agents_backtest_bars_per_s"] = round(n / (time.perf_counter() - t0), 1)
    return results
