"""The regime model artifact: a Gaussian hidden Markov model as plain arrays.

Training (``training/regime``) fits the model with hmmlearn and exports it here; the online
detector (:mod:`ensemble_trader.domain.regime`) evaluates it with numpy alone, so the Lambda
bundle needs neither hmmlearn nor scipy nor scikit-learn.

An artifact is two JSON files:

``regime_model.json``
    the parameters: features (name, transform, standardisation centre and scale), start
    probabilities, transition matrix, Gaussian emission means and covariances (``full`` or
    ``diag``) and the map from hidden state to regime.
``manifest.json``
    what the registry needs to pin and audit a version: version, creation time, number of
    states, covariance type, feature names, training-data hash, log-likelihood and BIC, the
    per-state drift and volatility behind the state→regime map, and the sha256 of the
    parameters file (a mismatch means the artifact is corrupted).

The version is content-addressed (``r`` + 12 hex digits of the parameters' sha256), so the same
parameters always carry the same version and a refit that changes nothing publishes nothing new.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_trader.domain.errors import ModelArtifactError
from ensemble_trader.domain.models import REGIMES, Regime

PARAMETERS_FILE = "regime_model.json"
MANIFEST_FILE = "manifest.json"
ARTIFACT_FORMAT = "ensemble-trader/regime-model"
FORMAT_VERSION = 1

TRANSFORMS = ("identity", "log")
"""Per-feature transforms applied before standardisation. ``log`` suits volatilities."""

COVARIANCE_TYPES = ("full", "diag")

_LOG_2PI = math.log(2.0 * math.pi)
_DERIVED_MANIFEST_KEYS = frozenset(
    {"version", "n_states", "covariance_type", "feature_names", "state_regimes", "parameters_file", "parameters_sha256"}
)
"""Manifest fields computed from the parameters (everything else is descriptive ``info``)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: a feature by name, its transform and its standardisation."""

    name: str
    transform: str
    center: float
    scale: float

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ModelArtifactError(
                f"feature {self.name!r}: transform {self.transform!r} is not one of {TRANSFORMS}"
            )
        if not (math.isfinite(self.center) and math.isfinite(self.scale) and self.scale > 0):
            raise ModelArtifactError(
                f"feature {self.name!r}: centre {self.center!r} must be finite and scale "
                f"{self.scale!r} finite and > 0"
            )


def _array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:  # an integer beyond a float: OverflowError
        raise ModelArtifactError(f"{name}: not an array of numbers ({exc})") from None
    if arr.shape != shape:
        raise ModelArtifactError(f"{name}: shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelArtifactError(f"{name}: contains non-finite values")
    return arr


def _stochastic(name: str, arr: np.ndarray) -> None:
    if np.any(arr <= 0.0):
        raise ModelArtifactError(
            f"{name}: every entry must be > 0 (the trainer floors them so no regime is unreachable)"
        )
    sums = arr.sum(axis=-1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=1e-9):
        raise ModelArtifactError(f"{name}: rows must sum to 1, got {np.round(sums, 12).tolist()}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_version_list(value: object) -> bool:
    """A list (or tuple) of non-empty version strings: a refit lineage as a model's manifest and a
    filter state record it."""
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


@dataclass(frozen=True, eq=False)
class RegimeModel:
    """A Gaussian HMM over standardised features, with a map from hidden state to regime.

    Arrays: ``start_prob`` (K,), ``transmat`` (K, K) with rows summing to 1 and every entry > 0,
    ``means`` (K, D), ``covariances`` (K, D, D) for ``full`` or (K, D) for ``diag``.
    ``state_regimes[k]`` is the regime that hidden state ``k`` counts towards.
    ``info`` carries the manifest's descriptive fields (training-data hash, BIC, ...).

    The constructor validates everything and precomputes what the per-bar update needs: for
    each state a whitening matrix ``W_k`` (the inverse Cholesky factor of its covariance) so
    that the Mahalanobis distance of ``z`` is ``|z W_k - mu_k W_k|^2``, all K states in one
    matrix product.
    """

    features: tuple[FeatureSpec, ...]
    start_prob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance_type: str
    state_regimes: tuple[Regime, ...]
    log_floor: float = 1e-12
    info: Mapping[str, Any] = field(default_factory=dict)

    # derived, set in __post_init__
    version: str = field(init=False)
    _whiten: np.ndarray = field(init=False, repr=False)  # (D, K*D)
    _whitened_means: np.ndarray = field(init=False, repr=False)  # (K, D)
    _log_norm: np.ndarray = field(init=False, repr=False)  # (K,)
    _regime_matrix: np.ndarray = field(init=False, repr=False)  # (K, 4) indicator
    _log_index: np.ndarray = field(init=False, repr=False)
    _identity_index: np.ndarray = field(init=False, repr=False)
    _center: np.ndarray = field(init=False, repr=False)
    _scale: np.ndarray = field(init=False, repr=False)
    _aligned_versions: frozenset[str] = field(init=False, repr=False)  # version + refit_lineage

    def __post_init__(self) -> None:
        features = tuple(self.features)
        if not features:
            raise ModelArtifactError("a regime model needs at least one feature")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ModelArtifactError(f"feature names repeat: {names}")
        d = len(features)
        k = len(self.state_regimes)
        if k < 1:
            raise ModelArtifactError("a regime model needs at least one hidden state")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ModelArtifactError(
                f"covariance_type {self.covariance_type!r} is not one of {COVARIANCE_TYPES}"
            )
        if not (math.isfinite(self.log_floor) and self.log_floor > 0):
            raise ModelArtifactError(f"log_floor {self.log_floor!r} must be finite and > 0")
        try:
            regimes = tuple(Regime(r) for r in self.state_regimes)
        except ValueError as exc:
            raise ModelArtifactError(f"state_regimes: {exc}") from None

        start = _array("start_prob", self.start_prob, (k,))
        trans = _array("transmat", self.transmat, (k, k))
        _stochastic("start_prob", start)
        _stochastic("transmat", trans)
        means = _array("means", self.means, (k, d))
        cov_shape = (k, d, d) if self.covariance_type == "full" else (k, d)
        covs = _array("covariances", self.covariances, cov_shape)
        full = covs if self.covariance_type == "full" else np.stack([np.diag(c) for c in covs])

        whiten = np.empty((k, d, d))
        log_norm = np.empty(k)
        for s in range(k):
            if not np.allclose(full[s], full[s].T, rtol=0, atol=1e-10 * max(1.0, np.abs(full[s]).max())):
                raise ModelArtifactError(f"covariances[{s}] is not symmetric")
            try:
                chol = np.linalg.cholesky(full[s])
            except np.linalg.LinAlgError:
                raise ModelArtifactError(f"covariances[{s}] is not positive definite") from None
            # Mahalanobis distance = |L^-1 (x - mu)|^2 = |(x - mu) @ (L^-1)^T|^2
            whiten[s] = np.linalg.inv(chol).T
            log_norm[s] = -0.5 * (d * _LOG_2PI) - np.log(np.diag(chol)).sum()

        set_ = object.__setattr__
        set_(self, "features", features)
        set_(self, "state_regimes", regimes)
        set_(self, "start_prob", start)
        set_(self, "transmat", trans)
        set_(self, "means", means)
        set_(self, "covariances", covs)
        set_(self, "info", dict(self.info))
        lineage = self.info.get("refit_lineage", [])
        if not is_version_list(lineage):
            raise ModelArtifactError(f"refit_lineage {lineage!r} must be a list of model versions")
        set_(self, "_whiten", np.ascontiguousarray(whiten.transpose(1, 0, 2).reshape(d, k * d)))
        whitened_means = np.einsum("kd,kde->ke", means, whiten)
        if not (np.all(np.isfinite(whitened_means)) and np.all(np.isfinite(log_norm))):
            # finite parameters whose whitened form overflows would give a state no bar can
            # have: its log-density -inf, a filter state that cannot be stored
            raise ModelArtifactError("means and covariances give non-finite whitened means or densities")
        set_(self, "_whitened_means", whitened_means)
        set_(self, "_log_norm", log_norm)
        set_(self, "_regime_matrix", regime_map_matrix(regimes))
        transforms = [f.transform for f in features]
        set_(self, "_log_index", np.array([i for i, t in enumerate(transforms) if t == "log"], dtype=int))
        set_(
            self,
            "_identity_index",
            np.array([i for i, t in enumerate(transforms) if t == "identity"], dtype=int),
        )
        set_(self, "_center", np.array([f.center for f in features]))
        set_(self, "_scale", np.array([f.scale for f in features]))
        set_(self, "version", "r" + _sha256(self._parameters_bytes())[:12])
        set_(self, "_aligned_versions", frozenset((self.version, *lineage)))

    # ----------------------------------------------------------------------------------------
    # shape and evaluation
    # ----------------------------------------------------------------------------------------

    @property
    def n_states(self) -> int:
        return len(self.state_regimes)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def refit_lineage(self) -> tuple[str, ...]:
        """The versions this model was refit from by warm-started refits, newest first (the
        manifest's ``refit_lineage``; empty for a model fitted from scratch).

        A warm-started refit (:func:`~ensemble_trader.domain.regime_fit.refit`) re-estimates
        every hidden state from the one of the same index, so the states of these versions are
        this model's states one to one: a filter distribution over them stays meaningful here."""
        return tuple(self.info.get("refit_lineage") or ())

    def states_aligned_with(self, version: str, lineage: Sequence[str] = ()) -> bool:
        """Whether the hidden states of model ``version`` (whose refit lineage, or its first
        entries, is ``lineage``) are this model's, one to one.

        True when the two share a version by warm-started refits: the same version, one this
        model descends from (``version`` in :attr:`refit_lineage`), one that descends from this
        model (this version in ``lineage``: a container still serving the model a refit
        replaced reads a state the refit wrote), or a common ancestor (two refits of one model).
        The relation is symmetric when each side passes its lineage."""
        return version in self._aligned_versions or not self._aligned_versions.isdisjoint(lineage)

    @property
    def regime_matrix(self) -> np.ndarray:
        """(K, 4) indicator: state probabilities @ this = regime probabilities (REGIMES order)."""
        return self._regime_matrix

    def raw_vector(self, values: Mapping[str, float]) -> np.ndarray:
        """The model's features, in model order, from a dict of feature values by name."""
        try:
            return np.array([values[f.name] for f in self.features], dtype=np.float64)
        except KeyError as exc:
            raise ModelArtifactError(
                f"the regime model needs feature {exc.args[0]!r}, which the feature vector lacks "
                f"(it has {sorted(values)})"
            ) from None

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Transform and standardise raw feature rows (shape (D,) or (n, D)) in model order."""
        x = np.array(raw, dtype=np.float64)
        if x.shape[-1] != self.n_features:
            raise ModelArtifactError(
                f"expected {self.n_features} features {self.feature_names}, got shape {x.shape}"
            )
        if self._log_index.size:
            x[..., self._log_index] = np.log(np.maximum(x[..., self._log_index], self.log_floor))
        return (x - self._center) / self._scale

    def log_emission(self, z: np.ndarray) -> np.ndarray:
        """Gaussian log-densities of one standardised observation under each state: (K,)."""
        y = (z @ self._whiten).reshape(self._whitened_means.shape) - self._whitened_means
        return self._log_norm - 0.5 * np.einsum("kd,kd->k", y, y)

    def log_emission_matrix(self, z: np.ndarray) -> np.ndarray:
        """Log-densities of n standardised observations: (n, K)."""
        z = np.atleast_2d(z)
        n = z.shape[0]
        y = (z @ self._whiten).reshape(n, *self._whitened_means.shape) - self._whitened_means
        return self._log_norm - 0.5 * np.einsum("nkd,nkd->nk", y, y)

    # ----------------------------------------------------------------------------------------
    # serialisation
    # ----------------------------------------------------------------------------------------

    def parameters(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict (floats round-trip exactly)."""
        return {
            "format": ARTIFACT_FORMAT,
            "format_version": FORMAT_VERSION,
            "features": [
                {"name": f.name, "transform": f.transform, "center": f.center, "scale": f.scale}
                for f in self.features
            ],
            "log_floor": self.log_floor,
            "covariance_type": self.covariance_type,
            "start_prob": self.start_prob.tolist(),
            "transmat": self.transmat.tolist(),
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
            "state_regimes": [r.value for r in self.state_regimes],
        }

    def _parameters_bytes(self) -> bytes:
        return json.dumps(self.parameters(), sort_keys=True, separators=(",", ":")).encode()

    def manifest(self) -> dict[str, Any]:
        """The manifest: version, checksums and the descriptive ``info`` fields."""
        return json.loads(self.to_files()[MANIFEST_FILE])

    def to_files(self) -> dict[str, bytes]:
        """The artifact as ``{file name: content}`` (for a folder, S3 or a test)."""
        params = json.dumps({**self.parameters(), "version": self.version}, indent=1).encode()
        files = {PARAMETERS_FILE: params}
        manifest = {
            **self.info,
            "version": self.version,
            "n_states": self.n_states,
            "covariance_type": self.covariance_type,
            "feature_names": list(self.feature_names),
            "state_regimes": [r.value for r in self.state_regimes],
            "parameters_file": PARAMETERS_FILE,
            "parameters_sha256": _sha256(params),
        }
        files[MANIFEST_FILE] = json.dumps(manifest, indent=1, sort_keys=True).encode()
        return files

    @classmethod
    def from_files(cls, read: Callable[[str], bytes]) -> RegimeModel:
        """Load from a reader of file names (a folder, an S3 prefix, a dict's ``__getitem__``).

        Every failure — a missing file, bad JSON, a checksum or version mismatch, a parameter
        of the wrong shape — raises :class:`ModelArtifactError` naming the problem.
        """
        manifest_bytes = _read(read, MANIFEST_FILE)
        manifest = _json(MANIFEST_FILE, manifest_bytes)
        params_name = manifest.get("parameters_file", PARAMETERS_FILE)
        if not isinstance(params_name, str) or "/" in params_name or ".." in params_name:
            raise ModelArtifactError(f"{MANIFEST_FILE}: parameters_file {params_name!r} is not a file name")
        params_bytes = _read(read, params_name)
        expected = manifest.get("parameters_sha256")
        if expected != _sha256(params_bytes):
            raise ModelArtifactError(
                f"{params_name} does not match its manifest (sha256 {_sha256(params_bytes)[:12]}…, "
                f"manifest says {str(expected)[:12]}…): the artifact is corrupted or mixed"
            )
        params = _json(params_name, params_bytes)
        if params.get("format") != ARTIFACT_FORMAT or params.get("format_version") != FORMAT_VERSION:
            raise ModelArtifactError(
                f"{params_name}: format {params.get('format')!r} v{params.get('format_version')!r}, "
                f"expected {ARTIFACT_FORMAT!r} v{FORMAT_VERSION}"
            )
        try:
            features = tuple(
                FeatureSpec(str(f["name"]), str(f["transform"]), float(f["center"]), float(f["scale"]))
                for f in params["features"]
            )
            info = {key: value for key, value in manifest.items() if key not in _DERIVED_MANIFEST_KEYS}
            model = cls(
                features=features,
                start_prob=params["start_prob"],
                transmat=params["transmat"],
                means=params["means"],
                covariances=params["covariances"],
                covariance_type=params["covariance_type"],
                state_regimes=tuple(params["state_regimes"]),
                log_floor=float(params["log_floor"]),
                info=info,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ModelArtifactError):
                raise
            raise ModelArtifactError(f"{params_name}: missing or malformed field ({exc!r})") from None
        for name, stored in (("parameters", params.get("version")), ("manifest", manifest.get("version"))):
            if stored != model.version:
                raise ModelArtifactError(
                    f"{name} version {stored!r} does not match the parameters' content ({model.version})"
                )
        derived = model.manifest()
        for key in ("n_states", "covariance_type", "feature_names", "state_regimes"):
            if key in manifest and manifest[key] != derived[key]:
                raise ModelArtifactError(
                    f"{MANIFEST_FILE}: {key} {manifest[key]!r} does not match the parameters ({derived[key]!r})"
                )
        return model

    def save(self, directory: str | Path) -> Path:
        """Write the artifact into ``directory`` (created if needed); return the folder."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.to_files().items():
            (folder / name).write_bytes(content)
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> RegimeModel:
        """Read an artifact folder written by :meth:`save`."""
        folder = Path(directory)
        if not folder.is_dir():
            raise ModelArtifactError(f"regime model folder {str(folder)!r} does not exist")
        return cls.from_files(lambda name: (folder / name).read_bytes())


def _read(read: Callable[[str], bytes], name: str) -> bytes:
    try:
        return read(name)
    except (FileNotFoundError, KeyError) as exc:
        raise ModelArtifactError(f"regime model artifact lacks {name} ({exc})") from None
    except OSError as exc:
        raise ModelArtifactError(f"cannot read {name} of the regime model: {exc}") from None


def _json(name: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ModelArtifactError(f"{name} must hold a JSON object, got {type(value).__name__}")
    return value


def regime_map_matrix(state_regimes: Sequence[Regime]) -> np.ndarray:
    """(K, 4) indicator matrix of a state→regime map, columns in REGIMES order."""
    out = np.zeros((len(state_regimes), len(REGIMES)))
    for s, regime in enumerate(state_regimes):
        out[s, REGIMES.index(Regime(regime))] = 1.0
    return out
