"""Regret study: our bandits against MABWiser's on stationary and piecewise-stationary problems.

Not a test: run it by hand (``make bench``'s companion)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bandit_regret.py [--quick] [--runs N]

Problems (common random numbers: every policy of a run sees the same reward table):

* ``bernoulli``  — stationary, K = 5 Bernoulli arms with means drawn U(0.1, 0.9) per run, T = 5,000;
* ``gaussian``   — stationary, K = 5 arms N(mu_k, 1) with mu_k ~ N(0, 0.5²) per run, T = 5,000;
* ``piecewise``  — K = 5 Bernoulli arms whose means are redrawn U(0.1, 0.9) every 2,000 rounds
  (4 change points, each of which changes the best arm), T = 10,000;
* ``piecewise-fast`` — the same arms redrawn every 500 rounds (19 change points, each changing the
  best arm), T = 10,000.

Our Thompson sampling runs twice on the Bernoulli problems: the Normal-Gamma ``GaussianThompson``
(the meta-agent's model) and ``BetaThompson`` with its default reward range [0, 1], which on 0/1
rewards is the Beta-Bernoulli sampler MABWiser implements (the same uniform prior).

Regret is the pseudo-regret ``sum_t (mu*_t - mu_{a_t})`` (the expected loss of the choices, not
of the noisy rewards). Every policy first plays each arm once (MABWiser needs a fit before its
first prediction), then selects and learns from bandit feedback. Non-stationary parameters come
from Garivier & Moulines' recommendations for T rounds and Y change points, not from tuning on
these problems: ``gamma = 1 - sqrt(Y / T) / 4`` and ``window = 2 sqrt(T log T / Y)``, each
piecewise problem with its own Y (0.9950 / 303 for Y = 4, 0.9891 / 139 for Y = 19). Their
exploration bonus is the paper's padding too, with the paper's experimental ``xi = 0.6`` and the
reward bound ``B = 1`` of the Bernoulli problem: ``c = 2B sqrt(xi ln n_t(gamma) / N_t(gamma, i))``
for D-UCB and ``c = B sqrt(xi ln min(t, window) / N_t(window, i))`` for SW-UCB. Our classes write
the bonus as UCB1's ``alpha sqrt(2 ln n / N)``, so ``alpha = B sqrt(2 xi)`` (about 1.095) for
D-UCB and ``alpha = B sqrt(xi / 2)`` (about 0.548) for SW-UCB — not the library's default
``alpha = 1``, which is UCB1's padding. The change-detecting learners (GLR-UCB with UCB1's padding,
GLR Thompson sampling) take Besson et al.'s test parameters: ``delta = 1 / sqrt(T)``, ``sigma = B / 2``
(the sub-Gaussian scale of rewards in [0, B]), forced exploration ``sqrt(Y ln T / T)`` (0.061 for
Y = 4, 0.132 for Y = 19); GLR Thompson sampling also runs without forced exploration. Two
settings are the library's, not the paper's: the test reads each arm's last 1,000 rewards and
counts only splits with 20 on each side.

100 runs of each piecewise problem and 40 of each stationary one by default (``--runs N`` sets every
problem's, ``--stationary-runs N`` the stationary ones'; ``--quick``: 5 runs, shorter horizons,
files with a ``_quick`` suffix). The default run took 16 min 18 s of wall time on a core shared with
other work (13.2 min of CPU time): about 4.5 s a run of each piecewise problem and 3 s a run of the
two stationary ones together, so 100 stationary runs as well would add about 3 min. The three GLR
learners added about 9 min (25 min of wall time on a shared core, 2026-11-28); with the Beta
Thompson sampler the whole study took 22.5 min on a quieter machine. Each comparison
of ours with MABWiser's is also paired by run (the same reward table). Writes
``docs/img/meta_regret_stationary.png``, ``docs/img/meta_regret_piecewise.png``,
``docs/img/meta_regret_piecewise_fast.png`` and ``docs/img/meta_regret.json`` (the tables of
docs/meta-agent.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ensemble_trader.domain.bandits import (  # noqa: E402
    GLRUCB,
    UCB1,
    BetaThompson,
    DiscountedThompson,
    DiscountedUCB,
    GaussianThompson,
    GLRThompson,
    SlidingWindowUCB,
)
from ensemble_trader.marketdata import save_figure, write_text_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMG = REPO / "docs" / "img"
K = 5
XI = 0.6
"""Garivier & Moulines' padding constant in their experiments (not tuned here)."""
REWARD_BOUND = 1.0
"""B of the paddings: the piecewise problem's rewards are Bernoulli, in [0, 1]."""
DUCB_ALPHA = REWARD_BOUND * math.sqrt(2.0 * XI)
"""2B sqrt(xi ln n / N) written as alpha sqrt(2 ln n / N)."""
SWUCB_ALPHA = REWARD_BOUND * math.sqrt(XI / 2.0)
"""B sqrt(xi ln min(t, window) / N) written as alpha sqrt(2 ln min(t, window) / N)."""
GLR_SIGMA = REWARD_BOUND / 2.0
"""Sub-Gaussian scale of rewards in [0, B] (Hoeffding): the GLR test's sigma."""
GLR_HISTORY = 1_000
"""Rewards per arm the GLR test looks back over: a cap on time per round (the paper keeps all
since the last restart; a segment here lasts 500 or 2,000 rounds, detection takes far fewer)."""
GLR_MIN_SEGMENT = 20
"""Rewards on each side of a split the test counts: the library's default (against fat tails;
the paper's test counts every split)."""


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


