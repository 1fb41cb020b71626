"""The ``ensemble-trader`` command.

Each module in this package that defines ``register(subparsers)`` adds its sub-commands; a
sub-command sets ``func`` (taking the parsed namespace, returning an exit code). Modules import
their heavy dependencies inside ``func`` so ``ensemble-trader --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ensemble_trader import __version__
from ensemble_trader.domain.errors import EnsembleTraderError


def at_least(minimum: float, kind: type[int] | type[float] = int) -> Callable[[str], float]:
    """An argparse ``type``: a finite ``kind`` (int or float) >= ``minimum``, else a usage error
    that names the argument and the value."""

    noun = "an integer" if kind is int else "a finite number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not (math.isfinite(value) and value >= minimum):
            raise argparse.ArgumentTypeError(f"{text!r} must be {noun} >= {minimum}")
        return value

    return parse


def seed(text: str) -> int:
    """An argparse ``type``: a random seed numpy accepts (an integer in [0, 2**32))."""
    value = at_least(0)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer below 2**32")
    return int(value)


IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def image_path(text: str) -> Path:
    """An argparse ``type``: a file name matplotlib can write, checked before any work is done."""
    path = Path(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: an image file ends in {', '.join(IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not an image file")
    return path


def iso_time(text: str) -> str:
    """An argparse ``type``: an ISO-8601 date or time as the backtest and evaluation windows read it
    (:func:`~ensemble_trader.domain.bars.parse_datetime64`: the rules of a bar's timestamp, UTC
    when it names no offset); returned unchanged."""
    from ensemble_trader.domain.bars import parse_datetime64
    from ensemble_trader.domain.errors import DataError

    try:
        parse_datetime64(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class WindowBound(argparse.Action):
    """The ``action`` of ``--start`` and ``--end`` (``type=iso_time``) of a window [start, end):
    once both are given, a start at or after the end is a usage error naming both — such a
    window holds no bar, and the run would otherwise fail later with "fewer than two warm bars"
    and a span that hides which bound was wrong."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from ensemble_trader.domain.bars import parse_datetime64

        setattr(namespace, self.dest, values)
        start, end = getattr(namespace, "start", None), getattr(namespace, "end", None)
        if start is not None and end is not None and parse_datetime64(start) >= parse_datetime64(end):
            parser.error(f"--start {start} is not before --end {end}: the window [start, end) holds no bar")


def output_folder(text: str) -> Path:
    """An argparse ``type``: a folder to write into, which may not exist yet but must not be an
    existing file (checked before the command does any work)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file, not a folder")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ensemble-trader",
        description="Multi-agent ensemble trading: data, features, regimes, agents, backtests, local stack.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except EnsembleTraderError as exc:
        print(f"ensemble-trader: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a missing input, an output that is a folder, no permission, ...
        print(f"ensemble-trader: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
