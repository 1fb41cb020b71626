"""AgentPool: loading and verifying a model set, decisions, clear errors on bad artifacts.

The model sets here are tiny linear policies written with ``onnx.helper`` (no torch), with the
same input/output contract as the exported PPO policies.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from ensemble_trader.domain.agents import AGENT_NAMES, DEFAULT_LEVERAGE, AgentManifest, AgentPool
from ensemble_trader.domain.errors import DataError, ModelArtifactError
from ensemble_trader.domain.features import FEATURE_NAMES, FEATURE_VERSION
from onnx import TensorProto, helper, numpy_helper

from training.agents.modelset import write_model_set

FEATURES = tuple(f"f{i}" for i in range(5))
OPSET = [helper.make_opsetid("", 18)]


def _agent_graph(w: np.ndarray, b: float, limit: float) -> onnx.ModelProto:
    """action = clip(obs @ w + b, -limit, limit) with obs (n, F+1)."""
    nodes = [
        helper.make_node("MatMul", ["obs", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["raw"]),
        helper.make_node("Clip", ["raw", "lo", "hi"], ["action"]),
    ]
    inits = [
        numpy_helper.from_array(w.reshape(-1, 1).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([b], np.float32), "b"),
        numpy_helper.from_array(np.array(-limit, np.float32), "lo"),
        numpy_helper.from_array(np.array(limit, np.float32), "hi"),
    ]
    graph = helper.make_graph(
        nodes,
        "agent",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", len(w)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["n", 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _fused_graph(ws: np.ndarray, bs: np.ndarray, limits: np.ndarray) -> onnx.ModelProto:
    """actions[:, i] = clip(features @ ws[i, :F] + positions[:, i] * ws[i, F] + bs[i])."""
    f = ws.shape[1] - 1
    nodes = [
        helper.make_node("MatMul", ["features", "wf"], ["fw"]),
        helper.make_node("Mul", ["positions", "wp"], ["pw"]),
        helper.make_node("Add", ["fw", "pw"], ["s"]),
        helper.make_node("Add", ["s", "b"], ["raw"]),
        helper.make_node("Max", ["raw", "lo"], ["m"]),
        helper.make_node("Min", ["m", "hi"], ["actions"]),
    ]
    inits = [
        numpy_helper.from_array(ws[:, :f].T.astype(np.float32), "wf"),
        numpy_helper.from_array(ws[:, f].astype(np.float32), "wp"),
        numpy_helper.from_array(bs.astype(np.float32), "b"),
        numpy_helper.from_array((-limits).astype(np.float32), "lo"),
        numpy_helper.from_array(limits.astype(np.float32), "hi"),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", f]),
            helper.make_tensor_value_info("positions", TensorProto.FLOAT, ["n", ws.shape[0]]),
        ],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["n", ws.shape[0]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=OPSET)


@pytest.fixture
def model_set(tmp_path):
    rng = np.random.default_rng(0)
    ws = rng.normal(size=(4, len(FEATURES) + 1))
    bs = rng.normal(size=4) * 0.1
    limits = np.array([DEFAULT_LEVERAGE[n] for n in AGENT_NAMES])
    agents = {}
    for i, name in enumerate(AGENT_NAMES):
        onnx.save(_agent_graph(ws[i], bs[i], limits[i]), tmp_path / f"{name}.onnx")
        agents[name] = {"file": f"{name}.onnx", "leverage": float(limits[i]), "reward": {"kind": name}}
    onnx.save(_fused_graph(ws, bs, limits), tmp_path / "pool.onnx")
    write_model_set(tmp_path, agents=agents, feature_names=FEATURES, fused_file="pool.onnx", training={"seed": 0})
    return tmp_path, ws, bs, limits


def _expected(ws, bs, limits, features, positions):
    obs_w = features @ ws[:, :-1].T + positions * ws[:, -1] + bs
    return np.clip(obs_w, -limits, limits)


@pytest.mark.parametrize("fused", [True, False])
def test_act_matches_the_policies(model_set, fused):
    folder, ws, bs, limits = model_set
    pool = AgentPool.load(folder, fused=fused, feature_names=FEATURES)
    assert pool.names == AGENT_NAMES
    assert pool.leverage == DEFAULT_LEVERAGE
    assert pool.version.startswith("agents-")
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, len(FEATURES))) * 3
    positions = rng.uniform(-1, 1, size=(50, 4))
    out = pool.act_batch(features, positions)
    assert out.shape == (50, 4)
    np.testing.assert_allclose(out, _expected(ws, bs, limits, features, positions), atol=1e-5)
    assert np.all(np.abs(out) <= limits + 1e-7)
    one = pool.act(features[3], positions[3])
    np.testing.assert_allclose(one, out[3], atol=1e-6)


def _banded_set(folder, bands):
    """Rewrite the fixture's manifest with the given no-trade bands (the files are unchanged)."""
    raw = json.loads((folder / "manifest.json").read_text())
    agents = {n: {k: v for k, v in e.items() if k != "sha256"} | {"no_trade_band": bands.get(n, 0.0)}
              for n, e in raw["agents"].items()}
    return write_model_set(folder, agents=agents, feature_names=FEATURES, fused_file="pool.onnx", training={})


