"""Quick training end to end: CLI → PPO → ONNX (parity-checked) → manifest → AgentPool → evaluate.

The SageMaker entry point is exercised with local folders standing in for the channels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest.metrics import METRIC_NAMES
from ensemble_trader.cli import main
from ensemble_trader.domain.agents import AGENT_NAMES, AgentPool, read_manifest, sha256_file
from ensemble_trader.domain.features import FEATURE_NAMES
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv, write_truth_csv

from training.agents.evaluate import main as evaluate_main
from training.agents.train import AGENT_OVERRIDES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("agents")
    code = main(["train", "agents", "--quick", "--seed", "3", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_quick_training_writes_a_verified_model_set(quick_set):
    manifest = read_manifest(quick_set)
    assert manifest.names == AGENT_NAMES
    assert manifest.feature_names == FEATURE_NAMES
    assert manifest.fused is not None
    for entry in list(manifest.agents.values()) + [manifest.fused]:
        assert sha256_file(quick_set / entry.file) == entry.sha256
    training = manifest.training
    assert training["seed"] == 3 and training["quick"] is True
    assert len(training["data_sha256"]) == 64
    assert max(training["onnx_parity_max_abs_error"].values()) <= 1e-5
    # walk-forward: validation starts after training ends, test after validation
    for windows in training["windows"].values():
        assert windows["train"][1] < windows["validation"][0] <= windows["validation"][1] < windows["test"][0]
    # each agent is selected on the validation windows of the series it trains on
    assert training["agent_validation_data"] == training["agent_data"]
    for name in AGENT_NAMES:
        entry = manifest.agents[name]
        assert entry.reward["name"] == name
        assert "score" in entry.validation and entry.test
    assert manifest.agents["aggressive"].leverage == 2.0
    # the served no-trade bands are the job's per-agent settings, outside the training itself
    assert {n: e.no_trade_band for n, e in manifest.agents.items()} == {
        n: AGENT_OVERRIDES[n].get("no_trade_band", 0.0) for n in AGENT_NAMES}
    assert {n: e.hyperparameters["band_in_training"] for n, e in manifest.agents.items()} == {
        n: AGENT_OVERRIDES[n].get("band_in_training", False) for n in AGENT_NAMES}


def test_the_job_is_deterministic(tmp_path):
    """The same configuration writes the same set: the same ONNX files, version and record, but
    for when and how long it ran (``make train`` reproducing the committed set rests on this)."""
    from training.agents.train import TrainConfig, run_job

    def record(folder: Path) -> dict:
        manifest = json.loads((folder / "manifest.json").read_text())
        for key in ("created", "record_sha256"):
            manifest.pop(key)
        for key in ("seconds_total", "seconds_per_agent"):
            manifest["training"].pop(key)
        return manifest

    runs = []
    for name in ("first", "second"):
        run_job(TrainConfig(quick=True, agents=("balanced",), seed=5), tmp_path / name, progress=False)
        files = {p.name: sha256_file(p) for p in sorted((tmp_path / name).glob("*.onnx"))}
        runs.append((files, record(tmp_path / name)))
    (files, first), (again, second) = runs
    assert files and files == again
    assert first == second
    # not only untrained networks: some seed's selected policy was trained
    assert any(step > 0 for step in first["agents"]["balanced"]["validation"]["selected_at"])


def test_robustness_reports_the_checks_over_unseen_synthetic_paths(quick_set, capsys):
    code = evaluate_main(["--models", str(quick_set), "--robustness", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "seeds 3001-3002" in out
    rows = [line for line in out.splitlines() if line.startswith(("| realistic", "| mean_reverting"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert len(cells) == len(AGENT_NAMES)
        assert all(c.split(" ")[0].endswith("/2") for c in cells)  # every check judged on both paths
    passed = sum(int(c.split("/")[0]) for row in rows for c in [x.strip() for x in row.strip("|").split("|")][1:])
    assert f"**{passed} of 16 checks passed**" in out


def test_validation_score_runs_on_validation_paths(quick_set, capsys):
    code = evaluate_main(["--models", str(quick_set), "--split", "validation", "--score", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "synthetic seeds 4001-4002" in out
    scores = json.loads(out.split("scores: ")[1])
    assert set(scores) == set(AGENT_NAMES)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in out.splitlines() if line.startswith(tuple(f"| {n} " for n in AGENT_NAMES))}
    for name, cells in rows.items():
        # the quick set saw no real series: the score is the two synthetic pass rates
        rates = [int(c.split("/")[0]) / int(c.split("/")[1]) for c in cells[:-2]]
        assert len(rates) == 2 and scores[name]["score"] == pytest.approx(sum(rates), abs=1e-4)


def test_band_search_scores_every_band_on_validation_and_picks_by_the_rule(quick_set, capsys):
    code = evaluate_main(["--models", str(quick_set), "--split", "validation", "--bands", "0,0.3", "--score", "2"])
    assert code == 0
    out = capsys.readouterr().out
    chosen = json.loads(out.rsplit("chosen: ", 1)[1])
    assert set(chosen) == set(AGENT_NAMES) and set(chosen.values()) <= {0.0, 0.3}
    for name in AGENT_NAMES:
        assert f"**{name}** (chosen: {chosen[name]:g})" in out
    assert "test window" not in out and "seeds 4001-4002" in out  # never the test split


def test_served_pool_respects_leverage(quick_set):
    pool = AgentPool.load(quick_set)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, len(FEATURE_NAMES))) * 5
    positions = rng.uniform(-1, 1, size=(64, 4))
    out = pool.act_batch(features, positions)
    limits = np.array([pool.leverage[n] for n in pool.names])
    assert np.all(np.abs(out) <= limits + 1e-6)
    np.testing.assert_allclose(out, AgentPool.load(quick_set, fused=False).act_batch(features, positions), atol=1e-5)


def test_evaluate_json_shape(quick_set, tmp_path, capsys):
    data = generate("realistic", 600, seed=41)
    bars, truth = tmp_path / "bars.csv", tmp_path / "truth.csv"
    write_bars_csv(bars, data.series)
    write_truth_csv(truth, data)
    capsys.readouterr()
    code = main(["evaluate", "agents", "--models", str(quick_set), "--bars", str(bars), "--truth", str(truth), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"agents", "baselines", "run"}
    assert set(report["agents"]) == set(AGENT_NAMES)
    assert set(report["baselines"]) == {"buy_and_hold", "cash"}
    for block in list(report["agents"].values()) + list(report["baselines"].values()):
        assert set(block["overall"]) == set(METRIC_NAMES)
        assert set(block["by_regime"]) <= {"BULL", "BEAR", "SIDEWAYS", "VOLATILE"}
        assert block["by_regime"]
        for metrics in [block["overall"], *block["by_regime"].values()]:
            assert set(metrics) == set(METRIC_NAMES)
            assert 0.0 <= metrics["max_drawdown"] < 1.0  # a positive fraction of the peak
    assert report["baselines"]["cash"]["overall"]["total_return"] == 0.0
    assert report["baselines"]["buy_and_hold"]["overall"]["max_drawdown"] > 0.0  # 600 bars of a random walk fall somewhere


def test_sagemaker_entry_point_with_local_channels(tmp_path):
    train_dir, val_dir, model_dir = tmp_path / "train", tmp_path / "validation", tmp_path / "model"
    write_bars_csv(train_dir / "syn.csv", generate("realistic", 700, seed=1, symbol="TRN").series)
    write_bars_csv(val_dir / "syn.csv", generate("realistic", 400, seed=2, symbol="VAL").series)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        SM_CHANNEL_TRAIN=str(train_dir),
        SM_CHANNEL_VALIDATION=str(val_dir),
        SM_MODEL_DIR=str(model_dir),
        SM_HPS=json.dumps(
            # the job-level n_seeds applies where AGENT_OVERRIDES sets none for the agent
            {"quick": "true", "seed": "5", "total_timesteps": "512", "agents": "conservative", "n_seeds": "2"}
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "training.agents.train"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = read_manifest(model_dir)
    assert manifest.names == ("conservative",)
    assert manifest.training["seed"] == 5
    assert manifest.training["validation_data"] == [str(val_dir / "syn.csv")]
    # two seeds trained (5 + index of the conservative, and +100) and bagged: one graph averaging
    # both, scored again on the validation channel
    entry = manifest.agents["conservative"]
    assert set(entry.validation["seed_scores"]) == {"5", "105"}
    assert entry.hyperparameters["bagged_seeds"] == [5, 105]
    # the setting a rerun passes (per seed), beside the steps both seeds took
    assert entry.hyperparameters["total_timesteps"] == 512
    assert entry.hyperparameters["timesteps_trained"] >= 2 * 512
    assert len(entry.validation["selected_at"]) == 2
    assert {row["seed"] for row in manifest.training["validation_history"]["conservative"]} == {5, 105}
    assert manifest.training["onnx_parity_max_abs_error"]["conservative"] <= 1e-5
    assert json.loads(proc.stdout.strip().splitlines()[-1])["version"] == manifest.version


def test_a_job_failing_after_export_leaves_the_old_set_loadable(tmp_path, monkeypatch):
    """The set is written and checked in a staging folder and moved in, manifest last: a job that
    fails after writing a graph (here the parity check of an exported file) leaves the folder's set
    as it was — it once left the new graph beside the old manifest, a set that no longer loaded."""
    from ensemble_trader.domain.errors import ModelArtifactError

    import training.agents.export as export
    from training.agents.train import STAGING_PREFIX, TrainConfig, run_job

    def config(seed: int) -> TrainConfig:
        return TrainConfig.model_validate({"quick": True, "seed": seed, "agents": "conservative",
                                           "total_timesteps": 256, "eval_every": 256, "agent_overrides": {}})

    out = tmp_path / "agents"
    run_job(config(1), out, progress=False)
    old = AgentPool.load(out).version
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_export = export.export_policy

    def export_then_fail(policy, path, heldout_obs):
        real_export(policy, path, heldout_obs)  # the graph is written, then its check fails
        raise ModelArtifactError(f"{path.name}: onnxruntime differs from torch (simulated)")

    monkeypatch.setattr(export, "export_policy", export_then_fail)
    with pytest.raises(ModelArtifactError, match="simulated"):
        run_job(config(2), out, progress=False)
    assert AgentPool.load(out).version == old
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left either

    monkeypatch.setattr(export, "export_policy", real_export)
    manifest = run_job(config(2), out, progress=False)
    assert AgentPool.load(out).version == manifest["version"] != old
    assert sorted(p.name for p in out.iterdir()) == ["conservative.onnx", "manifest.json"]
    assert not list(out.glob(f"{STAGING_PREFIX}*"))
