"""The four trading agents at run time: ONNX policies evaluated with onnxruntime (no torch).

A *model set* is a folder holding one ONNX file per agent, optionally one fused ONNX file that
evaluates all four in a single call, and ``manifest.json`` (:class:`AgentManifest`) which pins
every file by its sha256. :meth:`AgentPool.from_files` builds a pool from any reader of file
names (no I/O of its own; :meth:`AgentPool.load` is the thin folder version) and refuses a set
whose files are missing or do not match the manifest, with a :class:`ModelArtifactError` naming
the file.

Observation of agent *i* = the feature vector (in the manifest's ``feature_names`` order, the
order of :data:`ensemble_trader.domain.features.FEATURE_NAMES`) followed by the agent's own
current position. Observation normalisation is part of each ONNX graph, and so is the clamp of
the action to ``[-L_i, L_i]``; the pool clips again so the contract holds for any graph.

Execution rule (the manifest's ``no_trade_band`` b_i, 0 by default): with proportional trading
costs the optimal rebalancing policy leaves the position alone inside a band around the
frictionless target and, outside it, trades only to the band's near edge. The pool applies it
to each agent's action a_i and own position p_i: ``target = clip(p_i, a_i - b_i, a_i + b_i)``
(then within ``[-L_i, L_i]``), so a policy's bar-to-bar jitter smaller than b_i costs nothing.

ONNX graphs
    per agent:  input ``obs`` float32 (n, F + 1)              → output ``action`` float32 (n, 1)
    fused:      inputs ``features`` (n, F), ``positions`` (n, A) → output ``actions`` (n, A)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ensemble_trader.domain.errors import DataError, ModelArtifactError
from ensemble_trader.domain.features import FEATURE_NAMES, FEATURE_VERSION
from ensemble_trader.domain.numbers import is_real, real_number

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest magnitude the agents' float32 graphs take (an input beyond it is refused)."""

AGENT_NAMES: tuple[str, ...] = ("conservative", "aggressive", "balanced", "contrarian")
"""Every agent the system knows, in the order used for positions and actions arrays."""

DEFAULT_LEVERAGE: dict[str, float] = {
    "conservative": 1.0,
    "aggressive": 2.0,
    "balanced": 1.0,
    "contrarian": 1.0,
}
"""Leverage limit L of each agent: actions are target positions in [-L, L] (fraction of equity)."""

MAX_NO_TRADE_BAND = 2.0
"""Largest no-trade band (position units): twice the largest leverage limit, a band that never trades."""

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
FUSED_TOLERANCE = 1e-4
"""Largest difference allowed at load between the fused graph's actions and the per-agent graphs'
(they are the same policies; measured differences are below 1e-6)."""


def no_trade_target(position: Any, target: Any, band: Any) -> Any:
    """The no-trade band's execution rule, ``clip(position, target - band, target + band)``:
    hold a position within ``band`` of the target, else trade to the band's near edge. Scalars
    or arrays (``band >= 0``); ``minimum(maximum(...))`` costs half of ``np.clip`` on a few numbers.
    The pool executes the agents' actions with it, the training environment too (band in
    training), and the meta-agent step its own smoothed target."""
    return np.minimum(np.maximum(position, target - band), target + band)


_NUMBER_KINDS = frozenset("fiu")
"""Array kinds the agents take: floating point, signed and unsigned integers."""
_KIND_NAMES = {"b": "bool", "c": "complex", "U": "text", "S": "bytes", "M": "datetime", "m": "timedelta",
               "V": "structured"}


def _short(value: Any) -> str:
    try:
        text = " ".join(repr(value).split())  # an array's repr spans lines
    except ValueError:  # an int over the interpreter's digit limit
        return f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= 80 else f"{text[:77]}..."