def bernoulli_problem(t: int, seed: int, segment: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(means (T, K), rewards (T, K)); means redrawn every ``segment`` rounds if given."""
    rng = np.random.default_rng(seed)
    segments = 1 if segment is None else math.ceil(t / segment)
    blocks = [rng.uniform(0.1, 0.9, K)]
    for _ in range(segments - 1):
        fresh = rng.uniform(0.1, 0.9, K)
        old_best, new_best = int(np.argmax(blocks[-1])), int(np.argmax(fresh))
        if new_best == old_best:  # a change point changes the best arm: swap it with the worst
            worst = int(np.argmin(fresh))  # taken first: a tuple assignment evaluates its targets left to right
            fresh[[old_best, worst]] = fresh[[worst, old_best]]
        blocks.append(fresh)
    means = np.concatenate([np.tile(b, (segment or t, 1)) for b in blocks])[:t]
    rewards = (rng.random((t, K)) < means).astype(np.float64)
    return means, rewards


def gaussian_problem(t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = np.tile(rng.normal(0.0, 0.5, K), (t, 1))
    return means, means + rng.standard_normal((t, K))


# --------------------------------------------------------------------------------------------
# Players: each returns the arm chosen at every round
# --------------------------------------------------------------------------------------------


def play_ours(make: Callable[[], object], rewards: np.ndarray) -> np.ndarray:
    learner = make()
    t = rewards.shape[0]
    chosen = np.empty(t, dtype=int)
    for i in range(t):
        arm = i if i < K else learner.select().arm  # type: ignore[attr-defined]
        chosen[i] = arm
        learner.update(arm, rewards[i, arm])  # type: ignore[attr-defined]
    return chosen


def play_mabwiser(policy: str, rewards: np.ndarray, seed: int) -> np.ndarray:
    from mabwiser.mab import MAB, LearningPolicy

    lp = LearningPolicy.UCB1(alpha=1.0) if policy == "ucb" else LearningPolicy.ThompsonSampling()
    mab = MAB(arms=list(range(K)), learning_policy=lp, seed=seed)
    t = rewards.shape[0]
    chosen = np.empty(t, dtype=int)
    chosen[:K] = np.arange(K)
    mab.fit(decisions=list(range(K)), rewards=[rewards[i, i] for i in range(K)])
    for i in range(K, t):
        arm = int(mab.predict())
        chosen[i] = arm
        mab.partial_fit([arm], [rewards[i, arm]])
    return chosen


def pseudo_regret(means: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    best = means.max(axis=1)
    return np.cumsum(best - means[np.arange(len(chosen)), chosen])


# --------------------------------------------------------------------------------------------
# Study
# --------------------------------------------------------------------------------------------


def study(name: str, problem: Callable[[int], tuple[np.ndarray, np.ndarray]], players: dict, runs: int) -> tuple[dict, dict]:
    curves: dict[str, list[np.ndarray]] = {p: [] for p in players}
    seconds: dict[str, float] = dict.fromkeys(players, 0.0)
    for run in range(runs):
        means, rewards = problem(run)
        for label, play in players.items():
            t0 = time.perf_counter()
            chosen = play(rewards, run)
            seconds[label] += time.perf_counter() - t0
            curves[label].append(pseudo_regret(means, chosen))
        print(f"{name}: run {run + 1}/{runs}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    out: dict = {}
    for label, runs_curves in curves.items():
        arr = np.stack(runs_curves)
        final = arr[:, -1]
        out[label] = {
            "final_mean": float(final.mean()),
            "final_se": float(final.std(ddof=1) / math.sqrt(len(final))) if len(final) > 1 else 0.0,
            "us_per_round": 1e6 * seconds[label] / (len(final) * arr.shape[1]),
            "curve_mean": arr.mean(axis=0),
            "curve_se": arr.std(axis=0, ddof=1) / math.sqrt(len(final)) if len(final) > 1 else np.zeros(arr.shape[1]),
        }
    return out, paired(curves)


def paired(curves: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """Each of our policies against each MABWiser one, run by run (the same reward table): the
    mean difference of the final regrets (negative: ours lower), its standard error, and in how
    many runs ours was lower. Pairing removes the problems' own spread from the comparison."""
    out = {}
    theirs = [label for label in curves if label.startswith("mabwiser")]
    for ours in (label for label in curves if label.startswith("ours")):
        for other in theirs:
            diff = np.array([a[-1] - b[-1] for a, b in zip(curves[ours], curves[other], strict=True)])
            out[f"{ours} - {other}"] = {
                "mean": float(diff.mean()),
                "se": float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0,
                "ours_lower": int((diff < 0).sum()),
                "runs": len(diff),
            }
    return out


def plot(results: dict[str, dict], titles: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.0))
    axes = np.atleast_1d(axes)
    for ax, (name, res) in zip(axes, results.items(), strict=True):
        for label, r in res.items():
            x = np.arange(1, len(r["curve_mean"]) + 1)
            style = "--" if label.startswith("mabwiser") else "-"
            ax.plot(x, r["curve_mean"], style, label=label, lw=1.4)
            ax.fill_between(x, r["curve_mean"] - 2 * r["curve_se"], r["curve_mean"] + 2 * r["curve_se"], alpha=0.15)
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative pseudo-regret")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=96)
    plt.close(fig)


