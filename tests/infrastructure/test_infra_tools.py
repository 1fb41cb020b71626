"""External tools over the app: cfn-lint on the templates, the pinned npm CDK CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CDK_CLI = ROOT / "node_modules" / ".bin" / "cdk"


def _cfn_lint(template: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("cfn-lint")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "cfnlint"]
    return subprocess.run([*command, "-i", "W3005", "--", str(template)], capture_output=True, text=True)


def test_cfn_lint_is_clean_on_the_complete_template(full):
    [template] = full.outdir.glob("*.template.json")
    result = _cfn_lint(template)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_pinned_npm_cdk_cli_synthesises_the_app(layers_built, tmp_path):
    if not CDK_CLI.exists():
        pytest.skip("node_modules/.bin/cdk is absent: `make synth` installs the pinned CLI (npm install)")
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    env = {
        **os.environ,
        # cdk.json runs `python -m infra_cdk.app`: the venv's python first on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_VERSION_CHECK": "1",
        "CDK_DISABLE_CLI_TELEMETRY": "true",  # tests never reach the network (cdk.json says so too)
    }
    env.pop("CDK_DEFAULT_ACCOUNT", None)
    result = subprocess.run(
        [
            str(CDK_CLI),
            "synth",
            "--quiet",
            "--no-notices",
            "--no-staging",
            "-o",
            str(tmp_path / "cdk.out"),
            "-c",
            "stage=dev",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "cdk.out" / "ensemble-trader-dev.template.json").is_file()
