"""rtckit.testing's system-component checks: skip on a laptop, fail under RTCKIT_REQUIRE_SYSTEM."""

from __future__ import annotations

import pytest

from rtckit.testing import REQUIRE_SYSTEM_ENV, require_executable, system_required
from rtckit.testing._webrtcbin import GST_PYTHON_ENV, require_webrtcbin

_ABSENT = "rtckit-no-such-program-7f3a"


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("1", True)])
def test_system_required_reads_env(
    monkeypatch: pytest.MonkeyPatch, value: str, *, expected: bool
) -> None:
    monkeypatch.setenv(REQUIRE_SYSTEM_ENV, value)
    assert system_required() is expected


def test_missing_executable_skips_without_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_SYSTEM_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install x"):
        require_executable(_ABSENT, hint="apt-get install x")


def test_missing_executable_fails_under_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_SYSTEM_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_SYSTEM_ENV):
        require_executable(_ABSENT)


def test_present_executable_is_found() -> None:
    assert require_executable("sh").endswith("/sh")


def test_missing_webrtcbin_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GST_PYTHON_ENV, f"/nonexistent/{_ABSENT}")
    monkeypatch.delenv(REQUIRE_SYSTEM_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install .*gstreamer1\.0-nice"):
        require_webrtcbin()
    monkeypatch.setenv(REQUIRE_SYSTEM_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_SYSTEM_ENV):
        require_webrtcbin()


def test_missing_webrtcbin_names_the_package_of_an_extra_element(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(GST_PYTHON_ENV, f"/nonexistent/{_ABSENT}")
    monkeypatch.delenv(REQUIRE_SYSTEM_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"gstreamer1\.0-plugins-ugly"):
        require_webrtcbin("x264enc")
