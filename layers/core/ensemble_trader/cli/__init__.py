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
import re
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


_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain_help(doc: str | None) -> str:
    """A module docstring as a command's ``--help`` description: Sphinx markup turned to text
    (``x`` and :func:`~a.b.c` read ``x`` and ``c``, :class:`a.B` reads ``a.B``)."""
    if not doc:
        return ""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), doc)
    return text.replace("``", "")


def seed(text: str) -> int:
    """An argparse ``type``: a random seed numpy accepts (an integer in [0, 2**32))."""
    value = at_least(0)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer below 2**32")
    return int(value)


def symbol(text: str) -> str:
    """An argparse ``type``: a ticker as every message takes it (``SYMBOL_PATTERN``: upper case,
    digits and ``. - / = _ ^``, at most 24 characters), else a usage error naming the value, with
    the upper-case spelling when that is valid (``'drn'``: did you mean DRN?)."""
    from ensemble_trader.domain.models import SYMBOL_PATTERN

    if re.fullmatch(SYMBOL_PATTERN, text) is not None:
        return text
    upper = text.upper()
    hint = f"; did you mean {upper}?" if re.fullmatch(SYMBOL_PATTERN, upper) is not None else ""
    raise argparse.ArgumentTypeError(f"{text!r} is not a valid symbol (an upper-case ticker, pattern "
                                     f"{SYMBOL_PATTERN}){hint}")


IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def image_path(text: str) -> Path:
    """An argparse ``type``: a file name matplotlib can write, checked before any work is done."""
    path = Path(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: an image file ends in {', '.join(IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not an image file")
    _writable(path, text)
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
    """The ``action`` of ``--start`` and ``--end`` (``type=iso_time``) of a window [start, end).

    It only stores the value (a repeated option: the last one wins, as for any argparse option).
    The parser checks the window once every argument is read (:class:`Parser`,
    :func:`check_window`): a start at or after the end is a usage error naming both — such a
    window holds no bar, and the run would otherwise fail later with "fewer than two warm bars"
    and a span that hides which bound was wrong."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)


def check_window(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
    """If ``parser`` has ``--start`` and ``--end`` options of :class:`WindowBound` and both were
    given, refuse (``parser.error``: usage, exit 2) a start that is not before the end."""
    from ensemble_trader.domain.bars import parse_datetime64

    dests = {a.dest for a in parser._actions if isinstance(a, WindowBound)}
    if not {"start", "end"} <= dests:
        return
    start, end = getattr(namespace, "start", None), getattr(namespace, "end", None)
    if start is not None and end is not None and parse_datetime64(start) >= parse_datetime64(end):
        parser.error(f"--start {start} is not before --end {end}: the window [start, end) holds no bar")


class Parser(argparse.ArgumentParser):
    """The command's parser (its sub-command parsers are of this class too): checks that run once
    all of a (sub-)command's arguments are read, whatever their order or repetition
    (:func:`check_window`)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        namespace, extras = super().parse_known_args(args, namespace)
        check_window(self, namespace)
        return namespace, extras


def _writable(path: Path, text: str) -> None:
    """Raise ArgumentTypeError unless ``path`` (a file or folder, existing or not) could be written:
    its nearest existing folder must take a new file (probed with a nameless temporary file, so
    read-only mounts, /proc and missing permissions are caught even for root)."""
    import tempfile

    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {folder} ({exc.strerror or exc})") from None


def output_folder(text: str) -> Path:
    """An argparse ``type``: a folder to write into, which may not exist yet but must not be an
    existing file, and must be writable (checked before the command does any work)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file, not a folder")
    _writable(path, text)
    return path


def output_file(text: str) -> Path:
    """An argparse ``type``: a file to write, which may exist (it is replaced) but must not be a
    folder, in a place that can be written (checked before the command does any work)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    _writable(path, text)
    return path


def existing_folder(text: str) -> Path:
    """An argparse ``type``: a folder that must exist (a model set, a regime model)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return path


def basis_points(text: str) -> float:
    """An argparse ``type``: a cost in basis points, a finite number >= 0."""
    return at_least(0.0, float)(text)


def symbol_file_stem(symbol: str) -> str:
    """A file or folder name for a symbol: ``^`` dropped, every character but letters, digits,
    ``.``, ``_`` and ``-`` made ``_`` (``BTC/USD`` -> ``BTC_USD``, ``B/../../ESC`` ->
    ``B_.._.._ESC``), never ``.``/``..``/empty: it stays inside the output folder."""
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]", "_", symbol.replace("^", ""))
    return stem if stem.strip(".") else f"_{stem}"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    """Run one command; return its exit code.

    Errors the user can act on (:class:`EnsembleTraderError`, :class:`OSError`, and botocore's
    refusal of the AWS configuration: a profile that does not exist) are one line on stderr and
    exit 1; bad arguments are argparse's usage error, exit 2. Ctrl-C, also while the
    parser imports the commands, prints ``ensemble-trader: interrupted`` and exits 130 (128 +
    SIGINT), without a traceback. A closed stdout (``ensemble-trader data show ... | head -1``)
    is not an error: the rest of the output is discarded quietly (stdout is pointed at
    /dev/null so the interpreter's final flush does not complain, as the Python documentation on
    SIGPIPE advises) and the exit code is 141 (128 + SIGPIPE), what a shell reports for a
    command a closed pipe stops, e.g. ``yes | head -1``.
    """
    return run_main(build_parser, argv, prog="ensemble-trader")


def run_main(make_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None,
             prog: str = "ensemble-trader") -> int:
    """:func:`main` for any parser whose parsed namespace has ``func`` (and may have
    ``verbose``): the same error, interrupt and broken-pipe handling (also used by the
    ``python -m training....`` entry points)."""
    try:
        parser = make_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the sub-command's parser, with its usage (not the top level's)
            _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
        logging.basicConfig(
            level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 2
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return 141
    except (EnsembleTraderError, OSError) as exc:  # a missing input, an output that is a folder, ...
        print(f"{prog}: error: {exc}{_local_stack_hint(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        # botocore's refusal of the AWS configuration (a profile AWS_PROFILE names that the config
        # file lacks, a config file it cannot parse) from a path outside the AWS clients, which
        # translate it themselves; botocore's exceptions can only come from a process that
        # imported it, so it is not imported for the check
        if "botocore.exceptions" not in sys.modules:
            raise
        from ensemble_trader.adapters.aws.clients import CONFIGURATION_ERRORS, configuration_error

        if not isinstance(exc, CONFIGURATION_ERRORS):
            raise
        print(f"{prog}: error: {configuration_error(exc)}", file=sys.stderr)
        return 1


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the sub-command ``args`` chose (``data synth``'s for ``data synth ...``),
    following each level's sub-command choice; ``parser`` itself without one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen_parser(chosen, args)
    return parser


def _local_stack_hint(exc: BaseException) -> str:
    """A hint for an error caused by a refused connection while ``ET_AWS_ENDPOINT_URL`` is set
    (a shell holding a local stack's exports after ``local down``, or before ``local up``):
    nothing answers at the stack's endpoints, so say how to check it. Else ""."""
    import os

    if not os.environ.get("ET_AWS_ENDPOINT_URL"):
        return ""
    refused = ("EndpointConnectionError", "ConnectionRefusedError", "ConnectionError")
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # the error and what it was raised from
        seen.add(id(cause))
        if type(cause).__name__ in refused or "Connection refused" in str(cause):
            return " (nothing answers there: is the local stack up? `ensemble-trader local status`)"
        cause = cause.__cause__ or cause.__context__
    return ""


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe goes nowhere."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured, replaced): nothing to do
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
