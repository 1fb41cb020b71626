"""Reproducible build of the three Lambda layers, without Docker.

``build/layers/deps``  third-party run-time packages of every function (``layers/requirements-lambda.txt``),
                       installed by pip for Lambda's platform (CPython 3.14, manylinux aarch64)
                       into ``python/``; Lambda puts ``/opt/python`` on ``sys.path``.
``build/layers/broker`` the live broker client (alpaca-py and its pandas/requests stack,
                       ``layers/requirements-broker.txt``), attached to the orders functions only.
``build/layers/core``  the ``ensemble_trader`` package under ``python/`` and the committed model
                       artifacts (``layers/models``) under ``models/``, which Lambda mounts at
                       ``/opt/models`` (the default of ``Settings.models_dir``).

Every tree is deterministic: files are copied in sorted order, caches, tests and packaging
records are stripped and every mtime is set to the same instant, so an unchanged source yields
the same CDK asset hash and ``cdk deploy`` uploads nothing new. A layer's pip step is skipped
when its pinned requirements (and the pip options) have not changed since the last build.

Usage::

    python layers/build.py            # build every layer (pip only when the pins changed)
    python layers/build.py --force    # reinstall the dependency layers even if up to date
    python layers/build.py --core-only
    python layers/build.py --lock     # re-pin: rewrite the hashes of the requirements files
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS_SRC = ROOT / "layers"
REQUIREMENTS = LAYERS_SRC / "requirements-lambda.txt"
DEPENDENCY_LAYERS = {
    "deps": REQUIREMENTS,
    "broker": LAYERS_SRC / "requirements-broker.txt",
}
CORE_PACKAGE = LAYERS_SRC / "core" / "ensemble_trader"
MODELS = LAYERS_SRC / "models"
DEFAULT_OUT = ROOT / "build" / "layers"

PYTHON_VERSION = "3.14"
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
PIP_TARGET_OPTIONS = (
    "--only-binary=:all:",
    "--implementation",
    "cp",
    "--python-version",
    PYTHON_VERSION,
    *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
)

FIXED_MTIME = 315_532_800  # 1980-01-01T00:00:00Z, the earliest time a zip archive can hold
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024

JUNK_DIRS = frozenset({"__pycache__", "tests", "test", ".pytest_cache", ".hypothesis"})
JUNK_SUFFIXES = (".pyc", ".pyo")
# Inside *.dist-info only METADATA is kept (importlib.metadata.version() needs it); RECORD holds
# install-time hashes, INSTALLER/REQUESTED/direct_url.json describe this machine, not the package.
DIST_INFO_KEEP = frozenset({"METADATA"})


class LayerBuildError(RuntimeError):
    """A layer could not be built (pip failed, a source folder is missing, a pin is malformed)."""


# --------------------------------------------------------------------------------------------
# Helpers shared with the tests
# --------------------------------------------------------------------------------------------


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``, in a stable (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def tree_digest(root: Path) -> str:
    """SHA-256 over relative paths and contents: equal digests mean identical layer contents."""
    digest = hashlib.sha256()
    for path in iter_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def tree_size(root: Path) -> int:
    """Unzipped size in bytes of everything under ``root`` (what counts toward Lambda's limit)."""
    return sum(path.stat().st_size for path in iter_files(root))


def requirements_fingerprint(requirements: Path = REQUIREMENTS) -> str:
    """Identifies one dependency install: the pins file and the pip options that target Lambda."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(" ".join(PIP_TARGET_OPTIONS).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _is_junk(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    if any(part in JUNK_DIRS for part in parts[:-1]) or path.name.endswith(JUNK_SUFFIXES):
        return True
    parent = path.parent.name
    return parent.endswith(".dist-info") and path.name not in DIST_INFO_KEEP


def strip_and_normalise(root: Path) -> None:
    """Remove caches, tests and packaging records; set one mtime on every file and folder."""
    for dirpath, dirnames, _ in os.walk(root, topdown=True):
        for name in list(dirnames):
            if name in JUNK_DIRS:
                shutil.rmtree(Path(dirpath) / name)
                dirnames.remove(name)
    for path in list(iter_files(root)):
        if _is_junk(path, root):
            path.unlink()
    for path in [*iter_files(root), *(p for p in root.rglob("*") if p.is_dir()), root]:
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


def _copy_tree(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise LayerBuildError(f"source folder {src.relative_to(ROOT)} does not exist")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*JUNK_DIRS, *(f"*{s}" for s in JUNK_SUFFIXES)))


def build_core(out: Path = DEFAULT_OUT) -> Path:
    """(Re)build ``out/core`` from the package sources and the committed models; returns it."""
    core = out / "core"
    staging = out / ".core-staging"
    shutil.rmtree(staging, ignore_errors=True)
    _copy_tree(CORE_PACKAGE, staging / "python" / "ensemble_trader")
    if MODELS.is_dir():
        _copy_tree(MODELS, staging / "models")
    else:
        (staging / "models").mkdir(parents=True)
    strip_and_normalise(staging)
    shutil.rmtree(core, ignore_errors=True)
    staging.rename(core)
    return core


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LayerBuildError(f"pip failed ({' '.join(command[3:6])} ...):\n{result.stderr[-4000:]}")


def stamp_path(out: Path, name: str) -> Path:
    """Where the fingerprint of the last install of dependency layer ``name`` is kept."""
    return out / f".{name}-stamp"


def build_deps(out: Path = DEFAULT_OUT, name: str = "deps", *, force: bool = False) -> tuple[Path, bool]:
    """(Re)build dependency layer ``out/<name>``; returns the folder and whether pip actually ran."""
    requirements = DEPENDENCY_LAYERS[name]
    deps = out / name
    stamp = stamp_path(out, name)
    fingerprint = requirements_fingerprint(requirements)
    if not force and deps.is_dir() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return deps, False
    staging = out / f".{name}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    _pip(
        "install",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "--no-compile",
        *PIP_TARGET_OPTIONS,
        "--target",
        str(staging / "python"),
        "-r",
        str(requirements),
    )
    shutil.rmtree(staging / "python" / "bin", ignore_errors=True)  # console scripts: unused
    strip_and_normalise(staging)
    shutil.rmtree(deps, ignore_errors=True)
    staging.rename(deps)
    stamp.write_text(fingerprint + "\n")
    return deps, True


def build(out: Path = DEFAULT_OUT, *, force: bool = False, core_only: bool = False) -> dict[str, Path]:
    """Build the layers under ``out``; returns ``{name: folder}`` (only ``core`` when core_only)."""
    out.mkdir(parents=True, exist_ok=True)
    built = {"core": build_core(out)}
    if not core_only:
        for name in DEPENDENCY_LAYERS:
            built[name], _ = build_deps(out, name, force=force)
    return built


# --------------------------------------------------------------------------------------------
# Re-pinning
# --------------------------------------------------------------------------------------------

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock(requirements: Path = REQUIREMENTS) -> None:
    """Rewrite every ``--hash`` of the pins file from the wheels pip selects for Lambda."""
    text = requirements.read_text()
    header = [line for line in text.splitlines() if line.startswith("#") or not line.strip()]
    pins = [m.groups() for m in map(_PIN.match, text.splitlines()) if m]
    if not pins:
        raise LayerBuildError(f"no name==version pins found in {requirements.name}")
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "pins.txt"
        plain.write_text("".join(f"{name}=={version}\n" for name, version in pins))
        _pip("download", "--quiet", "--no-deps", *PIP_TARGET_OPTIONS, "-d", tmp, "-r", str(plain))
        hashes: dict[str, str] = {}
        for wheel in Path(tmp).glob("*.whl"):
            name, version = wheel.name.split("-")[:2]
            hashes[f"{_normalise(name)}=={version}"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lines = []
    for name, version in pins:
        key = f"{_normalise(name)}=={version}"
        if key not in hashes:
            raise LayerBuildError(f"pip selected no wheel for {name}=={version}")
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{hashes[key]}")
    while header and not header[-1].strip():
        header.pop()
    requirements.write_text("\n".join(header) + "\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default build/layers)")
    parser.add_argument("--force", action="store_true", help="reinstall the dependency layers")
    parser.add_argument("--core-only", action="store_true", help="build only the core layer (no pip)")
    parser.add_argument("--lock", action="store_true", help="rewrite the hashes of the pins files and exit")
    args = parser.parse_args(argv)
    try:
        if args.lock:
            for requirements in DEPENDENCY_LAYERS.values():
                lock(requirements)
                print(f"re-pinned {requirements.relative_to(ROOT)}")
            return 0
        built = build(args.out, force=args.force, core_only=args.core_only)
    except LayerBuildError as exc:
        print(f"layer build failed: {exc}", file=sys.stderr)
        return 1
    total = 0
    for name, path in built.items():
        size = tree_size(path)
        total += size
        print(f"{name:6s} {size / 2**20:7.1f} MiB  sha256 {tree_digest(path)[:16]}  {path}")
    print(f"total  {total / 2**20:7.1f} MiB unzipped (Lambda limit with the function code: 250 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
