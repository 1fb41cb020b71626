"""The ``live`` aliases of the hot-path functions follow every change of their code, layers included.

The features, regime and meta_agent functions are invoked through a ``live`` alias on
``fn.current_version``. CDK names that version by a hash of the function's properties; the layers
count only with the feature flag ``@aws-cdk/aws-lambda:recognizeLayerVersion``. Without it a
deploy that changes only the core layer (all domain code, the agents and the regime models)
updated ``$LATEST`` and published no version: the aliases kept the old code while the unversioned
functions (orders, the refit, reconcile, kill switch) ran the new one.
"""

from __future__ import annotations

import os
import shutil

from ensemble_trader.constants import FUNCTIONS

from tests.infrastructure.conftest import FULL_CONTEXT, LAYERS_DIR, synthesise

HOT_PATH = [spec for spec in FUNCTIONS if spec.hot_path]


def _link_or_copy(source: str, target: str) -> None:
    """Hard links: the deps layer is ~125 MB. Only new files are written into the copy, never an
    existing (linked) one, so build/layers is left as it was."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _layer_keys(template: dict) -> dict[str, str]:
    return {
        logical: resource["Properties"]["Content"]["S3Key"]
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::LayerVersion"
    }


def _alias_targets(template: dict) -> dict[str, str]:
    """Alias logical id -> the AWS::Lambda::Version resource its FunctionVersion points at."""
    resources = template["Resources"]
    targets = {}
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::Lambda::Alias":
            [version, attribute] = resource["Properties"]["FunctionVersion"]["Fn::GetAtt"]
            assert attribute == "Version" and resources[version]["Type"] == "AWS::Lambda::Version"
            targets[logical] = version
    return targets


def _functions(template: dict) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}


def test_a_change_to_the_core_layer_alone_publishes_a_new_version_for_every_live_alias(full, tmp_path):
    layers = tmp_path / "layers"
    shutil.copytree(LAYERS_DIR, layers, copy_function=_link_or_copy, symlinks=True)
    marker = layers / "core" / "python" / "ensemble_trader" / "_test_core_changed.py"
    marker.write_text("# the core layer changed (domain code or a model), nothing else\n")

    changed = synthesise(
        tmp_path / "cdk.out", full.functions_dir, "dev", layers_dir=layers, **FULL_CONTEXT
    ).template

    before_keys, after_keys = _layer_keys(full.template), _layer_keys(changed)
    assert before_keys.keys() == after_keys.keys() and len(before_keys) == 3
    differs = {logical for logical in before_keys if before_keys[logical] != after_keys[logical]}
    assert len(differs) == 1 and "CoreLayer" in next(iter(differs)), differs
    # the functions themselves are the same (their layers are referenced by logical id)
    assert _functions(full.template) == _functions(changed)

    before, after = _alias_targets(full.template), _alias_targets(changed)
    assert before.keys() == after.keys() and len(before) == len(HOT_PATH)
    for alias in before:
        assert before[alias] != after[alias], f"{alias} still points at {before[alias]}: the old code"
        old, new = full.template["Resources"][before[alias]], changed["Resources"][after[alias]]
        assert old["Properties"]["FunctionName"] == new["Properties"]["FunctionName"]
