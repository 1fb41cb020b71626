"""CI deploys each stage with that stage's CDK context (broker and symbols included) from a GitHub variable.

Staging and prod refuse to synthesise without ``-c broker`` and ``-c symbols``; before, the deploy
jobs ran ``make deploy STAGE=prod`` with no context, which moved a stage trading Alpaca to the paper
broker (and, without ``-c symbols``, a stage trading several symbols to SPY alone).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
STAGES = {"deploy-staging": ("staging", "STAGING_CDK_CONTEXT"), "deploy-production": ("prod", "PROD_CDK_CONTEXT")}


@pytest.fixture(scope="module")
def jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def _runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


@pytest.mark.parametrize("job_id", sorted(STAGES))
def test_each_deploy_job_passes_its_stages_context_from_a_variable(jobs, job_id):
    stage, variable = STAGES[job_id]
    job = jobs[job_id]
    assert job["env"]["CDK_CONTEXT"] == f"${{{{ vars.{variable} }}}}"
    deploys = [run for run in _runs(job) if "make deploy" in run]
    assert len(deploys) == 1
    assert re.search(rf'make deploy STAGE={stage} CDK_CONTEXT="\$CDK_CONTEXT"', deploys[0]), deploys[0]


@pytest.mark.parametrize("job_id", sorted(STAGES))
@pytest.mark.parametrize(("context", "status"), [("", 1), ("   ", 1), ("-c broker=paper -c symbols=SPY", 0)])
def test_each_deploy_job_stops_first_when_its_variable_is_empty(jobs, job_id, context, status):
    """The first step checks the variable, naming it; the app would refuse too, naming the context."""
    stage, variable = STAGES[job_id]
    guard = jobs[job_id]["steps"][0]["run"]
    result = subprocess.run(["bash", "-e", "-c", guard], env={"CDK_CONTEXT": context, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode == status
    if status:
        assert f"variable {variable} is empty" in result.stdout


def test_every_cdk_command_of_staging_or_prod_in_ci_names_a_broker_and_symbols(jobs):
    """No step synthesises or deploys staging/prod on a defaulted broker or defaulted symbols."""
    for job_id, job in jobs.items():
        for run in _runs(job):
            command = run.replace("\\\n", " ")
            for line in command.splitlines():
                if re.search(r"cdk (synth|deploy|diff)", line):
                    assert "-c broker=" in line and "-c symbols=" in line, (job_id, line)
                if "make deploy" in line:
                    assert "CDK_CONTEXT=" in line, (job_id, line)


def test_make_deploy_hands_cdk_context_to_the_cli():
    recipe = (ROOT / "Makefile").read_text().split("\ndeploy:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"cdk deploy --all -c stage=\$\(STAGE\) \$\(CDK_CONTEXT\)", recipe), recipe


def test_the_deployment_guide_names_the_variables():
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for _, variable in STAGES.values():
        assert f"`{variable}`" in guide
