"""``ensemble-trader train agents --quick`` never replaces the committed model set."""

from __future__ import annotations

import pytest
from ensemble_trader.cli import main


def no_training(*args, **kwargs):
    raise AssertionError("a quick set was trained into the committed folder")


@pytest.mark.parametrize("out", [None, "same", "dotted"])
def test_a_quick_set_into_the_committed_folder_is_refused(out, models_copy, monkeypatch, capsys):
    import training.agents.train as train

    monkeypatch.setattr(train, "run_job", no_training)
    before = (models_copy / "agents" / "manifest.json").read_bytes()
    argv = ["train", "agents", "--quick", "--no-progress"]
    if out == "same":
        argv += ["--out", str(models_copy / "agents")]
    elif out == "dotted":
        argv += ["--out", str(models_copy / "regime" / ".." / "agents")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--quick" in err and "pass --out DIR" in err and str(models_copy / "agents") in err
    assert (models_copy / "agents" / "manifest.json").read_bytes() == before


def test_a_quick_set_into_the_repository_folder_is_refused_when_the_settings_point_elsewhere(
        models_copy, monkeypatch, capsys):
    """With ET_MODELS_DIR set, the guard compared --out with $ET_MODELS_DIR/agents only: --quick
    --out layers/models/agents (the committed set in the repository) went ahead."""
    from ensemble_trader.runtime.settings import PACKAGE_DIR

    import training.agents.train as train

    monkeypatch.setattr(train, "run_job", no_training)
    repository = PACKAGE_DIR.parents[1] / "models" / "agents"
    assert repository.resolve() != (models_copy / "agents").resolve()
    assert main(["train", "agents", "--quick", "--no-progress", "--out", str(repository)]) == 2
    err = capsys.readouterr().err
    assert "--quick" in err and "pass --out DIR" in err and str(repository) in err


def test_a_quick_set_elsewhere_and_a_full_run_into_the_committed_folder_go_ahead(models_copy, tmp_path, monkeypatch):
    import training.agents.train as train

    calls = []

    def fake_job(config, out, progress):
        calls.append((config.quick, out))
        return {"version": "agents-x", "training": {"seconds_total": 0.0}, "agents": {}}

    monkeypatch.setattr(train, "run_job", fake_job)
    assert main(["train", "agents", "--quick", "--no-progress", "--out", str(tmp_path / "runs")]) == 0
    assert main(["train", "agents", "--no-progress"]) == 0  # a full training run may replace the set
    assert calls == [(True, tmp_path / "runs"), (False, models_copy / "agents")]
