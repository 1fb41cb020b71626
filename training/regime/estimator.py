"""Fitting the regime HMM with hmmlearn and exporting it as a :class:`RegimeModel`.

:class:`RegimeHMM` follows scikit-learn's habits: ``__init__`` stores hyperparameters, ``fit``
returns self, learned attributes end in ``_``, ``random_state`` seeds every restart.

Fitting, for each candidate number of states K:

1. the model's features are taken from :func:`compute_features` on the bars (rows past the
   feature warm-up only), transformed (``log`` for volatilities) and standardised;
2. hmmlearn's ``GaussianHMM`` is fitted by EM from ``n_restarts`` seeds; the restart with the
   highest log-likelihood is kept (the restarts run in ``n_jobs`` worker processes when asked:
   each restart's seed is drawn before any runs and the outcomes are compared in seed order, so
   the fitted model does not depend on ``n_jobs``). A restart that collapses (a state's covariance degenerates:
   hmmlearn raises, e.g. "array must not contain infs or NaNs", or returns non-finite
   parameters or score) is discarded with a warning naming the state count, the restart and the
   reason; a state count none of whose restarts succeeded is dropped from the candidates, and
   :class:`RegimeFitError` is raised only when every restart of every state count failed;
3. K is chosen by the lowest BIC among the candidates.

The hidden states are then named without labels
(:func:`~ensemble_trader.domain.regime_fit.label_states`): each state's drift
and volatility are measured on the training bars it explains (posterior-weighted mean of the
one-bar log return, and root of the weighted mean Garman-Klass variance).

Exported parameters differ from hmmlearn's in two documented ways: every transition
probability is floored at ``transition_floor`` (then rows renormalised) so no regime is ever
unreachable online, and the start distribution is the stationary distribution of the fitted
chain (the online filter starts at an arbitrary bar, not at the training sample's first).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError, EnsembleTraderError
from ensemble_trader.domain.features import FEATURE_NAMES, compute_features
from ensemble_trader.domain.models import Regime
from ensemble_trader.domain.regime_fit import (
    MIN_ROWS_PER_STATE,
    floor_stochastic,
    label_states,
    state_summary,
    stationary_distribution,
)
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel

DEFAULT_FEATURES: tuple[tuple[str, str], ...] = (("range_vol_1", "log"),)
"""(name, transform) of the model's inputs. The one-bar Garman-Klass volatility carries most of
the information on every data set we tried; drift features (ret_1, ret_5, ret_20) make EM split
states on fat-tailed returns instead of volatility (see docs/regime.md)."""

DEFAULT_RESTARTS = 32
"""EM restarts per state count. EM on one volatility feature often stops in a poor local optimum:
on S&P 500 1999-2006 (the documented ``regime fit``'s 1,839 rows past the 173-bar warm-up) twelve
restarts reached the best fit (4 states, BIC 4174.0-4174.2) from seeds 1, 3, 4 and 5 only — seed 0
stopped at BIC 4230.2 (SIDEWAYS on 7 % of 2007-2018), seed 2 at 4195.0 — and 32 reach it from
seeds 0-5 (~40 s per fit on one core; see docs/regime.md, *CLI*)."""

_log = logging.getLogger(__name__)


class RegimeFitError(EnsembleTraderError, ValueError):
    """No EM restart of any candidate state count produced a usable fit (each collapsed); the
    message names every state count and the reason of its restarts' failures."""

LOG_FLOOR_FRACTION = 0.1
"""Log-transformed features are floored at this fraction of their training median before the
log, so a flat bar (zero range, common in hourly crypto data) reads as "very quiet", not as an
outlier 20 log-units away that EM would give a hidden state of its own."""
COVARIANCE_TYPES = ("full", "diag")
"""The covariance types the exported :class:`RegimeModel` stores (hmmlearn's ``tied`` and
``spherical`` are refused by :meth:`RegimeHMM.fit` before any EM, not at export)."""
DRIFT_FEATURE = "ret_1"
VOL_FEATURE = "range_vol_1"


def training_rows(series: BarSeries, features: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw model features, one-bar returns and one-bar GK vols of the bars past warm-up."""
    matrix = compute_features(series)
    ready = matrix.ready
    names = [name for name, _ in features]
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise DataError(f"unknown regime feature(s) {unknown}; choose among {FEATURE_NAMES}")
    raw = matrix.values[ready][:, [FEATURE_NAMES.index(n) for n in names]]
    return raw, matrix.column(DRIFT_FEATURE)[ready], matrix.column(VOL_FEATURE)[ready]


def log_floor(raw: np.ndarray, features: Sequence[tuple[str, str]]) -> float:
    """The floor of the log transform: LOG_FLOOR_FRACTION of the smallest training median of the
    log-transformed features (1e-12 when none is positive)."""
    medians = [float(np.median(raw[:, j])) for j, (_, t) in enumerate(features) if t == "log"]
    positive = [m for m in medians if m > 0]
    return LOG_FLOOR_FRACTION * min(positive) if positive else 1e-12


def transform_raw(raw: np.ndarray, features: Sequence[tuple[str, str]], floor: float | None = None) -> np.ndarray:
    """Apply the per-feature transforms (``log`` floored, see :func:`log_floor`) to raw rows."""
    out = np.array(raw, dtype=np.float64)
    floor = log_floor(out, features) if floor is None else floor
    for j, (_, transform) in enumerate(features):
        if transform == "log":
            out[:, j] = np.log(np.maximum(out[:, j], floor))
    return out


def bars_hash(series: Sequence[BarSeries]) -> str:
    """sha256 of the training bars (symbols, times and OHLCV), to pin what a model saw."""
    digest = hashlib.sha256()
    for s in series:
        digest.update(s.symbol.encode())
        for arr in (s.timestamp.astype("datetime64[ns]").astype(np.int64), s.open, s.high, s.low, s.close, s.volume):
            digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class StateSummary:
    """What a hidden state looks like on the training data."""

    drift: float  # mean one-bar log return
    vol: float  # root mean GK variance per bar
    share: float  # fraction of training bars
    regime: Regime

    @property
    def sharpe(self) -> float:
        return self.drift / self.vol if self.vol > 0 else 0.0


class RegimeHMM:
    """Gaussian HMM regime model: hmmlearn for fitting, :class:`RegimeModel` for serving.

    Parameters
    ----------
    features : (name, transform) pairs of model inputs (names from ``FEATURE_NAMES``).
    n_states : candidate numbers of hidden states (>= 4); the lowest BIC wins.
    covariance_type : ``"full"`` or ``"diag"`` (:data:`COVARIANCE_TYPES`; anything else is a
        ValueError from ``fit`` before any EM).
    n_restarts : EM restarts per candidate, each from its own seed.
    n_iter, tol : EM limits (hmmlearn's).
    transition_floor : lower bound of every exported transition / start probability.
    min_share : states below this share of bars cannot anchor a regime (see label_states).
    random_state : seed of the restarts.
    n_jobs : worker processes for the EM restarts (joblib); 1 fits in this process, -1 on every
        usable core. The fitted model is the same for any value.
    """

    def __init__(
        self,
        features: Sequence[tuple[str, str]] = DEFAULT_FEATURES,
        n_states: Sequence[int] | int = (4, 5, 6),
        covariance_type: str = "full",
        n_restarts: int = DEFAULT_RESTARTS,
        n_iter: int = 200,
        tol: float = 1e-4,
        transition_floor: float = 1e-6,
        min_share: float = 0.03,
        random_state: int | None = None,
        n_jobs: int = 1,
    ):
        self.features = features
        self.n_states = n_states
        self.covariance_type = covariance_type
        self.n_restarts = n_restarts
        self.n_iter = n_iter
        self.tol = tol
        self.transition_floor = transition_floor
        self.min_share = min_share
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------------------------------

    def _candidates(self) -> list[int]:
        ks = [self.n_states] if isinstance(self.n_states, (int, np.integer)) else list(self.n_states)
        if not ks or any(int(k) < 4 for k in ks):
            raise ValueError(f"n_states {self.n_states!r}: every candidate must be >= 4 (four regimes)")
        return sorted({int(k) for k in ks})  # a count named twice is fitted once

    def fit(self, data: BarSeries | Sequence[BarSeries], progress: bool = False) -> RegimeHMM:
        """Fit on one or more bar series (each its own sequence); returns self."""
        from hmmlearn.hmm import GaussianHMM  # training-only dependency

        if self.covariance_type not in COVARIANCE_TYPES:  # checked before any EM (tied once ran them all)
            raise ValueError(f"covariance_type {self.covariance_type!r}: must be one of {', '.join(COVARIANCE_TYPES)} "
                             "(the covariances the exported model stores)")
        ks = self._candidates()
        if not isinstance(self.n_restarts, (int, np.integer)) or isinstance(self.n_restarts, bool) or self.n_restarts < 1:
            raise ValueError(f"n_restarts {self.n_restarts!r}: must be an integer >= 1")
        if not isinstance(self.n_jobs, (int, np.integer)) or isinstance(self.n_jobs, bool) or self.n_jobs == 0:
            raise ValueError(f"n_jobs {self.n_jobs!r}: must be a non-zero integer (-1: every usable core)")
        series = [data] if isinstance(data, BarSeries) else list(data)
        features = tuple((str(n), str(t)) for n, t in self.features)
        raws, rets, vols, lengths = [], [], [], []
        for s in series:
            raw, ret, vol = training_rows(s, features)
            if len(raw):
                raws.append(raw)
                rets.append(ret)
                vols.append(vol)
                lengths.append(len(raw))
        n = sum(lengths)
        if n < MIN_ROWS_PER_STATE * max(ks):
            raise DataError(f"too few bars to fit a regime model: {n} usable bars (after warm-up), "
                            f"need >= {MIN_ROWS_PER_STATE * max(ks)} ({MIN_ROWS_PER_STATE} per state)")
        raw_all = np.concatenate(raws)
        floor = log_floor(raw_all, features)
        x = transform_raw(raw_all, features, floor)
        center, scale = x.mean(axis=0), x.std(axis=0)
        if np.any(scale <= 0):
            flat = [features[j][0] for j in np.flatnonzero(scale <= 0)]
            raise DataError(f"feature(s) {flat} are constant on the training bars")
        z = (x - center) / scale

        rng = np.random.default_rng(self.random_state)
        seeds = rng.integers(0, 2**31 - 1, size=(len(ks), self.n_restarts))
        candidates: list[dict[str, Any]] = []
        best_by_k: dict[int, Any] = {}
        bar = _progress(len(ks) * self.n_restarts, "regime fit") if progress else None
        failures: dict[int, list[str]] = {}
        restarts = [(k, r, int(seed)) for i, k in enumerate(ks) for r, seed in enumerate(seeds[i], start=1)]
        outcomes = _run_restarts(
            [GaussianHMM(n_components=k, covariance_type=self.covariance_type, n_iter=self.n_iter, tol=self.tol,
                         random_state=seed) for k, _, seed in restarts],
            z, lengths, self.n_jobs,
        )
        best_of: dict[int, tuple[float, Any]] = {}
        for (k, r, seed), (outcome, hmm) in zip(restarts, outcomes, strict=True):  # in seed order
            if bar is not None:
                bar.update(1)
            if isinstance(outcome, str):  # collapsed: discarded, the other restarts go on
                _log.warning("regime fit: %d states, restart %d of %d (EM seed %d) discarded: %s",
                             k, r, self.n_restarts, seed, outcome)
                failures.setdefault(k, []).append(f"restart {r} (EM seed {seed}): {outcome}")
            elif k not in best_of or outcome > best_of[k][0]:
                best_of[k] = (outcome, hmm)
        for k in ks:
            best = best_of.get(k)
            if best is None:
                _log.warning("regime fit: every restart of %d states collapsed; %d states is not a candidate", k, k)
                continue
            score, hmm = best
            bic = float(hmm.bic(z, lengths))
            candidates.append(
                {"n_states": k, "log_likelihood": float(score), "bic": bic, "converged": bool(hmm.monitor_.converged)}
            )
            best_by_k[k] = hmm
        if bar is not None:
            bar.close()
        if not candidates:
            raise RegimeFitError(
                f"every EM restart collapsed ({self.n_restarts} per state count, {n} rows): "
                + "; ".join(f"{k} states: {', '.join(failures[k])}" for k in ks)
            )
        chosen = min(candidates, key=lambda c: c["bic"])
        hmm = best_by_k[chosen["n_states"]]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            posterior = hmm.predict_proba(z, lengths)
        drift, state_vol, share = state_summary(posterior, np.concatenate(rets), np.concatenate(vols))
        regimes = label_states(drift, state_vol, share, self.min_share)

        self.hmm_ = hmm
        self.features_ = features
        self.center_, self.scale_ = center, scale
        self.candidates_ = candidates
        self.n_states_ = int(chosen["n_states"])
        self.log_likelihood_ = float(chosen["log_likelihood"])
        self.bic_ = float(chosen["bic"])
        self.n_samples_ = n
        self.log_floor_ = floor
        self.state_summaries_ = tuple(
            StateSummary(float(drift[s]), float(state_vol[s]), float(share[s]), regimes[s]) for s in range(self.n_states_)
        )
        self.state_regimes_ = regimes
        self.transmat_ = floor_stochastic(hmm.transmat_, self.transition_floor)
        self.startprob_ = floor_stochastic(stationary_distribution(self.transmat_), self.transition_floor)
        self.training_data_hash_ = bars_hash(series)
        self.training_window_ = [
            {"symbol": s.symbol, "start": str(s.timestamp[0])[:19], "end": str(s.timestamp[-1])[:19], "bars": len(s)}
            for s in series
            if len(s)
        ]
        self.model_ = self._export()
        return self

    def _export(self) -> RegimeModel:
        hmm = self.hmm_
        covs = hmm.covars_ if self.covariance_type == "full" else np.stack([np.diag(c) for c in hmm.covars_])
        return RegimeModel(
            features=tuple(
                FeatureSpec(name, transform, float(self.center_[j]), float(self.scale_[j]))
                for j, (name, transform) in enumerate(self.features_)
            ),
            start_prob=self.startprob_,
            transmat=self.transmat_,
            means=hmm.means_,
            covariances=covs,
            covariance_type=self.covariance_type,
            state_regimes=self.state_regimes_,
            log_floor=self.log_floor_,
            info={
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "training_data_hash": self.training_data_hash_,
                "training_window": self.training_window_,
                "n_samples": self.n_samples_,
                "log_likelihood": self.log_likelihood_,
                "bic": self.bic_,
                "candidates": self.candidates_,
                "hyperparameters": self.get_params(),
                "state_summary": [
                    {"state": s, "regime": st.regime.value, "drift": st.drift, "vol": st.vol, "share": st.share}
                    for s, st in enumerate(self.state_summaries_)
                ],
                "labelling_rule": "label_states: VOLATILE=max vol; BEAR=min drift/vol; BULL=max drift/vol; "
                "SIDEWAYS=min vol; others nearest anchor",
            },
        )

    def get_params(self) -> dict[str, Any]:
        ks = self.n_states
        return {
            "features": [list(f) for f in self.features],
            "n_states": [int(k) for k in ks] if not isinstance(ks, (int, np.integer)) else int(ks),
            "covariance_type": self.covariance_type,
            "n_restarts": self.n_restarts,
            "n_iter": self.n_iter,
            "tol": self.tol,
            "transition_floor": self.transition_floor,
            "min_share": self.min_share,
            "random_state": self.random_state,
        }


def _run_restarts(hmms: list[Any], z: np.ndarray, lengths: list[int], n_jobs: int):
    """Each restart's (outcome, fitted hmm), in the order given, as they end: in this process when
    ``n_jobs`` is 1, else in joblib's worker processes (one BLAS thread each)."""
    if n_jobs == 1 or len(hmms) == 1:
        return (_fitted_restart(hmm, z, lengths) for hmm in hmms)
    from joblib import Parallel, delayed  # scikit-learn's dependency

    return Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_fitted_restart)(hmm, z, lengths) for hmm in hmms)


def _fitted_restart(hmm: Any, z: np.ndarray, lengths: list[int]) -> tuple[float | str, Any]:
    """One restart: its outcome and the hmm it fitted (from a worker process, a copy sent back)."""
    return _fit_restart(hmm, z, lengths), hmm


def _fit_restart(hmm: Any, z: np.ndarray, lengths: list[int]) -> float | str:
    """Fit one EM restart; its log-likelihood, or why it collapsed (an exception hmmlearn raised on
    its own degenerate parameters, non-finite parameters or a non-finite score)."""
    # hmmlearn logs "Model is not converging" whenever an EM step lowers the log-likelihood by
    # more than sqrt(eps): expected here (the covariance prior and floors make EM not strictly
    # monotone), the fit stops there as at convergence and the best restart is kept, so the
    # message only alarmed the user of `regime fit` (on stderr, with no word of what it meant)
    monitor_log = logging.getLogger("hmmlearn.base")
    level = monitor_log.level
    monitor_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hmm.fit(z, lengths)
            score = float(hmm.score(z, lengths))
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        monitor_log.setLevel(level)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        if not np.all(np.isfinite(getattr(hmm, name))):
            return f"non-finite {name}"
    if not np.isfinite(score):
        return f"non-finite log-likelihood {score}"
    return score


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="fit", leave=False)
