"""The public surface of the package: exported names, version, exception tree."""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import rtckit
from rtckit import errors

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_complete() -> None:
    assert rtckit.__all__ == sorted(rtckit.__all__)
    for name in rtckit.__all__:
        assert hasattr(rtckit, name), name


def test_version() -> None:
    assert isinstance(rtckit.__version__, str)
    assert rtckit.__version__[0].isdigit()


def test_every_error_is_exported_and_derives_from_root() -> None:
    classes = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }
    assert set(classes) == set(errors.__all__)
    for name, cls in classes.items():
        assert issubclass(cls, rtckit.RtcKitError), name
        assert getattr(rtckit, name) is cls


def _drawn_tree() -> dict[str, tuple[str | None, str | None]]:
    """The tree drawn in ``rtckit.errors``' docstring: name -> (drawn parent, drawn builtin)."""
    doc = errors.__doc__ or ""
    drawing = doc.split(".. code-block:: text", 1)[1].split("\n\n")[1]
    drawn: dict[str, tuple[str | None, str | None]] = {}
    parents: list[str] = []  # the ancestors of the line being read, by depth
    for line in drawing.splitlines():
        match = re.match(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?(\w+)(?: \((\w+)\))?", line)
        assert match is not None, line
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        name = match.group(2)
        del parents[depth:]
        drawn[name] = (parents[-1] if parents else None, match.group(3))
        parents.append(name)
    return drawn


def test_error_tree_is_drawn_in_docstring() -> None:
    drawn = _drawn_tree()
    assert set(drawn) == set(errors.__all__)
    for name, (parent, builtin) in drawn.items():
        cls = getattr(errors, name)
        bases = [base.__name__ for base in cls.__bases__]
        assert bases[0] == (parent or "Exception"), f"{name} drawn under {parent}, is a {bases}"
        # the builtin drawn in parentheses is the class's other base (drawn where it is added)
        assert bases[1:] == ([builtin] if builtin else []), f"{name}: drawn ({builtin}), is {bases}"


def test_builtin_bases() -> None:
    assert issubclass(rtckit.ConfigurationError, ValueError)
    assert issubclass(rtckit.CredentialError, PermissionError)
    assert issubclass(rtckit.AuthError, PermissionError)
    assert issubclass(rtckit.IceError, ConnectionError)
    assert issubclass(rtckit.TurnAuthError, rtckit.IceError)


def _closure(requirements: list[str]) -> set[str]:
    """The distributions *requirements* install, transitively (without extras), normalised."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):
            todo.extend(metadata.requires(name) or [])
    return seen


def test_the_default_install_has_what_the_demo_and_the_examples_import() -> None:
    """``pip install . && rtckit demo`` hosts all three topologies, and the examples run: every
    third-party module they import comes with rtckit's default dependencies (no extra)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = _closure(project["dependencies"])
    code = (
        "import sys, runpy\n"
        "import rtckit.cli, rtckit.server.app, rtckit.peer.media\n"
        "from rtckit.topology.base import Topology, server_strategy_for, client_strategy_for\n"
        "for topology in Topology:\n"
        "    client_strategy_for(topology)\n"
        "    assert rtckit.server.app.available_topologies()[topology.value], topology\n"
        "for example in sys.argv[1:]:\n"
        "    runpy.run_path(example, run_name='imported')\n"
        "print(' '.join(sorted({name.partition('.')[0] for name in sys.modules})))\n"
    )
    examples = [str(path) for path in sorted((ROOT / "examples").glob("*.py"))]
    result = subprocess.run(
        [sys.executable, "-c", code, *examples],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr
    distributions = metadata.packages_distributions()
    missing = {}
    for module in result.stdout.split():
        if module in sys.stdlib_module_names or module.startswith("_") or module == "rtckit":
            continue
        for distribution in distributions.get(module, []):
            if canonicalize_name(distribution) not in installed:
                missing[module] = distribution
    assert missing == {}, f"imported but not a default dependency: {missing}"
