"""The noxfile's choice of Pythons: the whole matrix (missing ones fail) on CI, the Pythons
found (and a loud warning naming the others) on a developer's machine."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

NOXFILE = Path(__file__).resolve().parents[1] / "noxfile.py"


@pytest.fixture(scope="module")
def noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rtckit_noxfile", NOXFILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        # as on CI: loading it here warns of nothing (the warning is tested below)
        patch.setenv("RTCKIT_REQUIRE_SYSTEM", "1")
        spec.loader.exec_module(module)
    return module


def test_a_developer_with_one_python_runs_it_and_is_told_what_was_skipped(
    noxfile: ModuleType,
) -> None:
    plan = noxfile.plan_pythons({"3.11"}, {})
    assert plan.matrix == ["3.11"]
    assert plan.main == "3.11"
    assert plan.skipped == ["3.12", "3.13"]
    assert not plan.strict
    banner = noxfile.skipped_banner(plan)
    assert "Python 3.12, 3.13 not found" in banner
    assert "tests-3.12, tests-3.13" in banner


def test_the_single_python_sessions_take_the_oldest_python_found(noxfile: ModuleType) -> None:
    plan = noxfile.plan_pythons({"3.13", "3.12"}, {"RTCKIT_REQUIRE_SYSTEM": "0"})
    assert plan.matrix == ["3.12", "3.13"]
    assert plan.main == "3.12"
    assert plan.skipped == ["3.11"]


@pytest.mark.parametrize("env", [{"CI": "true"}, {"CI": ""}, {"RTCKIT_REQUIRE_SYSTEM": "1"}])
def test_on_ci_every_python_stays_and_a_missing_one_is_an_error(
    noxfile: ModuleType, env: dict[str, str]
) -> None:
    plan = noxfile.plan_pythons({"3.11"}, env)
    assert plan.matrix == ["3.11", "3.12", "3.13"]
    assert plan.skipped == []
    assert plan.strict
    assert noxfile.skipped_banner(plan) == ""


def test_no_supported_python_found_keeps_the_matrix_for_nox_to_report(
    noxfile: ModuleType,
) -> None:
    plan = noxfile.plan_pythons({"3.10"}, {})
    assert plan.matrix == ["3.11", "3.12", "3.13"]
    assert plan.skipped == []


def test_a_python_is_found_only_if_it_runs_as_that_version(
    noxfile: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = "{}.{}".format(*sys.version_info[:2])
    other = next(v for v in ("3.11", "3.12", "3.13") if v != running)
    (tmp_path / f"python{running}").symlink_to(sys.executable)
    # a pyenv shim of a version that is installed but not selected: on PATH, fails to run
    shim = tmp_path / "python3.99"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    # on PATH under another version's name, but it is this Python
    (tmp_path / f"python{other}").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert noxfile._runs(running)
    assert not noxfile._runs("3.99")
    assert not noxfile._runs(other)
    assert not noxfile._runs("3.98")  # not on PATH at all
    assert os.environ["PATH"] == str(tmp_path)


def test_the_lint_session_runs_source_tests_that_need_no_rtckit(noxfile: ModuleType) -> None:
    """``nox -s lint`` installs no rtckit: its tests may import only the standard library,
    pytest and the test group (conftest.py, which pytest loads, too, and markerfolders.py, which
    conftest.py imports)."""
    root = Path(NOXFILE).parent
    for name in (*noxfile.SOURCE_TESTS, "tests/conftest.py", "tests/markerfolders.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert {m.split(".")[0] for m in modules} <= {
            *sys.stdlib_module_names,
            "__future__",
            "pytest",
            "hypothesis",
            "markerfolders",
        }, name
