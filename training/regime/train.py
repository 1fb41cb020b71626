"""The regime-model training job: ``python -m training.regime.train`` (SageMaker's contract).

Inputs, as a SageMaker training container receives them (local folders work the same):

* hyperparameters: ``/opt/ml/input/config/hyperparameters.json`` if present, else the JSON in
  ``$SM_HPS``, else defaults — ``seed`` (int in [0, 2**32), default 0), ``states`` (int, list or
  comma-separated text, each >= 4; default 4,5,6), ``covariance_type`` (``full``/``diag``),
  ``restarts`` (int >= 1, default 32), ``start`` / ``end`` (ISO dates: train on bars with
  start <= time < end; the features of the first bars of the window are warmed up on the bars
  before it, see :func:`fit_model`), ``bars`` (a data spec when no channel is given, default arch:sp500;
  given beside a train channel, it fails the job naming both, where the channel replaced it unsaid);
* ``$SM_CHANNEL_TRAIN``: a folder of bars CSVs (every ``*.csv`` in it and its subfolders except
  regime-truth files: ``truth.csv``, ``*.truth.csv`` or a ``timestamp,regime`` header, as
  ``data synth`` writes them), one series per symbol: a symbol split over several files (one per
  year) is joined in time order, and files of one symbol with overlapping bar times fail the job
  (``training.sagemaker.read_channel``);
* ``$SM_MODEL_DIR`` (default ``/opt/ml/model``): where the artifact is written.

Every hyperparameter is checked before any data is read or any EM runs (:class:`RegimeJobConfig`,
as the agents' job checks its ``TrainConfig``): an unknown name, a covariance type other than
``full``/``diag``, a date that is not ISO text, a start not before the end, a negative seed or a
state count below 4 fails the job with a message naming the field, written to
``/opt/ml/output/failure`` too. ``seed``, ``restarts`` and ``states`` must be whole numbers (JSON
may write 4, 4.0 or "4"): 2.7 or true fails the job, naming the value, rather than training with
2 or 1.

It prints one JSON line ``{"version": ..., "model_dir": ..., "n_states": ..., "bic": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from ensemble_trader.domain.bars import BarSeries, parse_datetime64
from ensemble_trader.domain.errors import DataError, EnsembleTraderError
from ensemble_trader.domain.features import WARMUP_BARS, compute_features
from ensemble_trader.domain.regime_model import RegimeModel
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from training.regime.estimator import DEFAULT_RESTARTS, RegimeHMM
from training.sagemaker import (
    HYPERPARAMETERS_FILE,
    UnexpectedJobError,
    channel_files,
    check_no_arguments,
    read_channel,
    read_hyperparameters,
    refuse_channel_beside,
    report_failure,
    validation_problems,
)

SM_HYPERPARAMETERS = HYPERPARAMETERS_FILE
DEFAULT_STATES = (4, 5, 6)
DEFAULT_BARS = "arch:sp500"
MAX_SEED = 2**32 - 1
"""numpy's largest seed (``default_rng`` refuses a negative one with a message naming no field)."""


def _states(value: Any) -> tuple[int, ...]:
    """``states``: a whole number, a list of them, or text (``4``, ``4,5,6``, ``[4, 5]``), each >= 4."""
    if value is None:
        return DEFAULT_STATES
    try:
        items = value
        if isinstance(items, str):
            text = items.strip()
            items = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        if isinstance(items, (int, float)):
            items = [items]
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError
        counts = tuple(_whole(v, "states") for v in items)
    except ValueError:
        raise ValueError(f"states={value!r}: expected a whole number or a list of them, e.g. 4,5,6") from None
    if min(counts) < 4:
        raise ValueError(f"states={value!r}: every state count must be >= 4 (four regimes)")
    return counts


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


