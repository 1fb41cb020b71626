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
# What would let the CDK CLI find an AWS identity: given any credentials, `cdk synth` asks STS
# (sts:GetCallerIdentity) for the default account — on real AWS. Under `make test` the local stack
# has put dummy keys in os.environ by then; from a developer's shell they may be real ones.
AWS_IDENTITY_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "CDK_DEFAULT_ACCOUNT",
)


def _cfn_lint(template: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("cfn-lint")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "cfnlint"]
    return subprocess.run([*command, "-i", "W3005", "--", str(template)], capture_output=True, text=True)


def cdk_cli_env(no_such_file: Path) -> dict[str, str]:
    """The environment the CDK CLI runs in: the caller's without any AWS identity — no keys,
    profile, web-identity or container credentials, the config and credentials files pointed at
    ``no_such_file``, the EC2 metadata service off — so it finds no credentials and asks no AWS
    endpoint for an account; the venv's python first on PATH; no version check, telemetry or
    notices."""
    assert not no_such_file.exists(), no_such_file
    env = {k: v for k, v in os.environ.items() if k not in AWS_IDENTITY_VARIABLES}
    env.update(
        {
            "AWS_CONFIG_FILE": str(no_such_file),
            "AWS_SHARED_CREDENTIALS_FILE": str(no_such_file),
            "AWS_EC2_METADATA_DISABLED": "true",
            # cdk.json runs `python -m infra_cdk.app`: the venv's python first on PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            "CDK_DISABLE_VERSION_CHECK": "1",
            "CDK_DISABLE_CLI_TELEMETRY": "true",  # tests never reach the network (cdk.json says so too)
        }
    )
    return env


def test_cdk_cli_env_holds_no_aws_identity(monkeypatch, tmp_path):
    for name in AWS_IDENTITY_VARIABLES:
        monkeypatch.setenv(name, "from-the-shell")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    env = cdk_cli_env(tmp_path / "absent")
    assert not set(AWS_IDENTITY_VARIABLES) & set(env)
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == str(tmp_path / "absent")
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


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
    env = cdk_cli_env(tmp_path / "no-aws-config")
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
