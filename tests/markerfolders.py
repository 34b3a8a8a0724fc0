"""Where a test lives says what it needs: every test under ``tests/browser`` carries the
``browser`` marker, every test under ``tests/integration`` the ``integration`` marker, and no
other test carries either. Those folders' conftests add the markers; ``tests/conftest.py``
checks the rule with :func:`misplaced` at every collection, before ``-m`` selects.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

#: The markers that each have a folder of their own, named after the marker.
FOLDER_MARKERS = ("browser", "integration")


def folder_marker(tests: Path, path: Path) -> str | None:
    """The marker that the folder of the test file *path* gives, None outside those folders."""
    parts = path.relative_to(tests).parts
    if len(parts) > 1 and parts[0] in FOLDER_MARKERS:
        return parts[0]
    return None


def misplaced(tests: Path, items: Iterable[tuple[str, Path, Collection[str]]]) -> list[str]:
    """One line per test whose folder and markers disagree.

    *items* are (node id, test file, names of the test's markers); a file outside *tests* is
    not judged.
    """
    errors: list[str] = []
    for nodeid, path, markers in items:
        if not path.is_relative_to(tests):
            continue
        expected = folder_marker(tests, path)
        for marker in FOLDER_MARKERS:
            if marker in markers and marker != expected:
                errors.append(f"{nodeid}: marked {marker!r}, so it belongs in tests/{marker}/")
            elif marker == expected and marker not in markers:
                errors.append(f"{nodeid}: in tests/{marker}/ without the {marker!r} marker")
    return errors
