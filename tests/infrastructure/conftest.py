"""Fixtures of the infrastructure tests: the CDK app synthesised once per session.

Two assemblies are built: ``full`` (stage dev) over a fixture tree in which every function of
``ensemble_trader.constants.FUNCTIONS`` and every extra entry has a handler, so the complete wiring
is checked whatever the state of ``functions/``; and ``real`` (stage prod, ``-c broker=paper -c symbols=SPY``:
prod needs the broker and the symbols given) over the repository's own ``functions/``, which deploys exactly the handlers
that exist. Both run cdk-nag (synthesis raises
on any unacknowledged finding). Asset staging is disabled in these synths (the template is the
same; only the copy of the ~120 MB layer into the assembly is skipped).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from ensemble_trader.constants import FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]
LAYERS_DIR = ROOT / "build" / "layers"
NO_LAYERS = (
    "build/layers is absent: build the Lambda layers first with `make layers` "
    "(python layers/build.py); the CDK app packages them"
)

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")


@dataclass
class Synth:
    """One synthesised stack: its template (a dict), the stack object and the assembly folder."""

    template: dict
    stack: object
    outdir: Path
    functions_dir: Path

    def resources(self, kind: str) -> dict[str, dict]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == kind}

    def props(self, kind: str) -> list[dict]:
        return [v.get("Properties", {}) for v in self.resources(kind).values()]


def write_fixture_handlers(functions_dir: Path) -> None:
    """A handler for every function and extra entry (extra entries as functions of handler.py)."""
    for spec in FUNCTIONS:
        folder = functions_dir / spec.logical
        folder.mkdir(parents=True)
        source = "def lambda_handler(event, context):\n    return event\n"
        for extra in spec.extra_entries:
            source += f"\n\ndef {extra}(event, context):\n    return event\n"
        (folder / "handler.py").write_text(source)


def synthesise(
    outdir: Path, functions_dir: Path, stage: str, *, layers_dir: Path = LAYERS_DIR, **context: object
) -> Synth:
    from infra_cdk.app import build_app, stack_name

    app, stack = build_app(
        outdir=str(outdir),
        functions_dir=functions_dir,
        layers_dir=layers_dir,
        context={"stage": stage, "aws:cdk:disable-asset-staging": True, **context},
    )
    app.synth()  # runs cdk-nag: raises ValidationFailed on any unacknowledged finding
    template = json.loads((outdir / f"{stack_name(stage)}.template.json").read_text())
    return Synth(template=template, stack=stack, outdir=outdir, functions_dir=functions_dir)


FULL_CONTEXT = {"max_intent_age_seconds": 900}
"""The context of the ``full`` synth besides its stage (dev): a test that synthesises it again
with one thing changed passes the same."""


@pytest.fixture(scope="session")
def layers_built() -> Path:
    if not (LAYERS_DIR / "deps").is_dir() or not (LAYERS_DIR / "core").is_dir():
        pytest.skip(NO_LAYERS)
    return LAYERS_DIR


@pytest.fixture(scope="session")
def full(layers_built, tmp_path_factory) -> Synth:
    base = tmp_path_factory.mktemp("infra-full")
    write_fixture_handlers(base / "functions")
    return synthesise(base / "cdk.out", base / "functions", "dev", **FULL_CONTEXT)


@pytest.fixture(scope="session")
def real(layers_built, tmp_path_factory) -> Synth:
    base = tmp_path_factory.mktemp("infra-real")
    # prod refuses to synthesise without an explicit broker and symbols (what the CI variable PROD_CDK_CONTEXT gives)
    return synthesise(base / "cdk.out", ROOT / "functions", "prod", broker="paper", symbols="SPY")