def _kind_of(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def real_array(name: str, value: Any, columns: Sequence[str] = ()) -> np.ndarray:
    """``value`` as a float64 array when it holds real numbers only, else :class:`DataError`
    naming ``name`` and the value: a bool, text, None, a complex number or anything else is
    refused, not converted (``True`` would pass as 1, ``"0.1"`` as 0.1, ``0.1+5j`` as 0.1).

    A float or integer ndarray, what the live path passes, is decided by its dtype alone (no
    per-element work); a bool, complex or text array by its dtype too. A list, a tuple or an
    object array has each element checked (a Python or numpy int or float passes). ``columns``
    names the last axis's entries in the error (the features, the agents)."""
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind in _NUMBER_KINDS:
            return np.asarray(value, dtype=np.float64)
        if kind != "O":
            what = _KIND_NAMES.get(kind, str(value.dtype))
            raise DataError(f"{name} must be real numbers (an int or float array), got a {what} array "
                            f"(dtype {value.dtype}): {_short(value)}")
    try:
        items = np.asarray(value, dtype=object)
    except ValueError as exc:  # nesting numpy cannot shape even as objects
        raise DataError(f"{name} must be an array of real numbers, got {_short(value)} ({exc})") from None
    for index, item in np.ndenumerate(items):
        if isinstance(item, np.ndarray) and item.ndim == 0:
            item = item[()]  # a 0-d array of one number is that number
        ragged = isinstance(item, (list, tuple, np.ndarray))
        real = is_real(item)
        if real and not (isinstance(item, int) and abs(item) > FLOAT32_MAX):
            continue
        where = f"{name}[{', '.join(map(str, index))}]" if index else name
        if index and items.shape[-1] == len(columns):
            where += f" ({columns[index[-1]]})"
        if ragged:  # rows of different lengths
            raise DataError(f"{name} must be a rectangular array of real numbers, but {where} is "
                            f"{_kind_of(item)}: {_short(item)}")
        if not real:
            raise DataError(f"{where}={_short(item)} is {_kind_of(item)}, not a real number "
                            "(bools, text, None and complex numbers are refused, not converted)")
        # float() of an int beyond float64 would raise OverflowError
        raise DataError(f"{where}={_short(item)} is beyond float32's range (|x| <= {FLOAT32_MAX:.6g}), "
                        "which the agents compute in")
    return items.astype(np.float64)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ArtifactRef(_Frozen):
    """One file of a model set, pinned by its content hash."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AgentEntry(ArtifactRef):
    """One agent of a model set: its policy file and how it was made."""

    leverage: float = Field(gt=0.0, le=10.0)
    no_trade_band: float = Field(default=0.0, ge=0.0, le=MAX_NO_TRADE_BAND)  # see AgentPool: trade only beyond it
    algorithm: str = "PPO"
    reward: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    test: dict[str, Any] = Field(default_factory=dict)


class AgentManifest(_Frozen):
    """``manifest.json`` of a model set: version, provenance, metrics and file hashes."""

    format: int = MANIFEST_FORMAT
    version: str = Field(min_length=1)
    created: datetime
    feature_names: tuple[str, ...] = Field(min_length=1)
    feature_version: str = Field(default="1", min_length=1)  # FEATURE_VERSION of the training features
    agents: dict[str, AgentEntry] = Field(min_length=1)
    fused: ArtifactRef | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    record_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    """:meth:`record_digest` when the set was written; None in a manifest written before the
    field existed (2026-11-29), whose record is then not checked."""

    @model_validator(mode="after")
    def _known_agents(self) -> AgentManifest:
        if self.format != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {self.format}; this code reads format {MANIFEST_FORMAT}")
        unknown = sorted(set(self.agents) - set(AGENT_NAMES))
        if unknown:
            raise ValueError(f"unknown agent names {unknown}; known: {list(AGENT_NAMES)}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The set's agents in :data:`AGENT_NAMES` order."""
        return tuple(n for n in AGENT_NAMES if n in self.agents)

    def record_digest(self) -> str:
        """:func:`record_digest` of this manifest as it is written (``model_dump(mode="json")``)."""
        return record_digest(self.model_dump(mode="json"))

    def sealed(self) -> AgentManifest:
        """This manifest with its :attr:`version` (:meth:`content_version`) and then its
        :attr:`record_sha256` (:meth:`record_digest`) set, as the set is written."""
        versioned = self.model_copy(update={"version": self.content_version(), "record_sha256": None})
        return versioned.model_copy(update={"record_sha256": versioned.record_digest()})

    def content_version(self) -> str:
        """The version of what the set serves: which file serves which agent (and the fused
        graph), the agents' non-zero no-trade bands and any leverage limit other than
        :data:`DEFAULT_LEVERAGE`, and a feature version other than "1" (the formulas every set
        before the field was trained on). The same set always gets the same version, and
        :meth:`AgentPool.from_files` refuses a manifest whose version does not match (an edited
        band or limit, or two agents' files swapped, would otherwise keep the old version)."""
        files = {name: e.sha256 for name, e in self.agents.items()}
        if self.fused is not None:
            files["fused"] = self.fused.sha256
        text = "".join(f"{name}={digest}|" for name, digest in sorted(files.items()))
        text += "".join(f"|{name}:band={e.no_trade_band!r}" for name, e in sorted(self.agents.items()) if e.no_trade_band)
        text += "".join(
            f"|{name}:leverage={e.leverage!r}"
            for name, e in sorted(self.agents.items())
            if e.leverage != DEFAULT_LEVERAGE.get(name)
        )
        if self.feature_version != "1":
            text += f"|features={self.feature_version}"
        return f"agents-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def record_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of everything a manifest's JSON object records but its ``record_sha256``: the
    served content that :meth:`AgentManifest.content_version` covers, and the record that does
    not change what is served — reward parameters, hyperparameters, seeds, validation and test
    metrics, the training data's hash and windows. The object is written as sorted, compact JSON,
    so the file's layout and key order do not count, a value does. It is the file's own content
    that is hashed, not the fields as a model reads them: a field added to the model later, with
    a default, is not in an older file and does not change its digest."""
    fields = {key: value for key, value in manifest.items() if key != "record_sha256"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_models_dir() -> Path:
    """The committed model set: ``Settings().models_dir / "agents"``."""
    from ensemble_trader.runtime.settings import Settings

    return Settings().models_dir / "agents"


def folder_reader(folder: Path) -> Callable[[str], bytes]:
    """A reader of the files of ``folder`` for :meth:`AgentPool.from_files` (a missing file
    raises FileNotFoundError, which the pool reports as a ModelArtifactError)."""
    root = Path(folder)
    return lambda name: (root / name).read_bytes()


def parse_manifest(data: bytes, source: str) -> AgentManifest:
    """Parse and validate a model set's manifest (ModelArtifactError on any problem), its record
    checked against its ``record_sha256`` when it has one (:func:`check_record`)."""
    manifest, raw = _parsed_manifest(data, source)
    check_record(manifest, raw, source)
    return manifest


def _parsed_manifest(data: bytes, source: str) -> tuple[AgentManifest, dict[str, Any]]:
    """The validated manifest and the JSON object it was read from (ModelArtifactError)."""
    try:
        raw = json.loads(data)
        return AgentManifest.model_validate(raw), raw
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(f"{source}/{MANIFEST_FILE}: not valid JSON ({exc})") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ModelArtifactError(f"{source}/{MANIFEST_FILE}: invalid manifest: {problems}") from exc


def check_record(manifest: AgentManifest, raw: Mapping[str, Any], source: str) -> None:
    """Refuse (ModelArtifactError) a manifest whose ``record_sha256`` is not the
    :func:`record_digest` of the JSON object ``raw`` it was read from; one without the digest
    (written before 2026-11-29) passes unchecked."""
    if manifest.record_sha256 is not None and manifest.record_sha256 != record_digest(raw):
        raise ModelArtifactError(
            f"model set {source}: {MANIFEST_FILE}'s record (reward parameters, hyperparameters, seeds, "
            f"metrics, training data) does not match its record_sha256: the manifest was edited after "
            f"the set was written, so it no longer says how the served agents were trained"
        )


def read_manifest(models_dir: Path) -> AgentManifest:
    """Parse and validate ``models_dir/manifest.json`` (ModelArtifactError on any problem)."""
    return parse_manifest(_read(folder_reader(models_dir), MANIFEST_FILE, str(models_dir)), str(models_dir))


def _read(read: Callable[[str], bytes], name: str, source: str, listed: bool = False) -> bytes:
    try:
        return read(name)
    except (FileNotFoundError, KeyError):
        where = f" (listed in {MANIFEST_FILE})" if listed else ""
        raise ModelArtifactError(f"model set {source}: {name} is missing{where}") from None
    except OSError as exc:
        raise ModelArtifactError(f"model set {source}: cannot read {name}: {exc}") from None


def verified_bytes(read: Callable[[str], bytes], ref: ArtifactRef, source: str) -> bytes:
    """The content of ``ref`` after checking that its sha256 matches the manifest."""
    data = _read(read, ref.file, source, listed=True)
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        raise ModelArtifactError(
            f"model set {source}: {ref.file} is corrupted: sha256 {actual[:16]}… "
            f"does not match the manifest's {ref.sha256[:16]}…"
        )
    return data


def inference_session(model: Path | bytes, name: str | None = None) -> Any:
    """An onnxruntime session tuned for one small decision at a time on a shared core, from a
    file or from the graph's bytes (ModelArtifactError naming the file if onnxruntime cannot
    load it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    label = name or (model.name if isinstance(model, Path) else "graph")
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise ModelArtifactError(f"{label}: onnxruntime cannot load it: {exc}") from exc


class AgentPool:
    """All agents of one model set, ready to decide.

    Use :meth:`load`. ``act`` takes one feature vector and each agent's own current position and
    returns each agent's target position (its action within ``[-L, L]``, after the agent's
    no-trade band); ``act_batch`` does the same for many rows at once.
    With ``fused=True`` (the default when the set has a fused graph) one onnxruntime call
    evaluates every agent; otherwise one call per agent.
    """

    def __init__(self, manifest: AgentManifest, sessions: dict[str, Any], fused_session: Any | None):
        self.manifest = manifest
        self.version: str = manifest.version
        self.names: tuple[str, ...] = manifest.names
        self.feature_names: tuple[str, ...] = manifest.feature_names
        self.feature_version: str = manifest.feature_version
        self.leverage: dict[str, float] = {n: manifest.agents[n].leverage for n in self.names}
        self._limits = np.array([self.leverage[n] for n in self.names], dtype=np.float32)
        self._lower = -self._limits
        self.no_trade_band: dict[str, float] = {n: manifest.agents[n].no_trade_band for n in self.names}
        self._bands = np.array([self.no_trade_band[n] for n in self.names], dtype=np.float32)
        self._banded = bool(np.any(self._bands > 0))
        self._sessions = [sessions[n] for n in self.names]
        self._fused = fused_session
        self._n_features = len(self.feature_names)

    @classmethod
    def load(
        cls,
        models_dir: Path | None = None,
        *,
        fused: bool | None = None,
        feature_names: tuple[str, ...] | None = FEATURE_NAMES,
        feature_version: str | None = FEATURE_VERSION,
    ) -> AgentPool:
        """Load and verify a model set folder (default: the committed ``layers/models/agents``):
        :meth:`from_files` over the folder's files."""
        models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        if not models_dir.is_dir():
            raise ModelArtifactError(f"model set folder {models_dir} does not exist")
        return cls.from_files(
            folder_reader(models_dir), source=str(models_dir), fused=fused, feature_names=feature_names,
            feature_version=feature_version,
        )

    @classmethod
    def from_files(
        cls,
        read: Callable[[str], bytes],
        *,
        source: str = "model set",
        fused: bool | None = None,
        feature_names: tuple[str, ...] | None = FEATURE_NAMES,
        feature_version: str | None = FEATURE_VERSION,
    ) -> AgentPool:
        """Build the pool from a reader of file names (a folder, an S3 prefix, a dict's
        ``__getitem__``); ``source`` names the set in errors.

        Every file is checked against the manifest's sha256 before onnxruntime sees it, and the
        manifest's feature names and formulas' version against ``feature_names`` and
        ``feature_version`` (the feature engine's, by default; None skips a check). ``fused=None`` uses the fused graph when the set has one;
        ``False`` forces one session per agent; ``True`` requires the fused graph. Any problem
        raises :class:`ModelArtifactError` naming the file.
        """
        manifest, raw = _parsed_manifest(_read(read, MANIFEST_FILE, source), source)
        expected = manifest.content_version()
        if manifest.version != expected:
            raise ModelArtifactError(
                f"model set {source}: {MANIFEST_FILE} says version {manifest.version}, but its agents' "
                f"files, no-trade bands and leverage limits give {expected}: the manifest was edited after "
                f"the set was written (write it again with training.agents.modelset.write_model_set)"
            )
        check_record(manifest, raw, source)  # after the version: an edited band is named as one
        if feature_names is not None and tuple(manifest.feature_names) != tuple(feature_names):
            raise ModelArtifactError(
                f"model set {source} was trained on features {list(manifest.feature_names)}, "
                f"but this code computes {list(feature_names)}: retrain the agents"
            )
        if feature_version is not None and manifest.feature_version != feature_version:
            raise ModelArtifactError(
                f"model set {source} was trained on feature version {manifest.feature_version}, but this "
                f"code computes version {feature_version} (a formula changed): retrain the agents"
            )
        sessions = {}
        for name in manifest.names:
            ref = manifest.agents[name]
            sessions[name] = inference_session(verified_bytes(read, ref, source), ref.file)
        fused_session = None
        if fused is None:
            fused = manifest.fused is not None
        if fused:
            if manifest.fused is None:
                raise ModelArtifactError(f"model set {source}: the manifest lists no fused graph")
            fused_session = inference_session(verified_bytes(read, manifest.fused, source), manifest.fused.file)
        pool = cls(manifest, sessions, fused_session)
        pool._check_graphs(source)
        return pool

    def _check_graphs(self, source: str) -> None:
        """Fail at load time, not at the first decision: a per-agent graph whose input is not one
        float32 ``obs`` of the manifest's width or whose output is not one float32 action per row
        (the fused graph's output must be float32 too), a graph
        that gives a non-finite action, or a fused graph that does not compute what the per-agent
        graphs compute (another set's, or one listing other agents) — checked on a few probe
        observations."""
        width_needed = self._n_features + 1
        probe = np.random.default_rng(0)
        f = probe.normal(0.0, 0.02, (4, self._n_features)).astype(np.float32)
        p = probe.uniform(-1.0, 1.0, (4, len(self.names))).astype(np.float32) * self._limits
        separate = np.empty_like(p)
        for i, (name, sess) in enumerate(zip(self.names, self._sessions, strict=True)):
            file = self.manifest.agents[name].file
            inputs = sess.get_inputs()
            shape = inputs[0].shape if len(inputs) == 1 else []
            if len(inputs) != 1 or inputs[0].name != "obs" or inputs[0].type != "tensor(float)":
                found = ", ".join(f"{x.name}: {x.type}" for x in inputs)
                raise ModelArtifactError(f"model set {source}: {file} must take one float32 input 'obs', "
                                         f"it takes {found or 'none'}")
            outputs = sess.get_outputs()
            if len(outputs) != 1 or outputs[0].type != "tensor(float)":
                found = ", ".join(f"{x.name}: {x.type}" for x in outputs)
                raise ModelArtifactError(f"model set {source}: {file} must give one float32 output, "
                                         f"it gives {found or 'none'}")
            if shape and isinstance(shape[-1], int) and shape[-1] != width_needed:
                raise ModelArtifactError(
                    f"model set {source}: {file} expects observations of width {shape[-1]}, the manifest's "
                    f"{self._n_features} features + position need {width_needed}"
                )
            try:
                out = np.asarray(sess.run(None, {"obs": np.concatenate((f, p[:, i : i + 1]), axis=1)})[0])
            except Exception as exc:  # onnxruntime raises its own types
                raise ModelArtifactError(f"model set {source}: {file} cannot evaluate observations: {exc}") from None
            if out.shape != (len(f), 1):
                raise ModelArtifactError(f"model set {source}: {file} must give one action per observation, "
                                         f"it gives shape {out.shape} for {len(f)}")
            if not np.all(np.isfinite(out)):
                raise ModelArtifactError(f"model set {source}: {file} gives non-finite actions (diverged weights?)")
            separate[:, i] = out[:, 0]
        if self._fused is None:
            return
        fused_file = self.manifest.fused.file if self.manifest.fused is not None else "fused graph"
        outputs = self._fused.get_outputs()
        if len(outputs) != 1 or outputs[0].type != "tensor(float)":
            found = ", ".join(f"{x.name}: {x.type}" for x in outputs)
            raise ModelArtifactError(f"model set {source}: {fused_file} must give one float32 output, "
                                     f"it gives {found or 'none'}")
        try:
            fused = np.asarray(self._fused.run(None, {"features": f, "positions": p})[0])
        except Exception as exc:  # onnxruntime raises its own types for shape mismatches
            raise ModelArtifactError(
                f"model set {source}: {fused_file} cannot evaluate the manifest's {len(self.names)} agents "
                f"({', '.join(self.names)}) on {self._n_features} features: {exc}"
            ) from None
        if fused.shape != separate.shape or not np.allclose(fused, separate, atol=FUSED_TOLERANCE, rtol=0.0):
            raise ModelArtifactError(
                f"model set {source}: {fused_file} does not compute the per-agent graphs' actions "
                f"(shape {fused.shape} vs {separate.shape}) — it belongs to another set or other agents"
            )

    def with_no_trade_bands(self, bands: dict[str, float]) -> AgentPool:
        """The same policies (sessions shared) with other no-trade bands for the named agents
        (to choose the bands on validation data); the version names the change."""
        unknown = sorted(set(bands) - set(self.names))
        if unknown:
            raise DataError(f"no-trade bands for unknown agents {unknown}; this set has {list(self.names)}")
        # True would pass as 1.0 and "0.3" as 0.3: refused, not converted
        chosen = {n: real_number(b, lambda n=n, b=b: f"no-trade band of {n}={_short(b)} is {_kind_of(b)}, not a "
                                 f"number in [0, {MAX_NO_TRADE_BAND:g}] (position units)")
                  for n, b in bands.items()}
        bad = {n: b for n, b in chosen.items() if not 0.0 <= b <= MAX_NO_TRADE_BAND}
        if bad:
            raise DataError(f"no-trade bands must be in [0, {MAX_NO_TRADE_BAND:g}] (position units), got {bad}")
        agents = {
            n: self.manifest.agents[n].model_copy(update={"no_trade_band": chosen[n]})
            if n in chosen else self.manifest.agents[n]
            for n in self.names
        }
        tag = ",".join(f"{n}={chosen[n]:g}" for n in self.names if n in chosen)
        manifest = self.manifest.model_copy(update={"agents": agents, "version": f"{self.version}+band[{tag}]"})
        return AgentPool(manifest, dict(zip(self.names, self._sessions, strict=True)), self._fused)

    def _execute(self, actions: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Actions clipped to ``[-L, L]``, then the no-trade band around them (see the module).

        ``minimum(maximum(x, lo), hi)`` is ``clip(x, lo, hi)`` at half the cost of ``np.clip``
        on four numbers (this is on every decision); a NaN action passes it, so it is checked
        after (ModelArtifactError: the inputs were checked finite on entry, so the graph is
        broken, and no position is taken from it)."""
        lo, hi = self._lower, self._limits
        out = np.minimum(np.maximum(actions, lo), hi)
        if np.isnan(out.sum()):  # NaN passes the clip (an infinity cannot: it is clipped)
            raise ModelArtifactError(f"model set {self.version} gave a NaN action for finite inputs: {out.tolist()}")
        if self._banded:
            out = np.minimum(np.maximum(no_trade_target(positions, out, self._bands), lo), hi)
        return out

    def _inputs(self, features: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = real_array("features", features, self.feature_names)
        p = real_array("positions", positions, self.names)
        if f.ndim != 2 or f.shape[1] != self._n_features:
            raise DataError(f"features must have shape (n, {self._n_features}), got {f.shape}")
        if p.shape != (f.shape[0], len(self.names)):
            raise DataError(f"positions must have shape ({f.shape[0]}, {len(self.names)}), got {p.shape}")
        if not ((np.abs(f) <= FLOAT32_MAX).all() and (np.abs(p) <= FLOAT32_MAX).all()):  # NaN fails too
            raise DataError(self._out_of_range(f, p))
        return f.astype(np.float32), p.astype(np.float32)

    def _out_of_range(self, features: np.ndarray, positions: np.ndarray) -> str:
        """What makes inputs unfit for the float32 graphs, naming each feature (or agent position)
        and its value: not finite, or finite beyond float32's range (it would become infinity)."""
        f = features.reshape(-1, self._n_features)
        p = positions.reshape(-1, len(self.names))
        batch = features.ndim == 2
        problems: list[str] = []
        warming = False
        for row in range(f.shape[0]):
            where = f" (row {row})" if batch else ""
            named = [(f"feature {n}", v) for n, v in zip(self.feature_names, f[row], strict=True)]
            named += [(f"{n}'s position", v) for n, v in zip(self.names, p[row], strict=True)]
            for name, value in named:
                if abs(value) <= FLOAT32_MAX:
                    continue
                finite = bool(np.isfinite(value))
                warming = warming or not finite
                problems.append(f"{name}{where}={float(value)!r} is " + (
                    f"beyond float32's range (|x| <= {FLOAT32_MAX:.6g}), which the agents compute in"
                    if finite else "not finite"))
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        hint = " (is the feature engine still warming up?)" if warming else ""
        return f"agent inputs must be finite float32 numbers: {shown}{hint}"

    def act_batch(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Targets (n, A) for features (n, F) and each agent's current positions (n, A)."""
        f, p = self._inputs(features, positions)
        if self._fused is not None:
            out = self._fused.run(None, {"features": f, "positions": p})[0]
        else:
            out = self._separate_actions(f, p)
        return self._execute(out, p)

    def _separate_actions(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """The policies' raw actions (n, A), one session per agent (each sees its own position)."""
        out = np.empty_like(p)
        for i, sess in enumerate(self._sessions):
            out[:, i] = sess.run(None, {"obs": np.concatenate((f, p[:, i : i + 1]), axis=1)})[0][:, 0]
        return out

    def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Targets (A,) for one feature vector (F,) and each agent's current position (A,).

        The hot path of the meta-agent stage: one onnxruntime call with the fused graph.
        """
        # the dtype test of real_array inlined for the arrays of numbers the live path passes
        # (a call less per input); anything else goes through real_array's checks
        if type(features) is np.ndarray and features.dtype.kind in _NUMBER_KINDS:
            f64 = np.asarray(features, dtype=np.float64)
        else:
            f64 = real_array("features", features, self.feature_names)
        if type(positions) is np.ndarray and positions.dtype.kind in _NUMBER_KINDS:
            p64 = np.asarray(positions, dtype=np.float64)
        else:
            p64 = real_array("positions", positions, self.names)
        if f64.shape != (self._n_features,):
            raise DataError(f"features must have shape ({self._n_features},), got {f64.shape}")
        if p64.shape != (len(self.names),):
            raise DataError(f"positions must have shape ({len(self.names)},), got {p64.shape}")
        # checked before the cast: a finite 1e300 would become float32 infinity (NaN fails too)
        if not ((np.abs(f64) <= FLOAT32_MAX).all() and (np.abs(p64) <= FLOAT32_MAX).all()):
            raise DataError(self._out_of_range(f64, p64))
        f = f64.astype(np.float32)
        p = p64.astype(np.float32)
        if self._fused is not None:
            out = self._fused.run(None, {"features": f[None, :], "positions": p[None, :]})[0][0]
        else:
            out = np.empty(len(self.names), dtype=np.float32)
            obs = np.empty((1, self._n_features + 1), dtype=np.float32)
            obs[0, :-1] = f
            for i, sess in enumerate(self._sessions):
                obs[0, -1] = p[i]
                out[i] = sess.run(None, {"obs": obs})[0][0, 0]
        return self._execute(out, p)
