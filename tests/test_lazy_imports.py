"""At run time, a pure core loads no transport and no media stack; packages re-export lazily.

``tests/test_layers.py`` checks the imports written in each module. This file checks what
importing one actually loads, in a fresh interpreter: importing ``rtckit.signaling.protocol``
runs ``rtckit/__init__.py`` and ``rtckit/signaling/__init__.py`` first, so a package that
imported its adapters eagerly would load aiohttp into every pure core below it. Packages
re-export their names with :func:`rtckit._lazy.lazy_exports` instead (:pep:`562`).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rtckit
from test_layers import PURE_CORES

SRC = Path(__file__).resolve().parents[1] / "src"

# Neither the standard library modules the cores use nor attrs, PyJWT or cryptography import
# asyncio (checked when this test was written), so asyncio here would come from rtckit.
TRANSPORTS_AND_MEDIA = ("asyncio", "aiohttp", "aiortc", "aioice", "av", "numpy")
# (pure core, module) -> why it loads it anyway
ALLOWED: dict[tuple[str, str], str] = {
    ("rtckit.mcu.audio", "numpy"): "the mixer computes on numpy arrays",
    ("rtckit.mcu.video", "numpy"): "the compositor computes on numpy arrays",
}

LAZY_PACKAGES = sorted(
    ".".join(path.parent.relative_to(SRC).parts)
    for path in (SRC / "rtckit").rglob("__init__.py")
    if "lazy_exports(" in path.read_text(encoding="utf-8")
)


def _fresh(code: str, *args: str) -> str:
    """The output of *code* in a fresh interpreter that imports rtckit from this tree."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def loaded_by(*modules: str) -> list[str]:
    """Every module in ``sys.modules`` after importing *modules* in a fresh interpreter."""
    code = "import importlib, json, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    code += "print(json.dumps(sorted(sys.modules)))"
    loaded: list[str] = json.loads(_fresh(code, *modules))
    return loaded


def _is_pure(module: str) -> bool:
    """Whether *module* is a pure core, or a package that holds one (its ``__init__`` runs)."""
    return any(
        module == core or module.startswith(core + ".") or core.startswith(module + ".")
        for core in PURE_CORES
    )


@pytest.mark.parametrize("core", PURE_CORES)
def test_a_pure_core_loads_no_transport_and_no_media_stack(core: str) -> None:
    loaded = loaded_by(core)
    heavy = {
        top
        for top in {name.partition(".")[0] for name in loaded}
        if top in TRANSPORTS_AND_MEDIA and (core, top) not in ALLOWED
    }
    assert not heavy, f"import {core} loads {sorted(heavy)}"
    impure = [name for name in loaded if name.startswith("rtckit.") and not _is_pure(name)]
    assert not impure, f"import {core} loads modules that are not pure cores: {impure}"


def test_import_rtckit_loads_only_its_lazy_init() -> None:
    loaded = {name for name in loaded_by("rtckit") if name.partition(".")[0] == "rtckit"}
    assert loaded == {"rtckit", "rtckit._lazy", "rtckit._deprecated"}


def _type_checking_imports(package: str) -> dict[str, str]:
    """name -> module, for the ``from m import name`` under ``if TYPE_CHECKING:`` of *package*'s
    ``__init__`` (what mypy and Sphinx read)."""
    path = SRC.joinpath(*package.split("."), "__init__.py")
    names: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
                names |= {alias.name: str(statement.module) for alias in statement.names}
    return names


def test_every_package_with_an_adapter_re_exports_lazily() -> None:
    assert {"rtckit", "rtckit.signaling", "rtckit.peer", "rtckit.sfu", "rtckit.mcu"} <= set(
        LAZY_PACKAGES
    )


def test_a_lazy_package_exports_what_type_checkers_see() -> None:
    """In a fresh interpreter, the names a package resolves lazily are exactly those its
    ``if TYPE_CHECKING:`` block imports, and each is the object of the module named there."""
    code = "import importlib, json, sys\nout = {}\nfor name in sys.argv[1:]:\n"
    code += "    m = importlib.import_module(name)\n"
    code += "    out[name] = sorted(set(dir(m)) - set(vars(m)))\nprint(json.dumps(out))"
    lazy = json.loads(_fresh(code, *LAZY_PACKAGES))
    for package in LAZY_PACKAGES:
        typed = _type_checking_imports(package)
        assert sorted(typed) == lazy[package], package
        module = importlib.import_module(package)
        assert set(typed) <= set(module.__all__), package
        for name in set(module.__all__) - set(typed):
            assert name in vars(module), f"{package}.{name} is in __all__, bound nowhere"
        for name, source in typed.items():
            value = getattr(module, name)
            assert value is getattr(importlib.import_module(source), name), f"{package}.{name}"
        assert set(module.__all__) <= set(dir(module)), package


def test_a_submodule_is_an_attribute_of_its_package_as_before() -> None:
    """``import rtckit`` used to import ``rtckit.signaling`` and its modules; attribute access
    still reaches them, importing them on first use."""
    out = _fresh(
        "import sys, rtckit\n"
        "assert 'rtckit.signaling' not in sys.modules\n"
        "print(rtckit.signaling.protocol.Offer.__module__)"
    )
    assert out.strip() == "rtckit.signaling.protocol"


def test_an_unknown_name_is_an_attribute_error() -> None:
    import rtckit.peer

    assert not hasattr(rtckit.peer, "nothing")
    assert not hasattr(rtckit.peer, "__wrapped__")
    with pytest.raises(AttributeError, match=r"module 'rtckit\.peer' has no attribute 'no\.pe'"):
        getattr(rtckit.peer, "no.pe")
    with pytest.raises(ImportError, match=r"cannot import name 'Nothing' from 'rtckit\.signaling'"):
        from rtckit.signaling import Nothing  # type: ignore[attr-defined] # noqa: F401


def test_a_deprecated_name_warns_at_the_line_that_reads_it() -> None:
    import rtckit.sfu

    with pytest.warns(DeprecationWarning, match=r"rtckit\.sfu\.SfuTrackPublished") as caught:
        value = getattr(rtckit.sfu, "TrackPublished")  # noqa: B009 - no attribute for mypy
    assert value is rtckit.sfu.SfuTrackPublished
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]


def test_the_top_level_package_exports_the_same_objects() -> None:
    from rtckit.signaling import wsserver

    assert rtckit.SignalingServer is wsserver.SignalingServer
    assert rtckit.__version__[0].isdigit()
