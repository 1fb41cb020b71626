"""The regime model artifact: round trip, content-addressed version, corruption errors, purity."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from ensemble_trader.domain.errors import ModelArtifactError
from ensemble_trader.domain.models import Regime
from ensemble_trader.domain.regime_model import (
    MANIFEST_FILE,
    PARAMETERS_FILE,
    FeatureSpec,
    RegimeModel,
)


def make_model(covariance_type: str = "full", info: dict | None = None) -> RegimeModel:
    rng = np.random.default_rng(3)
    k, d = 4, 3
    a = rng.random((k, d, d))
    covs = np.einsum("kij,klj->kil", a, a) + 0.5 * np.eye(d)
    if covariance_type == "diag":
        covs = np.stack([np.diag(c) for c in covs])
    trans = np.full((k, k), 0.02) + np.eye(k) * 0.92
    return RegimeModel(
        features=(
            FeatureSpec("range_vol_1", "log", -4.5, 0.6),
            FeatureSpec("ret_1", "identity", 0.0003, 0.011),
            FeatureSpec("ret_20", "identity", 0.004, 0.05),
        ),
        start_prob=np.full(k, 0.25),
        transmat=trans,
        means=rng.normal(size=(k, d)),
        covariances=covs,
        covariance_type=covariance_type,
        state_regimes=(Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE),
        info=info or {"training_data_hash": "abc", "bic": 12.5, "created": "2026-01-01T00:00:00Z"},
    )


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_save_load_round_trip_is_exact(tmp_path, covariance_type):
    model = make_model(covariance_type)
    model.save(tmp_path / "m")
    loaded = RegimeModel.load(tmp_path / "m")
    assert loaded.version == model.version
    for name in ("start_prob", "transmat", "means", "covariances"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.features == model.features
    assert loaded.state_regimes == model.state_regimes
    assert loaded.info["training_data_hash"] == "abc"
    manifest = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    assert manifest["version"] == model.version
    assert manifest["n_states"] == 4 and manifest["bic"] == 12.5
    z = np.array([0.1, -0.2, 0.3])
    np.testing.assert_array_equal(loaded.log_emission(z), model.log_emission(z))


def test_version_depends_on_parameters_only():
    a = make_model(info={"created": "x"})
    b = make_model(info={"created": "y"})
    assert a.version == b.version and a.version.startswith("r")
    c = RegimeModel(
        a.features, a.start_prob, a.transmat, a.means + 1e-9, a.covariances, "full", a.state_regimes
    )
    assert c.version != a.version


def test_emission_matches_a_direct_gaussian_density():
    model = make_model("full")
    z = np.array([0.3, -1.0, 0.5])
    for k in range(model.n_states):
        cov = model.covariances[k]
        diff = z - model.means[k]
        direct = -0.5 * (
            3 * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + diff @ np.linalg.solve(cov, diff)
        )
        assert model.log_emission(z)[k] == pytest.approx(direct, abs=1e-12)
    batch = model.log_emission_matrix(np.stack([z, z * 2]))
    np.testing.assert_allclose(batch[0], model.log_emission(z), atol=1e-13)


def test_transform_logs_and_standardises():
    model = make_model()
    raw = np.array([np.exp(-4.5 + 0.6), 0.0003 + 0.011, 0.004])
    np.testing.assert_allclose(model.transform(raw), [1.0, 1.0, 0.0], atol=1e-12)
    # a zero volatility is floored, not -inf
    assert np.isfinite(model.transform(np.array([0.0, 0.0, 0.0]))).all()


def corrupt(tmp_path, edit) -> str:
    folder = make_model().save(tmp_path / "m")
    edit(folder)
    with pytest.raises(ModelArtifactError) as info:
        RegimeModel.load(folder)
    return str(info.value)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(ModelArtifactError, match="does not exist"):
        RegimeModel.load(tmp_path / "nowhere")
    assert "lacks manifest.json" in corrupt(tmp_path, lambda f: (f / MANIFEST_FILE).unlink())


def test_missing_parameters_file(tmp_path):
    assert "lacks regime_model.json" in corrupt(tmp_path, lambda f: (f / PARAMETERS_FILE).unlink())


def test_tampered_parameters_fail_the_checksum(tmp_path):
    def edit(folder):
        p = folder / PARAMETERS_FILE
        data = p.read_bytes()
        assert b"0.25" in data
        p.write_bytes(data.replace(b"0.25", b"0.26", 1))

    assert "does not match its manifest" in corrupt(tmp_path, edit)


def test_invalid_json_manifest(tmp_path):
    assert "not valid JSON" in corrupt(tmp_path, lambda f: (f / MANIFEST_FILE).write_text("{oops"))


def test_consistent_checksum_but_bad_parameters(tmp_path):
    """A re-hashed artifact with a non-stochastic matrix is still refused, by name."""

    def edit(folder):
        params = json.loads((folder / PARAMETERS_FILE).read_text())
        params["transmat"][0][0] = 5.0
        data = json.dumps(params).encode()
        (folder / PARAMETERS_FILE).write_bytes(data)
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest["parameters_sha256"] = hashlib.sha256(data).hexdigest()
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))

    assert "transmat" in corrupt(tmp_path, edit)


def test_constructor_rejects_bad_parameters():
    good = make_model()
    with pytest.raises(ModelArtifactError, match="positive definite"):
        RegimeModel(
            good.features,
            good.start_prob,
            good.transmat,
            good.means,
            -good.covariances,
            "full",
            good.state_regimes,
        )
    with pytest.raises(ModelArtifactError, match="transmat"):
        bad = good.transmat.copy()
        bad[0] = [1.0, 0.0, 0.0, 0.0]
        RegimeModel(good.features, good.start_prob, bad, good.means, good.covariances, "full", good.state_regimes)
    with pytest.raises(ModelArtifactError, match="shape"):
        RegimeModel(good.features, good.start_prob, good.transmat, good.means[:, :2], good.covariances, "full", good.state_regimes)
    with pytest.raises(ModelArtifactError, match="transform"):
        FeatureSpec("x", "sqrt", 0.0, 1.0)
    with pytest.raises(ModelArtifactError, match="lacks"):
        good.raw_vector({"ret_1": 0.0})


def test_core_import_does_not_load_training_libraries():
    code = (
        "import sys, ensemble_trader.domain.regime, ensemble_trader.domain.regime_model;"
        "bad = [m for m in ('hmmlearn', 'scipy', 'sklearn', 'torch', 'pandas') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _rehashed(folder, edit_params=None, edit_manifest=None):
    params = json.loads((folder / PARAMETERS_FILE).read_text())
    if edit_params:
        edit_params(params)
    data = json.dumps(params).encode()
    (folder / PARAMETERS_FILE).write_bytes(data)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["parameters_sha256"] = hashlib.sha256(data).hexdigest()
    if edit_manifest:
        edit_manifest(manifest)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("where", ["center", "means"])
def test_a_number_beyond_a_float_is_a_model_artifact_error(tmp_path, where):
    def edit(params):
        if where == "center":
            params["features"][0]["center"] = 10**400
        else:
            params["means"][0][0] = 10**400

    message = corrupt(tmp_path, lambda f: _rehashed(f, edit_params=edit))
    assert "int too large" in message


@pytest.mark.parametrize(("key", "value"), [("n_states", 6), ("state_regimes", ["BULL"] * 4),
                                            ("feature_names", ["ret_1", "ret_20", "range_vol_1"])])
def test_a_manifest_that_contradicts_its_parameters_is_refused(tmp_path, key, value):
    message = corrupt(tmp_path, lambda f: _rehashed(f, edit_manifest=lambda m: m.update({key: value})))
    assert f"{key} {value!r} does not match the parameters" in message


def test_probabilities_must_sum_to_one_within_1e_9_not_1e_5():
    m = make_model()
    start = np.full(4, 0.25)
    start[0] += 9e-6
    with pytest.raises(ModelArtifactError, match="start_prob: rows must sum to 1"):
        RegimeModel(m.features, start, m.transmat, m.means, m.covariances, m.covariance_type, m.state_regimes)


def test_parameters_whose_whitened_form_overflows_are_refused():
    m = make_model()
    covs = m.covariances.copy()
    covs[0] = np.eye(3) * 1e-300
    means = m.means.copy()
    means[0] = 1e200
    with pytest.raises(ModelArtifactError, match="non-finite whitened means"):
        RegimeModel(m.features, m.start_prob, m.transmat, means, covs, m.covariance_type, m.state_regimes)
