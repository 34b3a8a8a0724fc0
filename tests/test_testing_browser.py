"""The reusable Chromium launcher in :mod:`rtckit.testing.browser`: its arguments (it runs
Chromium in tests/browser/test_launcher.py)."""

from __future__ import annotations

from rtckit.testing.browser import HOST_RESOLVER_RULES, chromium_args


def test_args_have_one_disable_features_switch_with_playwrights_list_and_mdns() -> None:
    args = chromium_args(fps=30, extra_disabled_features=["Foo"])
    features = [arg for arg in args if arg.startswith("--disable-features=")]
    assert len(features) == 1
    names = features[0].split("=", 1)[1].split(",")
    assert "WebRtcHideLocalIpsWithMdns" in names
    assert "Foo" in names
    assert "PaintHolding" in names  # one of Playwright's own
    assert f"--host-resolver-rules={HOST_RESOLVER_RULES}" in args
    assert "--use-fake-device-for-media-stream=fps=30" in args
    assert "--use-fake-ui-for-media-stream" in args