def _date(name: str):
    """``start`` / ``end``: ISO-8601 text (``parse_datetime64``'s rules), or absent."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{name}={value!r}: expected an ISO date as text, e.g. \"2007-01-01\"")
        try:
            parse_datetime64(value)
        except DataError as exc:
            raise ValueError(f"{name}={value!r}: {exc}") from None
        return value

    return check


class RegimeJobConfig(BaseModel):
    """The job's hyperparameters, every one checked before any data is read or any EM runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: Annotated[int, BeforeValidator(lambda v: _whole(v, "seed")), Field(ge=0, le=MAX_SEED)] = 0
    states: Annotated[tuple[int, ...], BeforeValidator(_states)] = DEFAULT_STATES
    covariance_type: Literal["full", "diag"] = "full"  # estimator.COVARIANCE_TYPES
    restarts: Annotated[int, BeforeValidator(lambda v: _whole(v, "restarts")), Field(ge=1)] = DEFAULT_RESTARTS
    start: Annotated[str | None, BeforeValidator(_date("start"))] = None
    end: Annotated[str | None, BeforeValidator(_date("end"))] = None
    bars: Annotated[str, Field(min_length=1)] = DEFAULT_BARS

    @model_validator(mode="after")
    def _window_holds_bars(self) -> RegimeJobConfig:
        if self.start is not None and self.end is not None and parse_datetime64(self.start) >= parse_datetime64(self.end):
            raise ValueError(f"start={self.start!r} is not before end={self.end!r}: the window [start, end) holds no bar")
        return self

    @classmethod
    def from_hyperparameters(cls, hps: dict[str, Any]) -> RegimeJobConfig:
        """The configuration, or a :class:`DataError` naming every hyperparameter that is wrong
        (in one line, as the agents' job names its own: :func:`validation_problems`)."""
        try:
            return cls.model_validate(hps)
        except ValidationError as exc:
            raise DataError(validation_problems(exc, "bad hyperparameters", known=cls.model_fields)) from None


def with_warmup(series: BarSeries, start: str | None = None, end: str | None = None) -> BarSeries | None:
    """The bars of ``series`` the fit of the window [start, end) reads: those of the window and,
    before them, the ``WARMUP_BARS - 1`` (172) bars the features warm up on (fewer when the series
    has fewer before ``start``); None when the window holds none of its bars.

    The estimator fits every *ready* feature row of the bars it is given, and the first 172 rows
    are not ready: cutting the series to the window first spent the window's own first 172 bars
    on the warm-up (``--start 2016-06-01 --end 2017-01-01``: no row left of 149 bars, with 4,380
    bars of history before them). With the history before it, every bar of the window is fitted
    once ``start`` is at least 172 bars into the series, and no bar before it is: the fitted
    rows are those the backtester evaluates on such a window (features of the whole series, rows
    in [start, end)) — equal for the default one-bar volatility, and for the exponential averages
    to within ``WARMUP_TOLERANCE`` of their weight, the bound the warm-up is chosen for.
    """
    times = np.asarray(series.timestamp)
    first = 0 if start is None else int(np.searchsorted(times, parse_datetime64(start), side="left"))
    stop = len(series) if end is None else int(np.searchsorted(times, parse_datetime64(end), side="left"))
    if stop <= first:
        return None
    return series[max(0, first - (WARMUP_BARS - 1)):stop]


