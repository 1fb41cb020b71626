"""The training job runs every thread pool with one thread, however it was started."""

from __future__ import annotations

import numpy  # noqa: F401  (loaded first, as the CLI loads it: OMP_NUM_THREADS comes too late then)
from threadpoolctl import threadpool_info, threadpool_limits


def test_the_job_runs_its_blas_and_openmp_pools_with_one_thread(monkeypatch, tmp_path):
    import training.agents.train as train

    seen: list[dict[str, int]] = []

    def inner(config, out_dir, progress, read, log_lines):
        seen.append({pool["filepath"]: pool["num_threads"] for pool in threadpool_info()})
        return {"version": "agents-test"}

    monkeypatch.setattr(train, "_run_job", inner)
    with threadpool_limits(limits=2):  # a process whose pools run two threads (as on this 2-core machine)
        assert train.run_job(train.TrainConfig(quick=True), tmp_path / "out") == {"version": "agents-test"}
        after = {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}
    (during,) = seen
    assert during and set(during.values()) == {1}, during
    assert set(after.values()) - {1}, "the limit was not restored after the job"
