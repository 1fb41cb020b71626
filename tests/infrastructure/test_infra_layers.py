"""The Lambda layers built by layers/build.py: size limit, determinism, contents."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from ensemble_trader.constants import FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]
LAYERS_DIR = ROOT / "build" / "layers"


def _load_build_module():
    spec = importlib.util.spec_from_file_location("layers_build", ROOT / "layers" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


@pytest.fixture(scope="module")
def deps() -> Path:
    if not all((LAYERS_DIR / name).is_dir() for name in build.DEPENDENCY_LAYERS):
        pytest.skip("build/layers is absent: run `make layers` (python layers/build.py) first")
    return LAYERS_DIR / "deps"


def _function_size(logical: str) -> int:
    folder = ROOT / "functions" / logical
    return build.tree_size(folder) if folder.is_dir() else 0


def test_functions_plus_layers_fit_lambdas_250_mb_unzipped_limit(deps, tmp_path):
    """The heaviest function: orders, with the deps, core and broker layers."""
    core = build.build_core(tmp_path)
    layers = build.tree_size(deps) + build.tree_size(core) + build.tree_size(LAYERS_DIR / "broker")
    largest_function = max(_function_size(spec.logical) for spec in FUNCTIONS)
    total = layers + largest_function
    assert total < build.LAMBDA_UNZIPPED_LIMIT_BYTES, f"{total / 2**20:.1f} MiB"


def test_broker_layer_holds_alpaca_and_nothing_the_deps_layer_has(deps):
    broker = LAYERS_DIR / "broker" / "python"
    assert (broker / "alpaca" / "trading" / "client.py").is_file() and (broker / "pandas").is_dir()
    shared = {p.name for p in broker.iterdir()} & {p.name for p in (deps / "python").iterdir()}
    assert not shared, f"installed twice: {sorted(shared)}"


def test_no_file_is_in_two_layers(deps, tmp_path):
    """With ``@aws-cdk/aws-lambda:recognizeLayerVersion`` (infra_cdk.app.FEATURE_FLAGS) CDK lists a
    function's layers sorted by construct path (broker, core, deps), not in the order the app gives
    them, and Lambda extracts them into /opt in that order: a file in two layers would be taken from
    the later one. With disjoint layers the order does not matter."""
    trees = {"deps": deps, "core": build.build_core(tmp_path), "broker": LAYERS_DIR / "broker"}
    files = {name: {p.relative_to(root) for p in build.iter_files(root)} for name, root in trees.items()}
    names = sorted(files)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = files[first] & files[second]
            assert not shared, f"{first} and {second} both hold {sorted(map(str, shared))[:5]}"


def test_two_core_builds_have_the_same_hash_and_the_same_cdk_asset_fingerprint(tmp_path):
    import aws_cdk as cdk

    first, second = build.build_core(tmp_path / "a"), build.build_core(tmp_path / "b")
    assert build.tree_digest(first) == build.tree_digest(second)
    # what CDK hashes to name the layer's asset: equal means no new upload on deploy
    assert cdk.FileSystem.fingerprint(str(first)) == cdk.FileSystem.fingerprint(str(second))


def test_core_layer_holds_the_package_and_models_without_junk(tmp_path):
    core = build.build_core(tmp_path)
    assert (core / "python" / "ensemble_trader" / "__init__.py").is_file()
    assert (core / "python" / "ensemble_trader" / "constants.py").is_file()
    assert (core / "models").is_dir()
    for path in build.iter_files(core):
        assert "__pycache__" not in path.parts and path.suffix != ".pyc"
        assert path.stat().st_mtime == build.FIXED_MTIME


def test_deps_layer_is_up_to_date_normalised_and_built_for_lambda(deps):
    for name, requirements in build.DEPENDENCY_LAYERS.items():
        stamp = build.stamp_path(LAYERS_DIR, name)
        assert stamp.is_file() and stamp.read_text().strip() == build.requirements_fingerprint(
            requirements
        ), f"the {name} layer is older than {requirements.name}: run `make layers`"
    python = deps / "python"
    for package in ("aws_lambda_powertools", "onnxruntime", "numpy", "pydantic", "pydantic_core", "redis"):
        assert (python / package).is_dir(), package
    for heavy in ("torch", "sklearn", "scipy", "hmmlearn", "boto3", "botocore", "pandas"):
        assert not (python / heavy).exists(), f"{heavy} must not ship in the Lambda bundle"
    extensions = [p.name for p in (python / "pydantic_core").glob("*.so")]
    assert extensions and all("cpython-314-aarch64" in name for name in extensions)
    for path in build.iter_files(deps):
        assert "__pycache__" not in path.parts and path.suffix != ".pyc"
        if path.parent.name.endswith(".dist-info"):
            assert path.name in build.DIST_INFO_KEEP
        assert os.lstat(path).st_mtime == build.FIXED_MTIME


@pytest.mark.parametrize("name", sorted(build.DEPENDENCY_LAYERS))
def test_requirements_are_fully_pinned_with_hashes(name):
    text = build.DEPENDENCY_LAYERS[name].read_text()
    pins = [line for line in text.splitlines() if build._PIN.match(line)]
    assert len(pins) >= 10
    assert text.count("--hash=sha256:") == len(pins)
