"""``ensemble-trader regime``: fit, label, evaluate and validate the regime detector.

A stable contract other tools rely on:

* ``regime fit --bars TRAIN.csv|SPEC --out MODEL_DIR [--seed N] [--states K[,K...]]``
* ``regime label --model MODEL_DIR --bars TEST.csv --out LABELS.csv`` — header
  ``timestamp,regime,confidence,p_bull,p_bear,p_sideways,p_volatile,ready``, one row per input
  bar, causal (each row uses only the bars up to and including its own); ``ready`` is ``false``
  on the feature warm-up bars, whose row is the filter's start distribution, not a detection;
* ``regime evaluate [--scenarios ...] [--seeds ...] [--json] [--out DIR]`` — the validation
  tables on synthetic bars (ours vs hmmlearn vs true-parameter vs jumpmodels), by default on the
  held-out seeds 20-39;
* ``regime history [--out DIR]`` — historical validation on S&P 500 (and BTC when present),
  with plots;
* ``regime publish --model MODEL_DIR [--symbol SYMBOL]`` — put a fitted model in the registry
  of the model bucket (``ET_MODEL_BUCKET``, a stage's ``ModelBucket`` output; the local stack's
  with its exports) and pin it, for every symbol or for one: regime Lambda containers started
  afterwards serve it.

``--model`` defaults to the committed model (``layers/models/regime``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LABEL_HEADER = ("timestamp", "regime", "confidence", "p_bull", "p_bear", "p_sideways", "p_volatile", "ready")
"""``ready`` comes last so the first two columns stay ``timestamp,regime`` (a truth file for
``evaluate agents --truth`` once cut to them) and the probabilities keep their positions."""


def default_model_dir() -> Path:
    from ensemble_trader.runtime.settings import get_settings

    return get_settings().models_dir / "regime"


def _state_counts(text: str) -> list[int]:
    """``--states 4,5,6``: comma-separated numbers of hidden states, each >= 4 (four regimes)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of state counts >= 4 (e.g. 4,5,6)")
    return counts


def _training_seed() -> int:
    """The seed of `regime evaluate`'s training runs (TRAIN_SEED_OFFSET + EvalConfig.random_state,
    which the command does not change)."""
    from training.regime.evaluate import TRAIN_SEED_OFFSET, EvalConfig

    return TRAIN_SEED_OFFSET + EvalConfig().random_state