def fitted_rows(series: BarSeries) -> dict[str, Any]:
    """The rows of ``series`` a fit uses (its ready feature rows), for the manifest: the first and
    last row's time and how many (None, None, 0 when the series is shorter than the warm-up)."""
    ready = np.flatnonzero(compute_features(series).ready)
    if not ready.size:
        return {"fitted_start": None, "fitted_end": None, "fitted_bars": 0}
    return {"fitted_start": str(series.timestamp[ready[0]])[:19], "fitted_end": str(series.timestamp[ready[-1]])[:19],
            "fitted_bars": int(ready.size)}


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
    data: Sequence[str] | None = None,
    jobs: int = -1,
) -> tuple[RegimeHMM, RegimeModel]:
    """Fit the regime HMM on the bars with start <= time < end (every bar when both are None) and
    return it with its artifact.

    Each series is given to the estimator with the bars its features warm up on before ``start``
    (:func:`with_warmup`), so the window's first bars are fitted too. The manifest's
    ``training_window`` has one entry per series: ``start``, ``end`` and ``bars`` are the bars
    read (the warm-up history included: the fitted rows' features depend on them), and
    ``fitted_start``, ``fitted_end`` and ``fitted_bars`` the first and last row actually fitted
    and how many (their sum is ``n_samples``).

    ``data`` (the data specs or files the bars came from) goes into the manifest as
    ``training_data``: a synthetic spec's dates mean nothing, so the checks that a model was not
    fitted on an evaluated window (``training.meta.select``) compare its seed instead.

    ``jobs``: worker processes for the EM restarts (default -1, every usable core); the model is
    the same for any value (:class:`RegimeHMM`'s ``n_jobs``)."""
    cut = [s if start is None and end is None else with_warmup(s, start, end) for s in series]
    cut = [s for s in cut if s is not None and len(s)]
    if not cut:
        raise DataError(f"no bars in the training window [{start or '...'}, {end or '...'})")
    estimator = RegimeHMM(
        n_states=_states(states),
        covariance_type=covariance_type,
        n_restarts=restarts,
        random_state=seed,
        n_jobs=jobs,
    ).fit(cut, progress=progress)
    # the estimator's entries: one per series given (each non-empty), in their order
    window = [{**w, **fitted_rows(s)} for w, s in zip(estimator.model_.info["training_window"], cut, strict=True)]
    info = {**estimator.model_.info, "training_window": window}
    if data is not None:
        info["training_data"] = list(data)
    estimator.model_ = replace(estimator.model_, info=info)
    return estimator, estimator.model_


def run_job(
    hps: dict[str, Any] | RegimeJobConfig,
    series: Sequence[BarSeries],
    out: Path,
    progress: bool = False,
    data: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fit and save the model; the hyperparameters are checked first (:class:`RegimeJobConfig`)."""
    config = hps if isinstance(hps, RegimeJobConfig) else RegimeJobConfig.from_hyperparameters(hps)
    estimator, model = fit_model(
        series,
        seed=config.seed,
        states=config.states,
        covariance_type=config.covariance_type,
        restarts=config.restarts,
        start=config.start,
        end=config.end,
        progress=progress,
        data=data,
    )
    model.save(out)
    return {"version": model.version, "model_dir": str(out), "n_states": model.n_states, "bic": estimator.bic_}


def sagemaker_main(argv: Sequence[str] | None = None) -> int:
    """Run the job as a SageMaker training container would: the hyperparameters are checked
    before the data is read; every failure — a bad hyperparameter, bad data, or an unexpected
    error (re-raised after) — is reported through :func:`report_failure`."""
    check_no_arguments("python -m training.regime.train", "regime training job",
                       "ensemble-trader regime fit --bars SPEC --out DIR", argv)
    try:
        config = RegimeJobConfig.from_hyperparameters(read_hyperparameters(SM_HYPERPARAMETERS))
        refuse_channel_beside("bars", "SM_CHANNEL_TRAIN", config.model_fields_set)
        channel = read_channel(channel_files(os.environ.get("SM_CHANNEL_TRAIN")))  # one series per symbol
        if channel:
            series, data = [c.series for c in channel], [str(f) for c in channel for f in c.files]
        else:
            from ensemble_trader.marketdata import load_bars

            series, data = load_bars(config.bars), [config.bars]
        out = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
        result = run_job(config, series, out, progress=sys.stderr.isatty(), data=data)
    except (EnsembleTraderError, ValueError) as exc:
        report_failure("regime training", exc)
        return 1
    except Exception as exc:  # a bug: SageMaker still shows a reason, and the traceback follows
        report_failure("regime training", UnexpectedJobError(exc))
        raise
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sagemaker_main(sys.argv[1:]))
