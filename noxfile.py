"""nox sessions: ``nox`` runs every default session (tests on 3.11-3.13, lint, typecheck, docs,
integration, browser). ``nox -s bench`` runs the benchmarks, which are not run by default.

Missing interpreters: a session whose Python is absent is an error, on CI and off it, because a
silently skipped Python version is a hole in the test matrix (``.ci/run`` makes all three
available through pyenv).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "docs", "integration", "browser"]

PYTHONS = ["3.11", "3.12", "3.13"]
MAIN_PYTHON = "3.11"


def _install(session: nox.Session, *groups: str, extras: str = "media,metrics") -> None:
    session.install(f".[{extras}]")
    for group in groups:
        session.install("--group", group)


@nox.session(python=PYTHONS)
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


@nox.session(python=MAIN_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
    _install(session, "test", "browser")
    names = session.posargs or sorted(
        path.stem for path in Path("benchmarks").glob("*.py") if not path.name.startswith("_")
    )
    for name in names:
        session.run("python", f"benchmarks/{name}.py")