def _test_seed(text: str) -> int:
    """``regime evaluate --seeds``: a seed numpy accepts, other than the training runs' seed (a
    test run of that seed would replay the training run's regime path)."""
    from ensemble_trader.cli import seed

    value = seed(text)
    if value == _training_seed():
        raise argparse.ArgumentTypeError(
            f"{text!r} is the seed of the training runs: the same seed gives the same regime path, so the "
            "test would replay the training data; choose another test seed"
        )
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import (
        WindowBound,
        at_least,
        existing_folder,
        image_path,
        iso_time,
        output_file,
        output_folder,
        seed,
    )
    from ensemble_trader.domain.features import WARMUP_BARS
    from ensemble_trader.domain.regime_fit import MIN_ROWS_PER_STATE
    from training.regime.estimator import DEFAULT_RESTARTS
    from training.regime.evaluate import METHODS as EVAL_METHODS
    from training.regime.evaluate import min_test_bars, min_train_bars

    p = sub.add_parser("regime", help="regime detection: fit, label, evaluate, history")
    rsub = p.add_subparsers(dest="regime_command", metavar="ACTION", required=True)

    fit = rsub.add_parser("fit", help="fit the regime HMM on bars and write a model artifact")
    fit.add_argument("--bars", required=True, help="bars CSV or data spec (arch:sp500, synth:realistic:1:5000, ...)")
    fit.add_argument("--out", type=output_folder, required=True, help="model folder to write")
    fit.add_argument("--seed", type=seed, default=0, help="random_state of the EM restarts")
    fit.add_argument("--states", type=_state_counts, default=[4, 5, 6], help="number(s) of hidden states, BIC picks (default 4,5,6)")
    fit.add_argument("--restarts", type=at_least(1), default=DEFAULT_RESTARTS,
                     help=f"EM restarts per state count (default {DEFAULT_RESTARTS})")
    fit.add_argument("--covariance", choices=("full", "diag"), default="full")
    fit.add_argument("--jobs", type=_jobs, default=-1,
                     help="worker processes for the EM restarts (default -1: every usable core; the model is the same)")
    fit.add_argument("--start", type=iso_time, action=WindowBound, help="first bar time to train on (ISO date)")
    fit.add_argument("--end", type=iso_time, action=WindowBound, help="train on bars before this time (ISO date)")
    fit.set_defaults(func=_fit)

    label = rsub.add_parser("label", help="label bars causally with a regime model")
    label.add_argument("--model", type=existing_folder, default=None, help="model folder (default: the committed model)")
    label.add_argument("--bars", required=True, help="bars CSV (one symbol) or data spec")
    label.add_argument("--out", type=output_file, required=True, help="labels CSV to write")
    _rule_arguments(label)
    label.set_defaults(func=_label)

    ev = rsub.add_parser("evaluate", help="validation tables on synthetic bars with known regimes")
    ev.add_argument("--scenarios", nargs="+", default=None, help="generator presets (default: all four)")
    ev.add_argument("--seeds", nargs="+", type=_test_seed, default=None,
                    help=f"test seeds, each once (default the held-out 20-39; 0 1 2 tuned the rule; not "
                         f"{_training_seed()}, the training runs' seed)")
    ev.add_argument("--bars", type=at_least(min_test_bars()), default=3000,
                    help=f"test bars per seed (at least {min_test_bars()}: the features need {WARMUP_BARS} bars, the first "
                         f"{WARMUP_BARS - 1} give no feature row)")
    ev.add_argument("--train-bars", type=at_least(min_train_bars()), default=6000,
                    help=f"bars of the training run (at least {min_train_bars()} for every method: the first "
                         f"{WARMUP_BARS - 1} give no feature row, then {MIN_ROWS_PER_STATE} rows per state of our fit's largest K)")
    ev.add_argument("--methods", nargs="+", choices=EVAL_METHODS, default=None, metavar="METHOD",
                    help=f"detectors to compare, among {' '.join(EVAL_METHODS)} (default: all)")
    ev.add_argument("--restarts", type=at_least(1), default=3, help="EM restarts per state count of our fit (default 3)")
    ev.add_argument("--json", action="store_true", help="print the per-seed rows and summary as JSON")
    ev.add_argument("--out", type=output_folder, help="folder for regime_eval.json and regime_eval.md")
    ev.add_argument("--plot", type=image_path, help="also write a PNG of truth vs labels on one realistic run here")
    _rule_arguments(ev)
    ev.set_defaults(func=_evaluate)

    hist = rsub.add_parser("history", help="historical validation on S&P 500 (and BTC) with plots")
    hist.add_argument("--model", default=None, help="model folder for S&P 500 (default: the committed model)")
    hist.add_argument("--out", default="docs/img", help="folder for the plots (default docs/img)")
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(func=_history)

    pub = rsub.add_parser("publish", help="put a fitted model in the model bucket's registry and pin it")
    pub.add_argument("--model", required=True, help="model folder (from regime fit)")
    pub.add_argument("--symbol", default=None, help="pin it for this symbol only (default: for every symbol)")
    pub.set_defaults(func=_publish)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of processes >= 1, or -1 for every usable core")
    return value


def _rule_arguments(p: argparse.ArgumentParser) -> None:
    from ensemble_trader.domain.regime import TransitionRule

    d = TransitionRule()
    p.add_argument("--margin", type=float, default=d.margin, help=f"hysteresis margin (default {d.margin})")
    p.add_argument("--confirm", type=int, default=d.confirm_bars, help=f"bars to confirm a switch (default {d.confirm_bars})")
    p.add_argument("--dwell", type=int, default=d.min_dwell, help=f"minimum bars in a regime (default {d.min_dwell})")


def _rule(args: argparse.Namespace):
    from ensemble_trader.domain.regime import TransitionRule

    try:
        return TransitionRule(args.margin, args.confirm, args.dwell)
    except ValueError as exc:
        from ensemble_trader.domain.errors import DataError

        raise DataError(f"transition rule: {exc}") from None


def _fit(args: argparse.Namespace) -> int:
    from ensemble_trader.marketdata import load_bars
    from training.regime.train import fit_model

    series = load_bars(args.bars)
    try:
        estimator, model = fit_model(
            series,
            seed=args.seed,
            states=args.states,
            covariance_type=args.covariance,
            restarts=args.restarts,
            start=args.start,
            end=args.end,
            progress=sys.stderr.isatty(),
            data=[args.bars],
            jobs=args.jobs,
        )
    except ValueError as exc:
        print(f"ensemble-trader: error: {exc}", file=sys.stderr)
        return 1
    model.save(args.out)
    print(
        f"regime model {model.version}: {model.n_states} states "
        f"({', '.join(r.value for r in model.state_regimes)}), BIC {estimator.bic_:.1f}, "
        f"{estimator.n_samples_} bars -> {args.out}"
    )
    return 0


