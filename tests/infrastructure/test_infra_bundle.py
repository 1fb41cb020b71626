"""Every deployed handler imports with nothing but what Lambda will have.

Lambda gives a function its own folder, the layers (``/opt/python``) and the runtime's boto3.
This test rebuilds that ``sys.path`` offline: the function folder, the built core layer and a
view of this venv restricted to the packages the dependency layers ship (plus boto3 and its
dependencies, which the runtime provides). Anything else a handler imports (torch, sklearn,
tqdm, moto ...) fails here instead of at the first cold start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from infra_cdk.constructs.functions import ACCESS, discover_entries

ROOT = Path(__file__).resolve().parents[2]
LAYERS_DIR = ROOT / "build" / "layers"
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
# Modules loaded lazily inside handlers (at the first invocation, not at import): checked too.
LAZY_MODULES = {
    "features": ("ensemble_trader.adapters.aws.dynamodb", "ensemble_trader.adapters.redis.cache"),
    "meta_agent": ("ensemble_trader.domain.agents", "ensemble_trader.adapters.aws.sqs"),
    "orders": ("ensemble_trader.runtime.orders", "ensemble_trader.adapters.brokers.alpaca"),
}


def _restricted_site(tmp: Path, layers: list[str]) -> Path:
    """A folder of links to the venv's copies of exactly the packages Lambda will have."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = tmp / "site"
    view.mkdir(parents=True)
    names = set(RUNTIME_PACKAGES)
    for layer in layers:
        names |= {
            p.name for p in (LAYERS_DIR / layer / "python").iterdir() if not p.name.endswith(".dist-info")
        }
    for name in sorted(names):
        if (site / name).exists():
            (view / name).symlink_to(site / name)
    return view


@pytest.mark.slow
def test_each_deployed_handler_imports_from_the_bundle_alone(layers_built, tmp_path):
    entries = discover_entries(ROOT / "functions")
    if not entries:
        pytest.skip("no handler exists under functions/ yet")
    failures = []
    for broker in (False, True):
        view = _restricted_site(tmp_path / str(broker), ["deps", "broker"] if broker else ["deps"])
        for entry in entries:
            if ACCESS[entry.key].broker != broker:
                continue
            module = entry.handler.rsplit(".", 1)[0]
            lazy = LAZY_MODULES.get(entry.key, ())
            code = (
                "import importlib, sys\n"
                f"sys.path[:0] = [{str(ROOT / 'functions' / entry.spec.logical)!r}, "
                f"{str(LAYERS_DIR / 'core' / 'python')!r}, {str(view)!r}]\n"
                f"for name in {(module, *lazy)!r}:\n"
                "    importlib.import_module(name)\n"
            )
            env = {
                "PATH": os.environ.get("PATH", ""),
                "ET_STAGE": "dev",
                "AWS_REGION": "us-east-1",
                "POWERTOOLS_TRACE_DISABLED": "1",
                "POWERTOOLS_SERVICE_NAME": entry.spec.logical,
            }
            # -S: no site-packages of this venv; -I: ignore PYTHON* variables and the cwd; -B: no
            # __pycache__ written into build/layers (it changed the layers' asset hashes under a
            # synth running meanwhile: test_infra_versions failed once in CI)
            result = subprocess.run(
                [sys.executable, "-S", "-I", "-B", "-c", code], capture_output=True, text=True, env=env, timeout=120
            )
            if result.returncode != 0:
                failures.append(f"{entry.key}: {result.stderr.strip().splitlines()[-1]}")
    assert not failures, "\n".join(failures)