@pytest.mark.parametrize("fused", [True, False])
def test_no_trade_band_holds_inside_and_trades_to_the_near_edge(model_set, fused):
    """target = clip(position, action - b, action + b): inside the band nothing trades; outside
    it the agent trades only to the band's edge; the result stays within ±L."""
    folder, ws, bs, limits = model_set
    plain = AgentPool.load(folder, fused=fused, feature_names=FEATURES)
    bands = {"conservative": 0.2, "aggressive": 0.5, "balanced": 0.0, "contrarian": 2.0}
    manifest = _banded_set(folder, bands)
    pool = AgentPool.load(folder, fused=fused, feature_names=FEATURES)
    assert pool.no_trade_band == bands
    assert manifest.version != plain.version  # the band changes what is served, so the version
    rng = np.random.default_rng(7)
    features = rng.normal(size=(200, len(FEATURES))) * 3
    positions = rng.uniform(-1, 1, size=(200, 4)) * limits
    actions = plain.act_batch(features, positions)
    out = pool.act_batch(features, positions)
    b = np.array([bands[n] for n in AGENT_NAMES])
    inside = np.abs(actions - positions) <= b
    assert inside[:, 0].any() and (~inside[:, 0]).any()
    np.testing.assert_allclose(out[inside], positions[inside], atol=1e-6)
    edge = actions - np.sign(actions - positions) * b
    np.testing.assert_allclose(out[~inside], edge[~inside], atol=1e-6)
    np.testing.assert_allclose(out[:, 2], actions[:, 2], atol=1e-7)  # band 0: the policy itself
    np.testing.assert_allclose(out[:, 3], positions[:, 3], atol=1e-6)  # band 2 ≥ 2L: never trades
    assert np.all(np.abs(out) <= limits + 1e-6)
    for i in range(0, 200, 37):
        np.testing.assert_allclose(pool.act(features[i], positions[i]), out[i], atol=1e-6)


def test_with_no_trade_bands_shares_the_policies_and_names_the_change(model_set):
    folder, *_ = model_set
    plain = AgentPool.load(folder, feature_names=FEATURES)
    _banded_set(folder, {"contrarian": 0.3})
    stored = AgentPool.load(folder, feature_names=FEATURES)
    derived = plain.with_no_trade_bands({"contrarian": 0.3})
    assert derived.version == f"{plain.version}+band[contrarian=0.3]"
    assert derived.no_trade_band == stored.no_trade_band
    x = np.random.default_rng(8).normal(size=(30, len(FEATURES))) * 3
    p = np.random.default_rng(9).uniform(-1, 1, size=(30, 4))
    np.testing.assert_array_equal(derived.act_batch(x, p), stored.act_batch(x, p))
    assert plain.no_trade_band["contrarian"] == 0.0  # the original pool is unchanged
    with pytest.raises(DataError, match="unknown agents"):
        plain.with_no_trade_bands({"momentum": 0.1})
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        plain.with_no_trade_bands({"balanced": -0.1})


