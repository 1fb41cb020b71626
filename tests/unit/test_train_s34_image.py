"""The training image (training/Dockerfile) installs every package the agents' job imports.

The image installed torch and the project's ``train`` extra only. The job checks each exported
ONNX graph against torch with onnxruntime and loads the finished set as serving does, and
onnxruntime comes with the ``lambda`` extra, not ``train``: in the image the job trained every
agent and then failed at the first parity check (ModuleNotFoundError).

No Docker here: the test reads the Dockerfile's ``pip install`` lines, follows their
requirements through the installed packages' metadata (the image's package set, as far as this
environment can tell it), and runs a small agents job through the container's entry point with
every other installed package made unimportable. It fails on the Dockerfile before.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "training" / "Dockerfile"
PROJECT = "ensemble-trader"
BASE_IMAGE_PACKAGES = {"pip", "setuptools", "wheel"}
"""What the python base image holds before any ``pip install``."""
OPTIONS_WITH_VALUE = {"--index-url", "-i", "--extra-index-url", "-f", "--find-links", "-c", "--constraint"}


def image_requirements(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The requirements of the Dockerfile's ``RUN pip install`` lines, options left out; the
    project itself as ``.[extras]``."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    requirements = []
    for line in text.splitlines():
        match = re.match(r"\s*RUN\s+(?:python3? -m )?pip install\s+(.*)", line)
        if not match:
            continue
        tokens = iter(shlex.split(match.group(1)))
        for token in tokens:
            if token in OPTIONS_WITH_VALUE:
                next(tokens, None)
            elif not token.startswith("-"):
                requirements.append(token)
    return requirements


def _requested(requirement: str) -> tuple[str, frozenset[str]]:
    if requirement.startswith("."):
        extras = re.search(r"\[(.*)\]", requirement)
        return PROJECT, frozenset(e.strip() for e in extras.group(1).split(",")) if extras else frozenset()
    parsed = Requirement(requirement)
    return parsed.name, frozenset(parsed.extras)


def closure(requirements: list[str]) -> set[str]:
    """The distributions (canonical names) the requirements bring, through each installed
    distribution's own requirements (their markers evaluated here, with the extras asked for)."""
    extras_of: dict[str, frozenset[str]] = {}
    todo = [_requested(r) for r in requirements]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in extras_of and extras <= extras_of[key]:
            continue
        extras_of[key] = extras_of.get(key, frozenset()) | extras
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # not installed here: nothing of it to block either
        for line in requires:
            requirement = Requirement(line)
            environments = [{"extra": e} for e in extras_of[key]] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return set(extras_of)


def modules_outside_the_image() -> list[str]:
    """Top-level modules installed here whose every distribution is outside the image."""
    inside = closure(image_requirements()) | BASE_IMAGE_PACKAGES
    return sorted(module for module, dists in packages_distributions().items()
                  if not any(canonicalize_name(d) in inside for d in dists))


RUN_WITHOUT = """
import json, runpy, sys
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None  # import fails, importlib.util.find_spec says absent
sys.argv = sys.argv[:1]
runpy.run_module("training.agents.train", run_name="__main__", alter_sys=True)
"""


def test_the_requirements_are_read_from_the_dockerfile():
    requirements = image_requirements()
    assert requirements[0].startswith("torch==")  # the CPU wheel, before the project pulls one
    assert any(r.startswith(".[") and "train" in r for r in requirements)
    inside = closure(requirements)
    assert {"torch", "stable-baselines3", "gymnasium", "onnx", "numpy", "pydantic"} <= inside


def test_the_image_takes_the_torch_the_train_extra_pins_from_the_cpu_index_first():
    """The torch line comes first, from the CPU index, at the train extra's pin: with another pin
    the project's install would fetch the extra's torch from PyPI, the multi-GB CUDA build."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    installs = [line for line in text.splitlines() if re.match(r"\s*RUN\s+pip install", line)]
    assert "--index-url https://download.pytorch.org/whl/cpu" in installs[0]
    pinned = Requirement(image_requirements()[0])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = [Requirement(r) for r in project["optional-dependencies"]["train"] if Requirement(r).name == "torch"]
    assert pinned.name == "torch" and [str(r.specifier) for r in extra] == [str(pinned.specifier)]
    assert str(pinned.specifier).startswith("==")


@pytest.mark.slow
def test_the_agents_job_runs_with_only_the_packages_the_image_installs(tmp_path):
    blocked = modules_outside_the_image()
    model = tmp_path / "model"
    hps = {"quick": "true", "agents": "balanced", "bars": "synth:realistic:11:1200",
           "agent_overrides": json.dumps({"balanced": {"n_seeds": 1}})}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(SM_HPS=json.dumps(hps), SM_MODEL_DIR=str(model), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT, json.dumps(blocked)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["model_dir"] == str(model)
    manifest = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["agents"]) == {"balanced"}
    assert manifest["training"]["onnx_parity_max_abs_error"]["balanced"] <= 1e-5
