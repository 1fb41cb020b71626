"""Bytecode written into build/layers (a local import of the built packages, a test run) is not
part of a layer: the layers' assets leave out __pycache__ and *.pyc, so their hashes — and the
layer versions a deploy publishes — follow the packages alone. Before, a test importing from the
built layers changed the broker and core layers' hashes under a synth running meanwhile (a CI run
failed on it), and a deploy from such a tree shipped Python 3.11 bytecode to a 3.14 runtime."""

from __future__ import annotations

import os
import shutil

from tests.infrastructure.conftest import FULL_CONTEXT, LAYERS_DIR, synthesise


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _layer_keys(template: dict) -> dict[str, str]:
    return {logical: resource["Properties"]["Content"]["S3Key"]
            for logical, resource in template["Resources"].items() if resource["Type"] == "AWS::Lambda::LayerVersion"}


def test_bytecode_in_the_built_layers_changes_no_layer_asset(full, tmp_path):
    layers = tmp_path / "layers"
    shutil.copytree(LAYERS_DIR, layers, copy_function=_link_or_copy, symlinks=True)
    for name in ("core", "broker", "deps"):
        cache = next(p for p in (layers / name / "python").iterdir() if p.is_dir()) / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / "stray.cpython-311.pyc").write_bytes(b"bytecode")
    (layers / "core" / "python" / "stray.pyc").write_bytes(b"bytecode")
    changed = synthesise(tmp_path / "cdk.out", full.functions_dir, "dev", layers_dir=layers, **FULL_CONTEXT)
    assert _layer_keys(changed.template) == _layer_keys(full.template)
