"""Regime-model fitting that the Lambda can run: numpy Baum-Welch and the state-naming rule.

The offline job (``training/regime``) fits from scratch with hmmlearn (several restarts, BIC).
The scheduled refit Lambda cannot ship hmmlearn, so it *refines* the serving model on recent
history with the same EM algorithm written in numpy here (:func:`refit`): a warm start from the
current parameters, a few Baum-Welch iterations, the same export conventions (transition floor,
stationary start distribution) and the same label-free naming rule (:func:`label_states`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.fitted import inherited_windows
from ensemble_trader.domain.models import REGIMES, Regime
from ensemble_trader.domain.regime_model import RegimeModel


def label_states(
    drift: np.ndarray,
    vol: np.ndarray,
    share: np.ndarray,
    min_share: float = 0.03,
    prefer: Sequence[Regime] | None = None,
    tolerance: float = 0.0,
) -> tuple[Regime, ...]:
    """Name hidden states BULL/BEAR/SIDEWAYS/VOLATILE from their drift and volatility alone.

    The rule (no labels needed), over the states holding at least ``min_share`` of the bars
    (the four largest if fewer qualify):

    1. VOLATILE: the state with the highest volatility;
    2. BEAR: of the others, the lowest drift per unit of volatility (``drift / vol``);
    3. BULL: of the rest, the highest ``drift / vol``;
    4. SIDEWAYS: of the rest, the lowest volatility.

    Every other state joins the regime of the nearest of these four anchors in the plane
    (``drift / vol``, ``log vol``), each axis scaled by the anchors' spread on it
    (BULL − BEAR and VOLATILE − SIDEWAYS).

    ``prefer`` (the names the states had, e.g. before a warm-started refit) with ``tolerance``
    > 0 makes the names sticky: at each pick, the state ``prefer`` names so keeps the name when
    it trails the rule's choice by at most ``tolerance`` of that axis's anchor spread; a state
    joining an anchor keeps its preferred regime when that anchor is at most ``tolerance``
    (scaled units) farther than the nearest. So two states whose statistics are nearly tied do
    not swap names on every refit; the rule renames them once it clearly disagrees.
    """
    drift, vol, share = (np.asarray(a, dtype=np.float64) for a in (drift, vol, share))
    k = len(drift)
    if k < 4:
        raise ValueError(f"need at least 4 hidden states to name 4 regimes, got {k}")
    if prefer is not None and len(prefer) != k:
        raise ValueError(f"prefer names {len(prefer)} states, the statistics {k}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance {tolerance!r} must be finite and >= 0")
    sharpe = drift / np.maximum(vol, 1e-300)
    log_vol = np.log(np.maximum(vol, 1e-300))
    eligible = [s for s in range(k) if share[s] >= min_share]
    if len(eligible) < 4:
        eligible = sorted(np.argsort(-share)[:4].tolist())
    sticky = prefer is not None and tolerance > 0
    if sticky:  # the tolerance is relative to the spreads of the rule's own anchors
        plain = label_states(drift, vol, share, min_share)
        anchor = {r: [s for s in eligible if plain[s] is r] for r in REGIMES}
        sharpe_spread = abs(max(sharpe[s] for s in anchor[Regime.BULL]) - min(sharpe[s] for s in anchor[Regime.BEAR]))
        vol_spread = abs(max(log_vol[s] for s in anchor[Regime.VOLATILE])
                         - min(log_vol[s] for s in anchor[Regime.SIDEWAYS]))

    def pick(rest: list[int], regime: Regime, value: np.ndarray, highest: bool, spread_of: str) -> int:
        best = max(rest, key=lambda s: value[s]) if highest else min(rest, key=lambda s: value[s])
        if sticky:
            spread = sharpe_spread if spread_of == "sharpe" else vol_spread
            mine = [s for s in rest if Regime(prefer[s]) is regime]  # type: ignore[index]
            if mine:
                own = max(mine, key=lambda s: value[s]) if highest else min(mine, key=lambda s: value[s])
                if abs(value[best] - value[own]) <= tolerance * max(spread, 1e-12):
                    return own
        return best

    rest = list(eligible)
    volatile = pick(rest, Regime.VOLATILE, log_vol, True, "vol")
    rest.remove(volatile)
    bear = pick(rest, Regime.BEAR, sharpe, False, "sharpe")
    rest.remove(bear)
    bull = pick(rest, Regime.BULL, sharpe, True, "sharpe")
    rest.remove(bull)
    sideways = pick(rest, Regime.SIDEWAYS, log_vol, False, "vol")
    anchors = {Regime.VOLATILE: volatile, Regime.BEAR: bear, Regime.BULL: bull, Regime.SIDEWAYS: sideways}
    names: dict[int, Regime] = {s: r for r, s in anchors.items()}
    sharpe_scale = max(abs(sharpe[bull] - sharpe[bear]), 1e-12)
    vol_scale = max(abs(log_vol[volatile] - log_vol[sideways]), 1e-12)
    for s in range(k):
        if s not in names:
            distance = {
                r: math.sqrt(((sharpe[s] - sharpe[a]) / sharpe_scale) ** 2 + ((log_vol[s] - log_vol[a]) / vol_scale) ** 2)
                for r, a in anchors.items()
            }
            nearest = min(distance, key=lambda r: distance[r])
            if sticky and distance[Regime(prefer[s])] <= distance[nearest] + tolerance:  # type: ignore[index]
                nearest = Regime(prefer[s])  # type: ignore[index]
            names[s] = nearest
    return tuple(names[s] for s in range(k))


def stationary_distribution(transmat: np.ndarray) -> np.ndarray:
    """The stationary distribution of a stochastic matrix (left eigenvector for eigenvalue 1)."""
    k = len(transmat)
    a = np.asarray(transmat, dtype=np.float64).T - np.eye(k)
    a[-1, :] = 1.0
    b = np.zeros(k)
    b[-1] = 1.0
    pi = np.maximum(np.linalg.solve(a, b), 0.0)
    return pi / pi.sum()


def floor_stochastic(p: np.ndarray, floor: float) -> np.ndarray:
    """Raise every entry to at least ``floor`` and renormalise the rows."""
    out = np.maximum(np.asarray(p, dtype=np.float64), floor)
    return out / out.sum(axis=-1, keepdims=True)


def state_summary(posterior: np.ndarray, ret_1: np.ndarray, range_vol_1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drift (mean one-bar log return), GK volatility and share of bars of each state."""
    w = posterior / np.maximum(posterior.sum(axis=0), 1e-300)
    return w.T @ ret_1, np.sqrt(w.T @ (range_vol_1 * range_vol_1)), posterior.mean(axis=0)


