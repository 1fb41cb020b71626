"""``clip_range`` and ``ent_coef`` are bounded: (0, 1] and [0, 1] (training/agents/train.py,
``CLIP_RANGE_MAX`` and ``ENT_COEF_MAX``, measured in docs/agents.md).

Before, any clip_range > 0 and any ent_coef >= 0 was taken: clip_range 1e6 (PPO no longer clips,
one update can replace the policy) and ent_coef 1e3 (the exploration noise widens at the fastest
rate whatever the reward, and the rest of the policy learns less) trained without a word. Each
refusal test failed on the code before the bounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ensemble_trader.cli import main
from pydantic import ValidationError

import training.agents.train as train
from tests.unit.test_sagemaker_failure_file import job  # noqa: F401 - the agents' job in a container's layout
from training.agents.train import CLIP_RANGE_MAX, ENT_COEF_MAX, TrainConfig

MANIFEST = Path(__file__).resolve().parents[2] / "layers" / "models" / "agents" / "manifest.json"
CLIP = r"must be > 0 and at most 1: PPO keeps the ratio"
ENT = r"must be in \[0, 1\]: at 1 the entropy bonus"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("clip_range", 1e6, rf"clip_range=1000000.0 {CLIP}"),
    ("clip_range", 1.01, rf"clip_range=1.01 {CLIP}"),
    ("clip_range", 0, rf"clip_range=0.0 {CLIP}"),
    ("clip_range", -0.2, rf"clip_range=-0.2 {CLIP}"),
    ("ent_coef", 1e3, rf"ent_coef=1000.0 {ENT}"),
    ("ent_coef", 1.001, rf"ent_coef=1.001 {ENT}"),
    ("ent_coef", -0.01, rf"ent_coef=-0.01 {ENT}"),
])
def test_a_clip_range_or_ent_coef_beyond_the_bounds_is_refused_by_name_and_value(field, value, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate({field: value})
    with pytest.raises(ValidationError, match=rf"agent_overrides\[aggressive\]: {field}: {message}"):
        TrainConfig.model_validate({"agent_overrides": {"aggressive": {field: value}}})


@pytest.mark.parametrize("field", ["clip_range", "ent_coef"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_values_stay_refused(field, value):
    with pytest.raises(ValidationError, match=field):
        TrainConfig.model_validate({field: value})


def test_the_bounds_keep_every_value_in_use():
    """The committed agents' settings (their manifest), the defaults, each agent's built-in
    overrides, the values docs/agents.md searched (ent_coef 0-0.1) and the bounds themselves."""
    manifest = json.loads(MANIFEST.read_text())
    used = {(e["hyperparameters"]["clip_range"], e["hyperparameters"]["ent_coef"])
            for e in manifest["agents"].values()}
    assert used == {(0.2, 0.0), (0.2, 0.03), (0.2, 0.01)}
    searched = {(0.2, c) for c in (0.0, 0.003, 0.01, 0.03, 0.06, 0.1)}
    for clip, ent in used | searched | {(CLIP_RANGE_MAX, ENT_COEF_MAX), (1e-9, 0.0), (0.1, 0.3)}:
        config = TrainConfig(clip_range=clip, ent_coef=ent, quick=True)
        assert (config.clip_range, config.ent_coef) == (clip, ent)
    default = TrainConfig()
    assert (default.clip_range, default.ent_coef) == (0.2, 0.0)
    for agent in default.agents:
        settled = default.for_agent(agent)
        assert 0 < settled.clip_range <= CLIP_RANGE_MAX and 0 <= settled.ent_coef <= ENT_COEF_MAX
    assert (CLIP_RANGE_MAX, ENT_COEF_MAX) == (1.0, 1.0)


@pytest.mark.parametrize(("hp", "message"), [
    ("clip_range=1e6", "bad training parameters: clip_range=1000000.0 must be > 0 and at most 1"),
    ('agent_overrides={"balanced": {"ent_coef": 1000}}',
     "bad training parameters: agent_overrides[balanced]: ent_coef: ent_coef=1000.0 must be in [0, 1]"),
])
def test_the_cli_refuses_them_in_one_line_before_the_job(hp, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("the job ran"))
    assert main(["train", "agents", "--quick", "--hp", hp, "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ensemble-trader: error: {message}") and err.count("\n") == 1


def test_the_sagemaker_job_refuses_them_before_reading_bars(job, capsys):  # noqa: F811 - the imported fixture
    code, text, err = job({"quick": "true", "bars": "synth:realistic:11:600", "ent_coef": "1000"}, capsys)
    assert code == 1
    assert "ent_coef=1000.0 must be in [0, 1]" in text
    assert "Traceback" not in err  # and no model was written (the fixture checks it)