def _label(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.models import REGIMES
    from ensemble_trader.domain.regime import RegimeDetector, RegimeModel, label_series
    from ensemble_trader.marketdata import _format_timestamps as format_timestamps
    from ensemble_trader.marketdata import atomic_writer, load_bars

    model = RegimeModel.load(args.model or default_model_dir())
    series = load_bars(args.bars)
    if len(series) != 1:
        raise DataError(f"{args.bars}: holds {len(series)} symbols; regime label takes one symbol per file")
    bars = series[0]
    labels = label_series(RegimeDetector(model, _rule(args)), bars)
    out = Path(args.out)
    stamps = format_timestamps(bars.timestamp)  # as the bars CSV writes them: sub-second bars keep their microseconds
    with atomic_writer(out, newline="") as fh:  # a failure leaves the old file (or none), never half of one
        writer = csv.writer(fh)
        writer.writerow(LABEL_HEADER)
        for i in range(len(bars)):
            p = labels.probabilities[i]
            writer.writerow(
                [
                    stamps[i],
                    REGIMES[labels.regime[i]].value,
                    f"{labels.confidence[i]:.6f}",
                    *(f"{x:.6f}" for x in p),
                    "true" if labels.observed[i] else "false",
                ]
            )
    detected = labels.regime[labels.observed]  # warm-up rows are the start distribution: no detection
    warmup = len(bars) - len(detected)
    if len(detected):
        counts = np.bincount(detected, minlength=4)
        shares = ", ".join(f"{r.value} {c / len(detected):.0%}" for r, c in zip(REGIMES, counts, strict=True))
        summary = f"{shares} of the {len(detected)} detected; {warmup} warm-up bars not detections"
    else:
        summary = f"no detection: all {warmup} bars are feature warm-up"
    print(f"{len(bars)} bars labelled with model {model.version} -> {out} ({summary})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.regime.evaluate import (
        DEFAULT_SCENARIOS,
        DEFAULT_SEEDS,
        METHODS,
        EvalConfig,
        evaluate,
        markdown_table,
        summarize,
    )

    for flag, values in (("--seeds", args.seeds), ("--scenarios", args.scenarios)):
        repeated = sorted({v for v in values or () if list(values).count(v) > 1}, key=str)
        if repeated:  # each would count twice in every mean of the summary
            print(f"ensemble-trader: error: argument {flag}: {', '.join(map(str, repeated))} named more than once; "
                  "every run counts once in the means, so name each once", file=sys.stderr)
            return 2
    cfg = EvalConfig(
        scenarios=tuple(args.scenarios or DEFAULT_SCENARIOS),
        seeds=tuple(args.seeds if args.seeds is not None else DEFAULT_SEEDS),
        n_bars=args.bars,
        train_bars=args.train_bars,
        rule=_rule(args),
        methods=tuple(args.methods or METHODS),
        n_restarts=args.restarts,
    )
    rows = evaluate(cfg, progress=not args.json and sys.stderr.isatty())
    summary = summarize(rows)
    table = markdown_table(summary)
    from ensemble_trader.backtest.report import json_text  # NaN as null: strict JSON has no NaN

    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        from ensemble_trader.marketdata import write_text_atomic

        write_text_atomic(folder / "regime_eval.json", json_text({"rows": rows, "summary": summary}, indent=1))
        write_text_atomic(folder / "regime_eval.md", table + "\n")
    if args.plot:
        from training.regime.evaluate import plot_example

        plot_example(Path(args.plot), cfg=cfg)
    if args.json:
        print(json_text({"rule": cfg.rule.as_dict(), "rows": rows, "summary": summary}, indent=1))
    else:
        print(table)
    return 0


def _history(args: argparse.Namespace) -> int:
    from training.regime.historical import run_history

    # the BTC fit runs minutes: its progress bar on a terminal (stderr; stdout keeps the tables or JSON)
    result = run_history(model_dir=args.model or default_model_dir(), out=Path(args.out), progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(result["text"])
    return 0


def _publish(args: argparse.Namespace) -> int:
    from ensemble_trader.adapters.aws.s3 import S3ModelStore
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.features import FEATURE_NAMES
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.runtime import regime_registry as registry
    from ensemble_trader.runtime.settings import get_settings

    model = RegimeModel.load(Path(args.model))
    unknown = sorted(set(model.feature_names) - set(FEATURE_NAMES))
    if unknown:
        raise DataError(f"{args.model}: the model reads features the feature stage does not produce: {unknown}")
    store = S3ModelStore(settings=get_settings())
    previous = registry.pinned_version(store, args.symbol)
    registry.publish(store, model, previous=previous, symbol=args.symbol)
    target = f"symbol {args.symbol}" if args.symbol else "every symbol without its own model"
    print(f"regime model {model.version} pinned for {target} at {registry.pointer_key(args.symbol)} "
          f"(previous: {previous or 'none'})")
    return 0
