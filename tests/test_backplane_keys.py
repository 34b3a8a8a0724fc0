"""rtckit.backplane.keys: user-supplied key parts are escaped injectively into safe text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtckit.backplane.keys import SAFE, escape, lease_key

GLOB = set("*?[]\\")


@given(st.text(), st.text())
def test_escape_is_injective(first: str, second: str) -> None:
    if first != second:
        assert escape(first) != escape(second)


@given(st.text())
def test_escape_keeps_only_safe_characters(part: str) -> None:
    assert set(escape(part)) <= SAFE | {"%"}


def test_rooms_with_glob_and_separator_characters() -> None:
    keys = {lease_key("rtckit", room) for room in ("a*", "a:b", "a", "a%3Ab", "a%2A")}
    assert len(keys) == 5
    for key in keys:
        assert not GLOB & set(key)
        assert key.count(":") == 2  # namespace:lease:<escaped>, nothing from the room
    assert lease_key("rtckit", "a:b") == "rtckit:lease:a%3Ab"
    assert escape("room-1_x.y") == "room-1_x.y"
    assert escape("é\ud800") == "%C3%A9%ED%A0%80"
