"""Finding and loading the real Lambda handlers of the checkout (``functions/<logical>/``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ensemble_trader import constants
from ensemble_trader.domain.errors import EnsembleTraderError


def repo_root() -> Path:
    """The checkout's root: ``layers/core/ensemble_trader/local/functions.py`` is four levels down."""
    return Path(__file__).resolve().parents[4]


def functions_dir() -> Path:
    return repo_root() / "functions"


def handler_path(logical: str, entry_module: str = "handler") -> Path:
    return functions_dir() / logical / f"{entry_module}.py"


def deployed_functions() -> list[constants.FunctionSpec]:
    """The ``constants.FUNCTIONS`` whose ``functions/<logical>/handler.py`` exists, in pipeline order."""
    return [spec for spec in constants.FUNCTIONS if handler_path(spec.logical).is_file()]


_loaded: dict[tuple[str, str], ModuleType] = {}


def load_module(logical: str, entry_module: str = "handler", *, fresh: bool = False) -> ModuleType:
    """Import ``functions/<logical>/<entry_module>.py`` under a unique module name.

    A module is loaded once per process (one warm container) unless ``fresh`` (a cold start).
    The function's folder is importable while it loads, as the Lambda code root is.
    """
    cache_key = (logical, entry_module)
    if not fresh and cache_key in _loaded:
        return _loaded[cache_key]
    path = handler_path(logical, entry_module)
    if not path.is_file():
        raise EnsembleTraderError(f"no handler file {path.relative_to(repo_root())}")
    name = f"_et_function_{logical}_{entry_module}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EnsembleTraderError(f"cannot import {path.relative_to(repo_root())}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(folder)
    _loaded[cache_key] = module
    return module


def load_handler(logical: str, entry: str = "lambda_handler", *, module: str = "handler", fresh: bool = False):
    """The handler callable ``entry`` of ``functions/<logical>/<module>.py``."""
    loaded = load_module(logical, module, fresh=fresh)
    handler = getattr(loaded, entry, None)
    if not callable(handler):
        raise EnsembleTraderError(f"functions/{logical}/{module}.py defines no callable {entry!r}")
    return handler


def forget_loaded() -> None:
    """Drop every loaded handler module (the next load is a cold start)."""
    for logical, entry_module in list(_loaded):
        sys.modules.pop(f"_et_function_{logical}_{entry_module}", None)
    _loaded.clear()
