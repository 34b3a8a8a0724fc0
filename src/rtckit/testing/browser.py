"""Launch the system's headless Chromium for tests, with the flags this project needs.

``launch_chromium()`` is an async context manager yielding a Playwright
``playwright.async_api.Browser``. It uses ``/usr/bin/chromium`` (never a browser downloaded
by ``playwright install``) and passes:

* a fake camera and microphone (``--use-fake-device-for-media-stream``,
  ``--use-fake-ui-for-media-stream``);
* ``--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1``, so that the
  browser never resolves (and so never contacts) a host other than the loopback;
* one ``--disable-features`` list: Chromium keeps only the LAST such switch, and Playwright passes
  its own, so the list here is Playwright's (read from its driver bundle, with a copy as a fallback)
  plus ``WebRtcHideLocalIpsWithMdns``, so that ICE candidates carry IP addresses instead of
  ``.local`` mDNS names.

Playwright is an optional dependency (the ``browser`` dependency group): this module imports it
only when called. Tests that use it are marked ``@pytest.mark.browser`` and call
``require_executable("chromium")`` first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = [
    "CHROMIUM_PATH",
    "HOST_RESOLVER_RULES",
    "chromium_args",
    "launch_chromium",
    "playwright_disabled_features",
]

CHROMIUM_PATH = "/usr/bin/chromium"

HOST_RESOLVER_RULES = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"

# Playwright 1.65's list (``disabledFeatures`` in its driver's coreBundle.js), used when the
# driver bundle cannot be read.
_FALLBACK_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
    "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)

_LIST_RE = re.compile(r"disabledFeatures\s*=\s*\[(.*?)\]", re.DOTALL)
_NAME_RE = re.compile(r"^\s*[\"']([A-Za-z0-9_]+)[\"']\s*,?\s*$", re.MULTILINE)


def playwright_disabled_features() -> tuple[str, ...]:
    """Return the feature list Playwright disables in Chromium (read from its driver bundle)."""
    try:
        import playwright
    except ImportError:  # pragma: no cover - playwright is needed to launch anyway
        return _FALLBACK_DISABLED_FEATURES
    bundle = Path(playwright.__file__).parent / "driver" / "package" / "lib" / "coreBundle.js"
    try:
        text = bundle.read_text(encoding="utf-8")
    except OSError:
        return _FALLBACK_DISABLED_FEATURES
    match = _LIST_RE.search(text)
    if match is None:
        return _FALLBACK_DISABLED_FEATURES
    names = tuple(_NAME_RE.findall(match.group(1)))
    return names or _FALLBACK_DISABLED_FEATURES


def chromium_args(
    *,
    fake_media: bool = True,
    fps: int | None = None,
    extra_disabled_features: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Return the command-line switches :func:`launch_chromium` passes to Chromium.

    *fps* sets the fake camera's frame rate (Chromium's default is 20).
    """
    args: list[str] = []
    if fake_media:
        device = "--use-fake-device-for-media-stream"
        if fps is not None:
            device += f"=fps={fps}"
        args += [device, "--use-fake-ui-for-media-stream"]
    args += [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--host-resolver-rules={HOST_RESOLVER_RULES}",
    ]
    features = [*playwright_disabled_features(), "WebRtcHideLocalIpsWithMdns"]
    features += [name for name in extra_disabled_features if name not in features]
    args.append("--disable-features=" + ",".join(features))
    args += list(extra_args)
    return args


@asynccontextmanager
async def launch_chromium(
    *,
    executable_path: str = CHROMIUM_PATH,
    headless: bool = True,
    fake_media: bool = True,
    fps: int | None = None,
    extra_disabled_features: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Browser]:
    """Start headless Chromium through Playwright; close it (and Playwright) on exit.

    Usage::

        async with launch_chromium() as browser:
            page = await browser.new_page()
            await page.goto("http://127.0.0.1:8080/")
    """
    from playwright.async_api import async_playwright

    args = chromium_args(
        fake_media=fake_media,
        fps=fps,
        extra_disabled_features=extra_disabled_features,
        extra_args=extra_args,
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable_path, headless=headless, args=args
        )
        try:
            yield browser
        finally:
            await browser.close()