# --------------------------------------------------------------------------------------------
# Baum-Welch in numpy
# --------------------------------------------------------------------------------------------


def forward_backward(
    log_b: np.ndarray, start: np.ndarray, transmat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Scaled forward-backward: posteriors (n, K), expected transition counts (K, K), log-lik."""
    n, k = log_b.shape
    shift = log_b.max(axis=1, keepdims=True)
    b = np.exp(log_b - shift)
    alpha = np.empty((n, k))
    scale = np.empty(n)
    a = start * b[0]
    scale[0] = a.sum()
    alpha[0] = a / scale[0]
    for t in range(1, n):
        a = (alpha[t - 1] @ transmat) * b[t]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    beta = np.empty((n, k))
    beta[-1] = 1.0
    for t in range(n - 2, -1, -1):
        beta[t] = transmat @ (b[t + 1] * beta[t + 1]) / scale[t + 1]
    gamma = alpha * beta
    gamma /= gamma.sum(axis=1, keepdims=True)
    xi = transmat * (alpha[:-1].T @ (b[1:] * beta[1:] / scale[1:, None]))
    return gamma, xi, float(np.log(scale).sum() + shift.sum())


FLOOR_REACH = 3.0
"""A state places the log floor within its reach when the floor's standardised value lies within
this many of its standard deviations of its mean, on a feature the model takes the log of."""


def _floor_rows_and_states(model: RegimeModel, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows read a log-transformed feature at the model's log floor (a bar with no range),
    and which of the model's states place the floor within :data:`FLOOR_REACH` standard
    deviations of their mean on such a feature (a fit that gave those rows a state of their own)."""
    logged = [i for i, f in enumerate(model.features) if f.transform == "log"]
    rows = np.zeros(len(raw), dtype=bool)
    states = np.zeros(model.n_states, dtype=bool)
    for i in logged:
        rows |= raw[:, i] <= model.log_floor
        f = model.features[i]
        floor_z = (math.log(model.log_floor) - f.center) / f.scale
        variance = model.covariances[:, i, i] if model.covariance_type == "full" else model.covariances[:, i]
        sd = np.sqrt(variance)
        states |= np.abs(model.means[:, i] - floor_z) <= FLOOR_REACH * sd
    return rows, states


MIN_ROWS_PER_STATE = 20
"""A fit or a refit needs at least this many rows per hidden state (a 4-state model has 23
parameters: on 40 rows its labels would mean nothing)."""


RENAME_TOLERANCE = 0.25
"""How far (a share of the anchors' spread on the axis compared) a state's current name may trail
the naming rule's choice before a refit renames it."""

COVARIANCE_PRIOR = 1e-2
"""The covariance estimate's prior, as the offline fit has it (hmmlearn's ``covars_prior``, which
``training/regime`` leaves at its default): a state's covariance is its weighted scatter plus this
on the diagonal, over its weight. So a state the training fit left narrow (rows sitting on the
log floor) is estimated the same way by a refit, and a refit from a fitted model does not move it
away from the training optimum."""

MIN_COVARIANCE = 1e-9
"""A lower bound on every variance (eigenvalue, for ``full``) a refit estimates, applied as a
maximum: a variance above it is left as estimated (a numerical guard; the prior above already
keeps every state's variance above zero)."""

MAX_LINEAGE = 400
"""Versions kept in a refit's ``refit_lineage`` (over a year of daily publishes): a symbol whose
state was written under an older one restarts its filter."""


@dataclass(frozen=True)
class RefitResult:
    model: RegimeModel
    log_likelihood: float
    previous_log_likelihood: float
    iterations: int
    n_samples: int


def refit(
    model: RegimeModel,
    raw: np.ndarray,
    ret_1: np.ndarray,
    range_vol_1: np.ndarray,
    *,
    sequences: Sequence[int] | None = None,
    n_iter: int = 20,
    tol: float = 1e-4,
    transition_floor: float = 1e-6,
    covariance_prior: float = COVARIANCE_PRIOR,
    min_covariance: float = MIN_COVARIANCE,
    min_share: float = 0.03,
    min_state_share: float = 0.01,
    rename_tolerance: float = RENAME_TOLERANCE,
    info: dict | None = None,
) -> RefitResult:
    """Refine ``model`` on ``raw`` rows (model feature order) by Baum-Welch from its parameters.

    ``sequences`` are the lengths of consecutive independent sequences (e.g. one per symbol;
    default: one). The standardisation of the features is kept, so the refined model reads the
    same inputs. States are renamed with :func:`label_states` on ``ret_1`` / ``range_vol_1``.
    A state holding less than ``min_state_share`` of the rows keeps its parameters, its
    transition row and the other states' transitions into it (the rest of each of their rows is
    re-estimated and scaled to what those leave): EM would otherwise collapse it onto those few
    rows, and its few visits would floor the transitions into it, so that a calm lookback made
    the stress states unreachable. Covariances are estimated as the offline fit estimates them
    (:data:`COVARIANCE_PRIOR`), floored at ``min_covariance`` by a maximum. EM stops at its best
    iterate: a step that lowers the log-likelihood on the rows (the floors and the kept states
    make EM not strictly monotone) is not kept, so the result is never below its starting
    model. The states are renamed
    only when each holds at least ``min_share`` of the rows; otherwise the names stay. The
    renaming prefers the states' current names (``rename_tolerance``, see :func:`label_states`):
    a nearly tied pair (BULL and SIDEWAYS of similar drift per unit of volatility) does not swap
    names on a refit, which would change the reported regime with no market move.

    The refined model's ``info`` records ``refit_of`` (``model``'s version) and
    ``refit_lineage`` (that version, then ``model``'s own lineage, newest first, at most
    :data:`MAX_LINEAGE`): its hidden states are those versions' one to one, so the online filter
    of a symbol carries its distribution across the new version
    (:meth:`RegimeModel.states_aligned_with`). It also records ``inherited_windows``
    (:func:`~ensemble_trader.domain.fitted.inherited_windows`): the refit keeps ``model``'s
    standardisation and log floor, so the windows ``model`` and its own ancestors were fitted on
    count as its training windows too.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != model.n_features:
        raise DataError(f"refit needs rows of {model.n_features} features {model.feature_names}, got {raw.shape}")
    if not np.all(np.isfinite(raw)):
        raise DataError("refit rows contain non-finite feature values")
    lengths = list(sequences) if sequences is not None else [len(raw)]
    if sum(lengths) != len(raw) or any(n < 2 for n in lengths):
        raise DataError(f"sequence lengths {lengths} must be >= 2 each and sum to {len(raw)} rows")
    k, d = model.n_states, model.n_features
    if len(raw) < MIN_ROWS_PER_STATE * k:
        raise DataError(f"refit needs at least {MIN_ROWS_PER_STATE * k} rows for {k} states, got {len(raw)}")
    z = model.transform(raw)
    bounds = np.cumsum([0, *lengths])
    full = model.covariance_type == "full"
    # rows read at the log floor (a bar with no range) re-estimate only the states the starting
    # model already places there: EM would otherwise pull a named state onto them (with 2 % of
    # such rows the committed model's BULL moved to the floor and labelled no ordinary bar)
    floor_rows, floor_states = _floor_rows_and_states(model, raw)
    emission_mask = np.where(floor_rows[:, None] & ~floor_states[None, :], 0.0, 1.0)
    # and when no state is there, such a row is a missing observation (the same density under
    # every state): its posterior follows the chain, so the quietest state's transitions are not
    # read off the rows' positions either
    missing = floor_rows if not floor_states.any() else np.zeros(len(z), dtype=bool)

    def e_step(params: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, float]:
        p_start, p_transmat, p_means, p_covs = params
        current = RegimeModel(model.features, p_start, p_transmat, p_means, p_covs, model.covariance_type,
                              model.state_regimes)
        log_b = current.log_emission_matrix(z)
        log_b[missing] = 0.0
        gamma = np.empty((len(z), k))
        xi = np.zeros((k, k))
        loglik = 0.0
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            g, x, ll = forward_backward(log_b[lo:hi], p_start, p_transmat)
            gamma[lo:hi], xi, loglik = g, xi + x, loglik + ll
        return gamma, xi, loglik

    def m_step(params: tuple[np.ndarray, ...], gamma: np.ndarray, xi: np.ndarray) -> tuple[np.ndarray, ...]:
        _, transmat, means, covs = params
        weight = gamma.sum(axis=0)
        # a state with too little weight keeps its parameters: re-estimated from a handful of rows
        # it would collapse onto them (variance on the floor, a name read off a few returns)
        thin = weight < min_state_share * len(z)
        fitted = xi / np.maximum(xi.sum(axis=1, keepdims=True), 1e-300)
        # the transitions INTO a thin state are kept too (its few visits would floor them, and a
        # calm lookback would make the stress states unreachable); the rest of each row shares
        # what they leave, in the re-estimated proportions
        kept = np.where(thin[None, :], transmat, 0.0)
        rest = np.where(thin[None, :], 0.0, np.maximum(fitted, transition_floor))
        fitted = kept + rest / np.maximum(rest.sum(axis=1, keepdims=True), 1e-300) * (1.0 - kept.sum(axis=1, keepdims=True))
        transmat = np.where(thin[:, None], transmat, fitted)
        # the emissions from the rows each state may explain (all of them, unless rows at the floor)
        emitted = gamma * emission_mask
        emitted_weight = emitted.sum(axis=0)
        kept_emission = thin | (emitted_weight < min_state_share * len(z))
        means = np.where(kept_emission[:, None], means, (emitted.T @ z) / np.maximum(emitted_weight[:, None], 1e-300))
        covs = covs.copy()
        for s in range(k):
            if kept_emission[s]:
                continue
            diff = z - means[s]
            # training's estimate (hmmlearn's covars_prior over the state's weight), then a floor
            # that only raises what is below it: never an addition that moves every variance
            if full:
                scatter = (emitted[:, s, None] * diff).T @ diff + covariance_prior * np.eye(d)
                values, vectors = np.linalg.eigh(scatter / max(emitted_weight[s], 1e-300))
                covs[s] = (vectors * np.maximum(values, min_covariance)) @ vectors.T
            else:
                scatter = (emitted[:, s, None] * diff * diff).sum(axis=0) + covariance_prior
                covs[s] = np.maximum(scatter / max(emitted_weight[s], 1e-300), min_covariance)
        start = floor_stochastic(stationary_distribution(transmat), transition_floor)
        return start, transmat, means, covs

    params: tuple[np.ndarray, ...] = (model.start_prob, model.transmat, model.means.copy(), model.covariances.copy())
    gamma, xi, loglik = e_step(params)
    first = loglik
    # the best iterate so far (0: the starting model), its posterior and its log-likelihood. The
    # prior, the floors and the kept states make EM not strictly monotone in the log-likelihood
    # (from a state the training fit left on the log floor it dips for two steps, then climbs
    # past its start), so every step is scored and the best one is returned
    best = (0, params, gamma, loglik)
    iterations, previous = 0, loglik
    while iterations < n_iter:
        iterations += 1
        params = m_step(params, gamma, xi)
        gamma, xi, loglik = e_step(params)
        if loglik > best[3]:
            best = (iterations, params, gamma, loglik)
        if abs(loglik - previous) < tol:
            break
        previous = loglik
    best_iteration, (start, transmat, means, covs), posterior, loglik = best
    # a state is named by the rows it may explain (a flat row's zero range and return are no
    # measure of a state the starting model does not place on the floor)
    drift, vol, share = state_summary(posterior * emission_mask, np.asarray(ret_1), np.asarray(range_vol_1))
    # rename only when every state is well represented; otherwise the names stay. The states are
    # the pinned model's, one to one (warm start): a name moves only when the rule clearly says so
    names = (
        label_states(drift, vol, share, min_share, prefer=model.state_regimes, tolerance=rename_tolerance)
        if share.min() >= min_share
        else model.state_regimes
    )
    lineage = [model.version, *model.refit_lineage][:MAX_LINEAGE]
    refined = RegimeModel(
        model.features,
        start,
        transmat,
        means,
        covs,
        model.covariance_type,
        names,
        log_floor=model.log_floor,
        info={
            **(info or {}),
            "refit_of": model.version,
            "refit_lineage": lineage,
            "inherited_windows": inherited_windows(model.info, model.version),
            "n_samples": len(raw),
            "log_likelihood": loglik,
            "previous_log_likelihood": float(first),
            "iterations": iterations,
            "best_iteration": best_iteration,
        },
    )
    return RefitResult(refined, loglik, float(first), iterations, len(raw))