def test_fused_and_separate_agree(model_set):
    folder, *_ = model_set
    x = np.random.default_rng(2).normal(size=(20, len(FEATURES)))
    p = np.zeros((20, 4))
    np.testing.assert_allclose(
        AgentPool.load(folder, fused=True, feature_names=FEATURES).act_batch(x, p),
        AgentPool.load(folder, fused=False, feature_names=FEATURES).act_batch(x, p),
        atol=1e-6,
    )


def test_from_files_builds_the_pool_from_any_reader_without_a_folder(model_set):
    """The pure constructor: the set's bytes from a dict (as from an S3 prefix) give the same
    decisions as the folder; a file absent from the reader is named."""
    folder, *_ = model_set
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    pool = AgentPool.from_files(files.__getitem__, source="s3://registry/agents/v1", feature_names=FEATURES)
    x = np.random.default_rng(3).normal(size=(8, len(FEATURES)))
    p = np.random.default_rng(4).uniform(-1, 1, size=(8, 4))
    np.testing.assert_array_equal(
        pool.act_batch(x, p), AgentPool.load(folder, feature_names=FEATURES).act_batch(x, p)
    )
    del files["aggressive.onnx"]
    with pytest.raises(ModelArtifactError, match=r"s3://registry/agents/v1: aggressive\.onnx is missing"):
        AgentPool.from_files(files.__getitem__, source="s3://registry/agents/v1", feature_names=FEATURES)


def test_corrupted_file_is_named(model_set):
    folder, *_ = model_set
    with open(folder / "balanced.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelArtifactError, match=r"balanced\.onnx is corrupted"):
        AgentPool.load(folder, feature_names=FEATURES)


def test_missing_file_is_named(model_set):
    folder, *_ = model_set
    (folder / "contrarian.onnx").unlink()
    with pytest.raises(ModelArtifactError, match=r"contrarian\.onnx is missing"):
        AgentPool.load(folder, feature_names=FEATURES)


def test_missing_manifest_and_folder(model_set, tmp_path):
    folder, *_ = model_set
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelArtifactError, match=r"manifest\.json is missing"):
        AgentPool.load(folder, feature_names=FEATURES)
    with pytest.raises(ModelArtifactError, match="does not exist"):
        AgentPool.load(tmp_path / "nowhere")


def test_invalid_manifest_names_the_field(model_set):
    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    raw["agents"]["balanced"]["sha256"] = "not-a-hash"
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelArtifactError, match=r"agents\.balanced\.sha256"):
        AgentPool.load(folder, feature_names=FEATURES)


def test_graph_that_is_not_onnx_is_rejected(model_set):
    folder, *_ = model_set
    (folder / "aggressive.onnx").write_bytes(b"garbage")
    raw = json.loads((folder / "manifest.json").read_text())
    raw["agents"]["aggressive"]["sha256"] = hashlib.sha256(b"garbage").hexdigest()
    sealed = AgentManifest.model_validate(raw).sealed()  # a consistent manifest: version and record
    (folder / "manifest.json").write_text(sealed.model_dump_json())
    with pytest.raises(ModelArtifactError, match=r"aggressive\.onnx: onnxruntime cannot load it"):
        AgentPool.load(folder, feature_names=FEATURES)


