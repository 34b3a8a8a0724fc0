"""Public import paths keep working: a snapshot taken before the package was reorganised.

``tests/data/public_api.json`` holds every public module's ``__all__`` and every import path the
docs, the README and the examples use (``from rtckit.x import y`` and ``.. automodule::``), as
they stood before modules moved. A moved name must stay importable from its old path, either as
it is or with a :class:`DeprecationWarning` that names the new path. The snapshot only grows:
when a deprecated path is finally removed, its entry goes in the same commit, said in the message.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import pytest

SNAPSHOT = json.loads(
    (Path(__file__).parent / "data" / "public_api.json").read_text(encoding="utf-8")
)
PATHS = sorted(
    {(module, name) for module, names in SNAPSHOT["modules"].items() for name in names}
    | {(module, name) for module, name in SNAPSHOT["documented"]}
)


def _resolve(module: str, name: str) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imported = importlib.import_module(module)
        if name:
            getattr(imported, name)
    return list(caught)


@pytest.mark.parametrize(("module", "name"), PATHS, ids=[f"{m}:{n}" for m, n in PATHS])
def test_old_import_path_works_or_warns(module: str, name: str) -> None:
    caught = _resolve(module, name)
    unexpected = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not unexpected, [str(w.message) for w in unexpected]
    for warning in caught:
        # a deprecation names where the name lives now
        assert "rtckit." in str(warning.message), str(warning.message)


def test_snapshot_covers_the_top_level_package() -> None:
    import rtckit

    assert set(SNAPSHOT["modules"]["rtckit"]) <= set(rtckit.__all__)
