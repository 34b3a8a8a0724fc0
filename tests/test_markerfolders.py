"""The rule tests/conftest.py checks at every collection: a test's folder and its ``browser`` /
``integration`` markers agree (tests/markerfolders.py)."""

from __future__ import annotations

from pathlib import Path

from markerfolders import misplaced

TESTS = Path("/src/rtckit/tests")


def test_tests_in_their_folders_pass() -> None:
    items = [
        ("unit", TESTS / "test_stun.py", {"parametrize"}),
        ("hostile", TESTS / "hostile" / "test_http.py", set()),
        ("browser", TESTS / "browser" / "test_mesh.py", {"browser", "timeout"}),
        ("integration", TESTS / "integration" / "test_coturn.py", {"integration"}),
    ]
    assert misplaced(TESTS, items) == []


def test_a_marker_outside_its_folder_fails() -> None:
    items = [
        ("root", TESTS / "test_coturn.py", {"integration"}),
        ("hostile", TESTS / "hostile" / "test_http.py", {"browser"}),
        ("crossed", TESTS / "integration" / "test_x.py", {"integration", "browser"}),
    ]
    assert misplaced(TESTS, items) == [
        "root: marked 'integration', so it belongs in tests/integration/",
        "hostile: marked 'browser', so it belongs in tests/browser/",
        "crossed: marked 'browser', so it belongs in tests/browser/",
    ]


def test_a_test_of_a_marker_folder_without_its_marker_fails() -> None:
    items: list[tuple[str, Path, set[str]]] = [("bare", TESTS / "browser" / "test_mesh.py", set())]
    assert misplaced(TESTS, items) == ["bare: in tests/browser/ without the 'browser' marker"]


def test_a_file_outside_the_tests_folder_is_not_judged() -> None:
    items = [("doctest", TESTS.parent / "src" / "rtckit" / "stun.py", {"integration"})]
    assert misplaced(TESTS, items) == []