@pytest.mark.parametrize(("field", "value"), [("no_trade_band", 0.3), ("leverage", 1.0)])
def test_a_manifest_edited_after_writing_is_refused(model_set, field, value):
    """A band or a leverage limit changes what the agents do, so it is part of the version: an
    edit that keeps the old version would let the meta-agent carry state over a changed set."""
    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    raw["agents"]["aggressive"][field] = value
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelArtifactError, match=r"says version agents-\w+, but its agents' files, no-trade bands and "
                                                 r"leverage limits give agents-\w+: the manifest was edited"):
        AgentPool.load(folder, feature_names=FEATURES)
    # written properly, the same change loads, under a new version
    before = raw["version"]
    agents = {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in raw["agents"].items()}
    written = write_model_set(folder, agents=agents, feature_names=FEATURES, fused_file="pool.onnx", training={})
    assert written.version != before
    assert AgentPool.load(folder, feature_names=FEATURES).version == written.version


@pytest.mark.parametrize("edit", [
    lambda m: m["agents"]["conservative"]["reward"].update(kind="other"),  # a reward parameter
    lambda m: m["training"].update(seed=999),  # the job's seed
    lambda m: m["training"].update(data_sha256="0" * 64),  # the training data
    lambda m: m.update(created="2020-01-01T00:00:00Z"),
])
def test_an_edited_record_is_refused_at_load(model_set, edit):
    """What the version does not cover (how the agents were trained, their metrics) is pinned by
    the record's digest: an edit that keeps the served content loads no longer."""
    folder, *_ = model_set
    manifest = folder / "manifest.json"
    raw = json.loads(manifest.read_text())
    assert len(raw["record_sha256"]) == 64
    manifest.write_text(json.dumps(raw, indent=4, sort_keys=True))  # another layout and key order: the same record
    assert AgentPool.load(folder, feature_names=FEATURES).manifest.record_sha256 == raw["record_sha256"]
    edit(raw)
    manifest.write_text(json.dumps(raw))
    with pytest.raises(ModelArtifactError, match=r"manifest\.json's record \(reward parameters.*does not match its "
                                                 r"record_sha256: the manifest was edited after the set was written"):
        AgentPool.load(folder, feature_names=FEATURES)


def test_the_record_digest_is_of_the_file_not_of_the_model_s_defaults(model_set):
    """The digest hashes the file's own JSON object: a field the model fills with a default when
    the file lacks it (as a field added to the model after the set was written would be) does not
    change it, so such an older set still loads."""
    from ensemble_trader.domain.agents import record_digest

    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["agents"]["balanced"]["algorithm"]  # a defaulted field ("PPO"), absent from the file
    raw["record_sha256"] = record_digest(raw)
    (folder / "manifest.json").write_text(json.dumps(raw))
    pool = AgentPool.load(folder, feature_names=FEATURES)
    assert pool.manifest.agents["balanced"].algorithm == "PPO"
    assert pool.manifest.record_digest() != raw["record_sha256"]  # the model's dump has the default in it


def test_a_manifest_written_before_the_record_digest_still_loads(model_set):
    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["record_sha256"]
    raw["training"]["seed"] = 999  # unchecked: nothing pins the record of such a manifest
    (folder / "manifest.json").write_text(json.dumps(raw))
    pool = AgentPool.load(folder, feature_names=FEATURES)
    assert pool.manifest.record_sha256 is None and pool.version == raw["version"]


def test_a_fused_graph_that_does_not_match_the_agents_is_refused_at_load(model_set, tmp_path_factory):
    folder, ws, bs, limits = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    # the manifest lists three agents but keeps the four-agent fused graph
    three = {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in raw["agents"].items() if n != "contrarian"}
    write_model_set(folder, agents=three, feature_names=FEATURES, fused_file="pool.onnx", training={})
    with pytest.raises(ModelArtifactError, match=r"pool\.onnx cannot evaluate the manifest's 3 agents"):
        AgentPool.load(folder, feature_names=FEATURES)
    assert AgentPool.load(folder, fused=False, feature_names=FEATURES).names == AGENT_NAMES[:3]
    # another set's fused graph (other weights), properly hashed
    onnx.save(_fused_graph(ws * 0.5, bs, limits), folder / "pool.onnx")
    four = {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in raw["agents"].items()}
    write_model_set(folder, agents=four, feature_names=FEATURES, fused_file="pool.onnx", training={})
    with pytest.raises(ModelArtifactError, match=r"pool\.onnx does not compute the per-agent graphs' actions"):
        AgentPool.load(folder, feature_names=FEATURES)


