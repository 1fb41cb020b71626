"""Writing a model set folder: ONNX files plus ``manifest.json`` pinning each by sha256.

The reading side (verification, loading) is :func:`ensemble_trader.domain.agents.AgentPool.load`;
both use :class:`ensemble_trader.domain.agents.AgentManifest`, so a set written here is exactly
what the pool accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ensemble_trader.domain.agents import (
    MANIFEST_FILE,
    AgentEntry,
    AgentManifest,
    ArtifactRef,
    sha256_file,
)
from ensemble_trader.domain.errors import ModelArtifactError
from ensemble_trader.domain.features import FEATURE_VERSION


def write_model_set(
    out_dir: Path,
    *,
    agents: Mapping[str, Mapping[str, Any]],
    feature_names: tuple[str, ...],
    feature_version: str = FEATURE_VERSION,
    fused_file: str | None = None,
    training: Mapping[str, Any] | None = None,
    created: datetime | None = None,
) -> AgentManifest:
    """Hash the files named in ``agents`` (each mapping holds ``file``, ``leverage`` and the
    other :class:`AgentEntry` fields except ``sha256``) and write ``out_dir/manifest.json``."""
    out_dir = Path(out_dir)
    entries: dict[str, AgentEntry] = {}
    for name, meta in agents.items():
        entries[name] = AgentEntry(sha256=sha256_file(_existing(out_dir, meta["file"])), **meta)
    fused = None
    if fused_file is not None:
        fused = ArtifactRef(file=fused_file, sha256=sha256_file(_existing(out_dir, fused_file)))
    manifest = AgentManifest(
        version="pending",  # replaced by the content's version below
        created=created or datetime.now(UTC).replace(microsecond=0),
        feature_names=tuple(feature_names),
        feature_version=feature_version,
        agents=entries,
        fused=fused,
        training=dict(training or {}),
    )
    manifest = manifest.sealed()
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    (out_dir / MANIFEST_FILE).write_text(text, encoding="utf-8")
    return manifest


def _existing(out_dir: Path, file: str) -> Path:
    path = out_dir / file
    if not path.is_file():
        raise ModelArtifactError(f"cannot write the manifest: {path.name} does not exist in {out_dir}")
    return path
