"""The regime-model training job: ``python -m training.regime.train`` (SageMaker's contract).

Inputs, as a SageMaker training container receives them (local folders work the same):

* hyperparameters: ``/opt/ml/input/config/hyperparameters.json`` if present, else the JSON in
  ``$SM_HPS``, else defaults — ``seed`` (int), ``states`` (int or list, default 4,5,6),
  ``covariance_type`` (``full``/``diag``), ``restarts`` (int), ``start`` / ``end`` (ISO dates:
  train on bars with start <= time < end), ``bars`` (a data spec when no channel is given);
* ``$SM_CHANNEL_TRAIN``: a folder of bars CSVs (every ``*.csv`` except regime-truth files:
  ``truth.csv``, ``*.truth.csv`` or a ``timestamp,regime`` header, as ``data synth`` writes them);
* ``$SM_MODEL_DIR`` (default ``/opt/ml/model``): where the artifact is written.

``seed``, ``restarts`` and ``states`` must be whole numbers (JSON may write 4, 4.0 or "4"):
2.7 or true fails the job, naming the value, rather than training with 2 or 1.

It prints one JSON line ``{"version": ..., "model_dir": ..., "n_states": ..., "bic": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError, EnsembleTraderError
from ensemble_trader.domain.regime_model import RegimeModel

from training.regime.estimator import DEFAULT_RESTARTS, RegimeHMM
from training.sagemaker import (
    HYPERPARAMETERS_FILE,
    channel_files,
    check_no_arguments,
    read_hyperparameters,
    report_failure,
)

SM_HYPERPARAMETERS = HYPERPARAMETERS_FILE
DEFAULT_STATES = (4, 5, 6)


def _states(value: Any) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_STATES
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else [int(v) for v in value.split(",")]
    if isinstance(value, (int, float)):
        return (_whole(value, "states"),)
    return tuple(_whole(v, "states") for v in value)


def _whole(value: Any, name: str) -> int:
    """A hyperparameter that must be a whole number (JSON may spell it 4.0 or "4"; true is not one)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a whole number") from None
    if not number.is_integer():
        raise ValueError(f"{name}={value!r}: expected a whole number")
    return int(number)


def fit_model(
    series: Sequence[BarSeries],
    *,
    seed: int = 0,
    states: Sequence[int] | int | None = None,
    covariance_type: str = "full",
    restarts: int = DEFAULT_RESTARTS,
    start: str | None = None,
    end: str | None = None,
    progress: bool = False,
) -> tuple[RegimeHMM, RegimeModel]:
    """Fit the regime HMM on bars (optionally cut to [start, end)) and return it with its artifact."""
    cut = [s.between(start, end) if (start or end) else s for s in series]
    cut = [s for s in cut if len(s)]
    if not cut:
        raise DataError(f"no bars in the training window [{start or '...'}, {end or '...'})")
    estimator = RegimeHMM(
        n_states=_states(states),
        covariance_type=covariance_type,
        n_restarts=restarts,
        random_state=seed,
    ).fit(cut, progress=progress)
    return estimator, estimator.model_


def channel_bars(channel: str | None) -> list[BarSeries]:
    """Every bars CSV of a channel folder (regime-truth files are skipped: see ``channel_files``)."""
    from ensemble_trader.marketdata import read_bars_csv

    return [s for f in channel_files(channel) for s in read_bars_csv(f)]


def run_job(hps: dict[str, Any], series: Sequence[BarSeries], out: Path, progress: bool = False) -> dict[str, Any]:
    estimator, model = fit_model(
        series,
        seed=_whole(hps.get("seed", 0), "seed"),
        states=hps.get("states"),
        covariance_type=str(hps.get("covariance_type", "full")),
        restarts=_whole(hps.get("restarts", DEFAULT_RESTARTS), "restarts"),
        start=hps.get("start"),
        end=hps.get("end"),
        progress=progress,
    )
    model.save(out)
    return {"version": model.version, "model_dir": str(out), "n_states": model.n_states, "bic": estimator.bic_}


def sagemaker_main(argv: Sequence[str] | None = None) -> int:
    """Run the job as a SageMaker training container would."""
    check_no_arguments("python -m training.regime.train", "regime training job",
                       "ensemble-trader regime fit --bars SPEC --out DIR", argv)
    try:
        hps = read_hyperparameters(SM_HYPERPARAMETERS)
        series = channel_bars(os.environ.get("SM_CHANNEL_TRAIN"))
        if not series:
            from ensemble_trader.marketdata import load_bars

            series = load_bars(str(hps.get("bars", "arch:sp500")))
        out = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
        result = run_job(hps, series, out, progress=sys.stderr.isatty())
    except (EnsembleTraderError, ValueError) as exc:
        report_failure("regime training", exc)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sagemaker_main(sys.argv[1:]))