def test_bad_inputs_are_typed_errors(model_set):
    folder, *_ = model_set
    pool = AgentPool.load(folder, feature_names=FEATURES)
    with pytest.raises(DataError, match="features must have shape"):
        pool.act(np.zeros(len(FEATURES) + 1), np.zeros(4))
    with pytest.raises(DataError, match="positions must have shape"):
        pool.act(np.zeros(len(FEATURES)), np.zeros(3))
    with pytest.raises(DataError, match="finite"):
        pool.act(np.full(len(FEATURES), np.nan), np.zeros(4))


def test_feature_names_must_match_the_feature_engine(model_set):
    folder, *_ = model_set
    with pytest.raises(ModelArtifactError, match="trained on features"):
        AgentPool.load(folder)  # default: the engine's FEATURE_NAMES, not f0..f4


def test_a_set_trained_on_other_feature_formulas_is_refused(model_set):
    """The same feature names computed by changed formulas (FEATURE_VERSION bumped) are other
    inputs: a set records the version it was trained on, and it is part of the set's version."""
    folder, *_ = model_set
    current, other = FEATURE_VERSION, str(int(FEATURE_VERSION) + 1)
    assert AgentPool.load(folder, feature_names=FEATURES).feature_version == current
    raw = json.loads((folder / "manifest.json").read_text())
    agents = {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in raw["agents"].items()}
    old = write_model_set(folder, agents=agents, feature_names=FEATURES, feature_version=current,
                          fused_file="pool.onnx", training={})
    new = write_model_set(folder, agents=agents, feature_names=FEATURES, feature_version=other,
                          fused_file="pool.onnx", training={})
    assert new.version != old.version
    with pytest.raises(ModelArtifactError,
                       match=f"trained on feature version {other}, but this code computes version {current}"):
        AgentPool.load(folder, feature_names=FEATURES)
    assert AgentPool.load(folder, feature_names=FEATURES, feature_version=other).feature_version == other


def test_writing_a_set_whose_fused_graph_is_missing_names_it(model_set):
    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    agents = {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in raw["agents"].items()}
    with pytest.raises(ModelArtifactError, match="nope.onnx does not exist"):
        write_model_set(folder, agents=agents, feature_names=FEATURES, fused_file="nope.onnx", training={})


def test_committed_model_set_is_intact():
    """The set in layers/models/agents loads, matches the feature engine and respects leverage."""
    pool = AgentPool.load()
    assert pool.names == AGENT_NAMES
    assert pool.feature_names == FEATURE_NAMES
    assert pool.manifest.record_sha256 == pool.manifest.record_digest()  # its record is pinned too
    assert pool.manifest.fused is not None
    training = pool.manifest.training
    assert max(training["onnx_parity_max_abs_error"].values()) <= 1e-5
    for windows in training["windows"].values():  # each series' windows in time order, disjoint
        spans = [windows[name] for name in ("train", "validation", "test") if name in windows]
        assert all(a[0] <= a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    # in calendar time: no real series is validated or tested on a period another one trained on
    real = {spec: w for spec, w in training["windows"].items() if not spec.startswith("synth:")}
    last_trained = max(w["train"][1] for w in real.values() if "train" in w)
    assert all(w[name][0] > last_trained for w in real.values() for name in ("validation", "test") if name in w)
    x = np.random.default_rng(3).normal(size=(32, len(FEATURE_NAMES)))
    out = pool.act_batch(x, np.zeros((32, 4)))
    assert np.all(np.abs(out) <= np.array([pool.leverage[n] for n in AGENT_NAMES]) + 1e-6)


def test_swapping_two_agents_files_changes_the_version(model_set):
    """Which file serves which agent is part of the version: a manifest whose two agents'
    entries were swapped (same leverage) would serve one agent's policy under the other's name."""
    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    cons, contr = raw["agents"]["conservative"], raw["agents"]["contrarian"]
    for key in ("file", "sha256"):
        cons[key], contr[key] = contr[key], cons[key]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelArtifactError, match=r"the manifest was edited"):
        AgentPool.load(folder, feature_names=FEATURES, fused=False)