def piecewise_players(base: dict, t: int, changes: int) -> tuple[dict, dict]:
    """``base`` plus our non-stationary policies with Garivier & Moulines' gamma and window for
    ``t`` rounds and ``changes`` change points (and their paddings); returns (players, settings)."""
    gamma = 1.0 - math.sqrt(changes / t) / 4.0
    window = int(2.0 * math.sqrt(t * math.log(t) / changes))
    players = dict(base)
    players.update({
        f"ours D-UCB (G&M, ξ = {XI}, gamma {gamma:.4f})": lambda r, s: play_ours(
            lambda: DiscountedUCB(K, gamma=gamma, alpha=DUCB_ALPHA, random_state=s), r),
        f"ours SW-UCB (G&M, ξ = {XI}, window {window})": lambda r, s: play_ours(
            lambda: SlidingWindowUCB(K, window=window, alpha=SWUCB_ALPHA, random_state=s), r),
        f"ours dts (gamma {gamma:.4f})": lambda r, s: play_ours(lambda: DiscountedThompson(K, gamma=gamma, random_state=s), r),
    })
    delta = 1.0 / math.sqrt(t)
    explore = math.sqrt(changes * math.log(t) / t)
    glr = {"sigma": GLR_SIGMA, "delta": delta, "history": GLR_HISTORY, "min_segment": GLR_MIN_SEGMENT}
    players.update({
        f"ours GLR-UCB (explore {explore:.3f})": lambda r, s: play_ours(
            lambda: GLRUCB(K, explore=explore, random_state=s, **glr), r),
        f"ours GLR Thompson (explore {explore:.3f})": lambda r, s: play_ours(
            lambda: GLRThompson(K, explore=explore, random_state=s, **glr), r),
        "ours GLR Thompson (no forced exploration)": lambda r, s: play_ours(
            lambda: GLRThompson(K, explore=0.0, random_state=s, **glr), r),
    })
    return players, {"T": t, "change_points": changes, "gamma": gamma, "window": window,
                     "glr_delta": delta, "glr_explore": explore, "glr_sigma": GLR_SIGMA, "glr_history": GLR_HISTORY,
                     "glr_min_segment": GLR_MIN_SEGMENT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per problem (default 100 for the piecewise problems, 5 with --quick)")
    parser.add_argument("--stationary-runs", type=int, default=None,
                        help="runs of each stationary problem (default: --runs if given, else 40; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="5 runs, shorter horizons (smoke run)")
    args = parser.parse_args(argv)
    for flag, value in (("--runs", args.runs), ("--stationary-runs", args.stationary_runs)):
        if value is not None and value < 2:
            parser.error(f"{flag} must be at least 2 (a standard error needs two runs)")
    runs = args.runs or (5 if args.quick else 100)
    stat_runs = args.stationary_runs or args.runs or (5 if args.quick else 40)
    t_stat = 1_000 if args.quick else 5_000
    t_pw = 2_500 if args.quick else 10_000
    segments = {"piecewise": t_pw // 5, "piecewise-fast": t_pw // 20}  # 4 and 19 change points

    stationary_players = {
        "ours ucb1": lambda r, s: play_ours(lambda: UCB1(K, alpha=1.0, random_state=s), r),
        "mabwiser ucb1": lambda r, s: play_mabwiser("ucb", r, s),
        "ours thompson (gaussian)": lambda r, s: play_ours(lambda: GaussianThompson(K, random_state=s), r),
    }
    bernoulli_players = dict(stationary_players)
    bernoulli_players["ours thompson (beta)"] = lambda r, s: play_ours(lambda: BetaThompson(K, random_state=s), r)
    bernoulli_players["mabwiser thompson (beta)"] = lambda r, s: play_mabwiser("ts", r, s)

    studied = {
        "bernoulli": study("bernoulli", lambda s: bernoulli_problem(t_stat, 1000 + s), bernoulli_players, stat_runs),
        "gaussian": study("gaussian", lambda s: gaussian_problem(t_stat, 2000 + s), stationary_players, stat_runs),
    }
    titles = {
        "bernoulli": f"stationary Bernoulli, K={K}, T={t_stat}, {stat_runs} runs",
        "gaussian": f"stationary Gaussian (sd 1), K={K}, T={t_stat}, {stat_runs} runs",
    }
    settings: dict = {"runs_piecewise": runs, "runs_stationary": stat_runs, "T_stationary": t_stat, "xi": XI,
                      "reward_bound": REWARD_BOUND, "ducb_alpha": DUCB_ALPHA, "swucb_alpha": SWUCB_ALPHA}
    for offset, (name, seg) in enumerate(segments.items()):
        changes = t_pw // seg - 1
        players, problem_settings = piecewise_players(bernoulli_players, t_pw, changes)
        seed0 = 3000 + 1000 * offset  # piecewise 3000 + run (as before), piecewise-fast 4000 + run
        studied[name] = study(name, lambda s, seg=seg, seed0=seed0: bernoulli_problem(t_pw, seed0 + s, seg),
                              players, runs)
        titles[name] = f"piecewise Bernoulli, {changes} change points (every {seg} rounds)\nT={t_pw}, {runs} runs"
        settings[name] = {**problem_settings, "segment": seg}
    results = {name: res for name, (res, _) in studied.items()}
    suffix = "_quick" if args.quick else ""
    plot({k: results[k] for k in ("bernoulli", "gaussian")}, titles, IMG / f"meta_regret_stationary{suffix}.png")
    for name in segments:
        plot({name: results[name]}, titles, IMG / f"meta_regret_{name.replace('-', '_')}{suffix}.png")
    table = {
        name: {label: {k: round(v, 2) for k, v in r.items() if not k.startswith("curve")} for label, r in res.items()}
        for name, res in results.items()
    }
    table["paired"] = {name: pairs for name, (_, pairs) in studied.items()}
    table["settings"] = settings
    write_text_atomic(IMG / f"meta_regret{suffix}.json", json.dumps(table, indent=2))
    for name in results:
        print(f"\n{titles[name]}\n| policy | regret at T (mean ± se) | µs/round |\n|---|---|---|")
        for label, r in table[name].items():
            print(f"| {label} | {r['final_mean']:.1f} ± {r['final_se']:.1f} | {r['us_per_round']:.1f} |")
        print(f"\n{name}, paired by run (ours − MABWiser; negative: ours lower)\n"
              "| comparison | mean ± se | runs ours lower |\n|---|---|---|")
        for label, d in table["paired"][name].items():
            print(f"| {label} | {d['mean']:+.1f} ± {d['se']:.1f} | {d['ours_lower']} of {d['runs']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
