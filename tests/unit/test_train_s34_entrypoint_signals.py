"""The training image's entry point (training/sagemaker-train, the container's process 1) passes
SageMaker's SIGTERM on to the job. Before, the job ran under the shell, which as process 1 ignores
a signal it has no handler for: a stopped job ran on until the SIGKILL 120 s later. The exit
status and the failure file are kept as before. A stand-in `python` on PATH plays the job."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "sagemaker-train"

STAND_IN = """#!/bin/sh
# stands in for `python -m training.agents.train`: records its start and a TERM, exits as told
trap 'echo term > "$JOB_DIR/term"; exit 0' TERM
echo started > "$JOB_DIR/started"
[ "${JOB_EXIT:-}" = "" ] || exit "$JOB_EXIT"
i=0
while [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done  # 30 s at most: a failed test leaves nothing behind
"""


@pytest.fixture
def job(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_DIR": str(tmp_path),
           "SM_MODEL_DIR": str(tmp_path / "model"), "ET_SAGEMAKER_OUTPUT_DIR": str(tmp_path / "output")}
    return tmp_path, env


def _wait_for(path: Path, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > end:
            pytest.fail(f"{path.name} never appeared")
        time.sleep(0.02)


def test_sigterm_reaches_the_job(job):
    folder, env = job
    proc = subprocess.Popen(["sh", str(SCRIPT)], env=env)
    try:
        _wait_for(folder / "started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # the job's own status: it ended cleanly on TERM
    finally:
        proc.kill()
    assert (folder / "term").read_text().strip() == "term"
    assert not (folder / "output" / "failure").exists()


def test_a_failed_job_keeps_its_status_and_gets_a_failure_reason(job):
    folder, env = job
    done = subprocess.run(["sh", str(SCRIPT)], env={**env, "JOB_EXIT": "3"}, timeout=20)
    assert done.returncode == 3
    assert (folder / "output" / "failure").read_text() == "agents training job exited with status 3\n"


def test_the_jobs_own_failure_reason_is_kept(job):
    folder, env = job
    (folder / "output").mkdir()
    (folder / "output" / "failure").write_text("DataError: no bars")
    assert subprocess.run(["sh", str(SCRIPT)], env={**env, "JOB_EXIT": "1"}, timeout=20).returncode == 1
    assert (folder / "output" / "failure").read_text() == "DataError: no bars"