def _replace_balanced(folder, graph: onnx.ModelProto, fused: bool = False):
    """The fixture's set with the Balanced's graph replaced (a consistent, re-hashed manifest)."""
    onnx.save(graph, folder / "balanced.onnx")
    raw = json.loads((folder / "manifest.json").read_text())
    agents = {n: {k: v for k, v in e.items() if k != "sha256"} for n, e in raw["agents"].items()}
    return write_model_set(folder, agents=agents, feature_names=FEATURES,
                           fused_file="pool.onnx" if fused else None, training={})


def _renamed_input(graph: onnx.ModelProto, name: str) -> onnx.ModelProto:
    for node in graph.graph.node:
        node.input[:] = [name if i == "obs" else i for i in node.input]
    graph.graph.input[0].name = name
    return graph


def _two_outputs(w: np.ndarray) -> onnx.ModelProto:
    """action (n, 2): the first column a policy, the second anything — one action too many."""
    w2 = np.column_stack([w, w]).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["action"])], "agent",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", len(w)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(w2, "w")],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _int_action(w: np.ndarray) -> onnx.ModelProto:
    """The policy's action cast to int64: it loads and runs, but serves whole units only."""
    graph = _agent_graph(w, 0.0, 1.0)
    graph.graph.node.append(helper.make_node("Cast", ["action"], ["action_int"], to=TensorProto.INT64))
    graph.graph.output[0].CopyFrom(helper.make_tensor_value_info("action_int", TensorProto.INT64, ["n", 1]))
    return graph


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda w: _int_action(w), r"must give one float32 output, it gives action_int: tensor\(int64\)"),
        (lambda w: _renamed_input(_agent_graph(w, 0.0, 1.0), "x"), "must take one float32 input 'obs', it takes x"),
        (lambda w: _two_outputs(w), r"must give one action per observation, it gives shape \(4, 2\)"),
        (lambda w: _agent_graph(w * np.nan, 0.0, 1.0), "gives non-finite actions"),
    ],
)
def test_a_per_agent_graph_of_the_wrong_kind_is_refused_at_load(model_set, fused, make, what):
    folder, ws, _, _ = model_set
    _replace_balanced(folder, make(ws[2]), fused=fused)
    with pytest.raises(ModelArtifactError, match=f"balanced.onnx {what}"):
        AgentPool.load(folder, fused=fused, feature_names=FEATURES)


def test_a_nan_action_at_run_time_is_a_model_error_not_a_position(model_set):
    folder, *_ = model_set
    pool = AgentPool.load(folder, fused=False, feature_names=FEATURES)
    features = np.zeros(len(FEATURES))

    class NanSession:  # a graph that diverges only on some inputs, after the load-time probe
        def run(self, outputs, feeds):
            return [np.full((1, 1), np.nan, np.float32)]

    pool._sessions[2] = NanSession()
    with pytest.raises(ModelArtifactError, match="gave a NaN action for finite inputs"):
        pool.act(features, np.zeros(4))


def test_a_manifest_of_another_format_is_refused(model_set):
    folder, *_ = model_set
    raw = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(raw | {"format": 99}))
    with pytest.raises(ModelArtifactError, match="manifest format 99; this code reads format 1"):
        AgentPool.load(folder, feature_names=FEATURES)
