"""``ensemble-trader train agents``: the agents' training job, run locally (same code as SageMaker)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _default_data() -> str:
    """The default data sets, as ``training.agents.train`` chooses them (:func:`default_bars`):
    :data:`DEFAULT_BARS`, plus the shared BTC-USD hourly bars where the shared data folder holds
    them; the help said four data sets where the development machine trains on five."""
    from ensemble_trader.marketdata import SHARED_DATA_ENV
    from training.agents.train import DEFAULT_BARS, QUICK_BARS, SHARED_BTC, default_bars

    here = "included here" if f"shared:{SHARED_BTC}" in default_bars() else "not found here"
    return (f"Default data: {', '.join(DEFAULT_BARS)}, plus shared:{SHARED_BTC} where the shared data folder "
            f"(${SHARED_DATA_ENV}, else ../shared/data beside the repository) holds {SHARED_BTC}.csv ({here}); "
            f"--quick: {', '.join(QUICK_BARS)}.")


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import seed

    p = sub.add_parser("train", help="offline training jobs (needs the train extra)")
    train_sub = p.add_subparsers(dest="target", metavar="TARGET")
    agents = train_sub.add_parser(
        "agents",
        help="train the four RL agents with PPO, export them to ONNX and write a model set",
        description=(
            "Walk-forward in calendar time: the real series that begins first is split by time into "
            "train (70%), validation (10%) and test (20%) windows and every other real series at the "
            "same dates (synthetic series at their own fractions); checkpoints are selected on "
            "validation only and the exported set is measured on test. " + _default_data()
        ),
    )
    agents.add_argument("--bars", nargs="+", default=None, metavar="SPEC",
                        help="data specs: arch:sp500, arch:nasdaq, shared:<name>, synth:<scenario>[:<seed>[:<bars>[:<symbol>]]], "
                             "CSV (default: the default data above)")
    agents.add_argument("--validation-bars", nargs="+", default=None, metavar="SPEC",
                        help="separate validation data (the --bars series are then used whole for training)")
    agents.add_argument("--out", type=Path, default=None,
                        help="model set folder (default: the committed layers/models/agents; required with --quick)")
    agents.add_argument("--quick", action="store_true",
                        help="tiny budget (< 60 s), for tests and smoke runs; needs --out (never the committed set)")
    agents.add_argument("--seed", type=seed, default=None, help="random seed (default 7)")
    agents.add_argument("--timesteps", type=int, default=None, help="PPO timesteps per agent")
    agents.add_argument("--agents", nargs="+", default=None, help="train only these agents")
    agents.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                        help="any other hyperparameter of training.agents.train.TrainConfig (repeatable)")
    agents.add_argument("--no-progress", action="store_true", help="no progress bars")
    agents.set_defaults(func=_train_agents)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _train_agents(args: argparse.Namespace) -> int:
    import sys

    from ensemble_trader.domain.agents import default_models_dir
    from ensemble_trader.runtime.settings import PACKAGE_DIR

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pydantic import ValidationError

    from ensemble_trader.domain.errors import DataError

    try:
        from training.agents.train import TrainConfig, run_job
        from training.sagemaker import validation_problems
    except ImportError as exc:
        raise DataError(f"training needs the train extra (torch, stable-baselines3, gymnasium): {exc}") from exc

    params: dict[str, object] = {}
    for item in args.hp:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"--hp {item!r}: expected KEY=VALUE")
        params[key.strip()] = value
    for key, value in (("bars", args.bars), ("validation_bars", args.validation_bars), ("agents", args.agents),
                       ("seed", args.seed), ("total_timesteps", args.timesteps)):
        if value is not None:
            params[key] = value
    if args.quick:  # --hp quick=true counts as well: it is not overwritten by the flag's absence
        params["quick"] = True
    try:
        config = TrainConfig.model_validate(params)
    except ValidationError as exc:
        # the form of the SageMaker jobs' failure reasons: each field with its value, in one line
        raise DataError(validation_problems(exc, "bad training parameters", known=TrainConfig.model_fields)) from None
    # the settings' folder ($ET_MODELS_DIR/agents) and the repository's committed one, whichever is the
    # default; checked on the resolved configuration (--quick or --hp quick=true), before any data is read
    committed = (default_models_dir(), PACKAGE_DIR.parents[1] / "models" / "agents")
    hit = next((c for c in committed if args.out is None or _same_folder(args.out, c)), None) if config.quick else None
    if hit is not None:
        # a smoke-run set (seconds of PPO) would replace the committed agents every stage serves
        how = "--quick" if args.quick else "quick=true"
        print(f"ensemble-trader: error: {how} trains a smoke-test set, which must not replace the committed "
              f"model set in {hit}: pass --out DIR (e.g. --out runs/agents)", file=sys.stderr)
        return 2
    out = args.out or default_models_dir()
    manifest = run_job(config, out, progress=not args.no_progress)
    summary = {
        "version": manifest["version"],
        "out": str(out),
        "seconds": manifest["training"]["seconds_total"],
        "validation": {a: e["validation"]["score"] for a, e in manifest["agents"].items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name one folder (resolved: a relative path, a symlink, ``..``)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False

