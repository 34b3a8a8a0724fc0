"""nox sessions: ``nox`` runs every default session (tests on 3.11-3.13, lint, typecheck, docs,
integration, browser). ``nox -s bench`` runs the benchmarks, which are not run by default.

Missing interpreters (:func:`plan_pythons`): on CI (``CI`` or ``RTCKIT_REQUIRE_SYSTEM=1`` set,
as ``.ci/run`` does, which also makes all three available through pyenv) a supported Python that
is absent is an error, because a skipped Python version there is a hole in the test matrix. On
a developer's machine, where one Python is the common case, ``nox`` runs the matrix over the
supported Pythons it finds and says loudly, first thing, which it skipped.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import NamedTuple

import nox

PYTHONS = ["3.11", "3.12", "3.13"]


class PythonPlan(NamedTuple):
    """The Pythons one ``nox`` run uses."""

    matrix: list[str]
    """The ``tests`` session's Pythons."""
    main: str
    """The Python of the single-Python sessions (lint, typecheck, docs, ...)."""
    skipped: list[str]
    """Supported Pythons left out because they are not on this machine."""
    strict: bool
    """Whether a missing Python is an error (CI)."""


def plan_pythons(found: Collection[str], env: Mapping[str, str]) -> PythonPlan:
    """Which Pythons to run, given the supported versions *found* on this machine and the
    environment *env*.

    With ``CI`` or ``RTCKIT_REQUIRE_SYSTEM=1`` in *env* every supported Python stays in the
    matrix, and nox fails the sessions whose Python is missing. Otherwise the matrix is the
    supported Pythons found (all of them if none is: then nox says what is missing), and the
    single-Python sessions run on 3.11 or else the oldest one found.
    """
    strict = "CI" in env or env.get("RTCKIT_REQUIRE_SYSTEM") == "1"
    present = [version for version in PYTHONS if version in found]
    if strict or not present:
        return PythonPlan(matrix=list(PYTHONS), main=PYTHONS[0], skipped=[], strict=strict)
    skipped = [version for version in PYTHONS if version not in present]
    return PythonPlan(matrix=present, main=present[0], skipped=skipped, strict=False)


def _runs(version: str) -> bool:
    """Whether ``python<version>`` on ``PATH`` runs and is that version (a pyenv shim of a
    version not selected is on ``PATH`` but fails)."""
    path = shutil.which(f"python{version}")
    if path is None:
        return False
    try:
        result = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def _found_pythons() -> set[str]:
    """The supported Pythons nox can use here: the one running nox and those that run from
    ``PATH`` as ``pythonX.Y``; all of them when uv is there (nox has uv fetch a missing one)."""
    if shutil.which("uv") or importlib.util.find_spec("uv") is not None:
        return set(PYTHONS)
    running = "{}.{}".format(*sys.version_info[:2])
    return {v for v in PYTHONS if v == running or _runs(v)}


def skipped_banner(plan: PythonPlan) -> str:
    """The warning naming the Pythons *plan* skips ("" when it skips none)."""
    if not plan.skipped:
        return ""
    rule = "!" * 78
    return (
        f"{rule}\n!! nox: Python {', '.join(plan.skipped)} not found, so tests-"
        f"{', tests-'.join(plan.skipped)} are skipped:\n!! the test matrix here is Python "
        f"{', '.join(plan.matrix)} only. Put python3.11, python3.12 and python3.13 on PATH\n"
        f"!! for all of it (on CI, with CI or RTCKIT_REQUIRE_SYSTEM=1 set, a missing one fails).\n"
        f"{rule}"
    )


def _warn(text: str) -> None:
    print(f"\n{text}\n", file=sys.stderr, flush=True)


PLAN = plan_pythons(_found_pythons(), os.environ)
if PLAN.skipped:
    # first thing, and again after nox's summary, where a long run ends
    _warn(skipped_banner(PLAN))
    atexit.register(_warn, skipped_banner(PLAN))
MAIN_PYTHON = PLAN.main

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = PLAN.strict
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "docs", "integration", "browser"]


def _install(session: nox.Session, *groups: str, extras: str = "metrics") -> None:
    session.install(f".[{extras}]")
    for group in groups:
        session.install("--group", group)


@nox.session(python=PLAN.matrix)
def tests(session: nox.Session) -> None:
    """Unit and loopback tests (no root, no system services)."""
    _install(session, "test", "browser")
    session.run(
        "pytest",
        "-m",
        "not browser and not integration",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session(python=MAIN_PYTHON)
def integration(session: nox.Session) -> None:
    """Tests against real system components: coturn, network namespaces."""
    _install(session, "test", "browser")
    session.run("pytest", "-m", "integration", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=MAIN_PYTHON)
def browser(session: nox.Session) -> None:
    """Tests that drive Debian's headless Chromium through Playwright."""
    _install(session, "test", "browser")
    session.run("pytest", "-m", "browser", "-p", "no:cacheprovider", *session.posargs)


# Tests that read the source as text or syntax trees and import nothing of rtckit: the layer
# contract, the __all__ lists, no history in comments. They also run in the tests session.
SOURCE_TESTS = ("tests/test_layers.py", "tests/test_comments.py")


@nox.session(python=MAIN_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the source tests (layers, ``__all__``, comments)."""
    # the test group for pytest and the plugins pyproject.toml configures; not rtckit itself
    session.install("--group", "lint", "--group", "test")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("pytest", "-p", "no:cacheprovider", *SOURCE_TESTS)


@nox.session(python=MAIN_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the tests, the examples and the benchmarks."""
    _install(session, "typecheck")
    targets = [d for d in ("src", "tests", "examples", "benchmarks") if any(Path(d).rglob("*.py"))]
    session.run("mypy", *targets, "noxfile.py")


@nox.session(python=MAIN_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs, warnings as errors, nitpicky."""
    _install(session, "docs")
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=MAIN_PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (not part of the default run): ``nox -s bench -- signaling``."""
    _install(session, "test", "browser", "bench")
    names = session.posargs or sorted(
        path.stem for path in Path("benchmarks").glob("*.py") if not path.name.startswith("_")
    )
    for name in names:
        session.run("python", f"benchmarks/{name}.py")
