"""The SageMaker training-container contract shared by the training jobs (local folders work too).

Hyperparameters come from ``/opt/ml/input/config/hyperparameters.json`` if present, else the JSON
in ``$SM_HPS``; data channels are folders of bars CSVs; a failed job writes its reason to
``/opt/ml/output/failure``, which SageMaker shows as the job's failure reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ensemble_trader.domain.errors import DataError

HYPERPARAMETERS_FILE = Path("/opt/ml/input/config/hyperparameters.json")
FAILURE_FILE = Path("/opt/ml/output/failure")


RESERVED_PREFIXES = ("sagemaker_", "_tuning_")
"""Hyperparameters SageMaker itself adds (the Python SDK's ``sagemaker_program``,
``sagemaker_region`` ...; a tuning job's ``_tuning_objective_metric``): not the job's settings."""


def check_no_arguments(prog: str, job: str, local_command: str, argv: Sequence[str] | None = None) -> None:
    """A training entry point takes no arguments (the container contract passes everything in
    files and variables): ``--help`` says so and exits 0, any other argument exits 2 — neither
    starts a job."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            f"The {job} as a SageMaker training container runs it: hyperparameters from "
            f"{HYPERPARAMETERS_FILE} or $SM_HPS, data channels $SM_CHANNEL_TRAIN and "
            f"$SM_CHANNEL_VALIDATION (folders of bars CSVs), the model to $SM_MODEL_DIR "
            f"(default /opt/ml/model). It takes no arguments; on this machine use `{local_command}`."
        ),
    )
    parser.parse_args(list(argv or ()))


def read_hyperparameters(path: Path = HYPERPARAMETERS_FILE) -> dict[str, Any]:
    """The job's hyperparameters: the JSON file if present, else ``$SM_HPS``, else {} — without
    SageMaker's own keys (:data:`RESERVED_PREFIXES`), and with string values the SageMaker Python
    SDK JSON-encodes (``'"balanced"'``, ``'"[1, 2]"'``) decoded once."""
    try:
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            text = os.environ.get("SM_HPS")
            raw = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"hyperparameters are not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"hyperparameters must be a JSON object, got {type(raw).__name__}")
    return {key: _decoded(value) for key, value in raw.items() if not key.startswith(RESERVED_PREFIXES)}


def _decoded(value: Any) -> Any:
    """A JSON-encoded string value (starting and ending with a double quote) decoded once."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


TRUTH_HEADER = ("timestamp", "regime")
"""The header of a regime-truth file (``marketdata.write_truth_csv``): labels, not bars."""


def is_truth_file(path: Path) -> bool:
    """A regime-truth CSV, not bars: named ``truth.csv`` (as ``data synth`` writes it) or
    ``*.truth.csv``, or any CSV whose header is ``timestamp,regime``."""
    if path.name == "truth.csv" or path.name.endswith(".truth.csv"):
        return True
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = fh.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False  # the bars reader names the problem
    return tuple(h.strip() for h in first.strip().split(",")) == TRUTH_HEADER


def channel_files(channel: str | None) -> list[Path]:
    """The bars CSVs of a channel folder and its subfolders, sorted by path (an S3Prefix channel
    keeps the keys' folders below the prefix: ``s3://bucket/bars/2024/spx.csv`` arrives as
    ``<channel>/2024/spx.csv``). Regime-truth files (:func:`is_truth_file`) are skipped: a folder
    written by ``ensemble-trader data synth`` holds bars.csv and truth.csv. [] when the channel
    is not set."""
    if not channel:
        return []
    folder = Path(channel)
    if not folder.is_dir():
        raise DataError(f"channel folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*.csv") if p.is_file() and not is_truth_file(p))
    if not files:
        raise DataError(f"channel folder {folder} holds no bars CSV (subfolders included)")
    return files


def report_failure(job: str, exc: Exception, failure_file: Path = FAILURE_FILE) -> None:
    """Print the reason to stderr and, inside a SageMaker container, to its failure file."""
    print(f"{job} failed: {exc}", file=sys.stderr)
    if failure_file.parent.is_dir():
        failure_file.write_text(str(exc)[:1000], encoding="utf-8")
