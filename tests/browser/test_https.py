"""A real Chromium trusts rtckit's local CA once, and the HTTP->HTTPS redirect gives it a
secure context (where ``navigator.mediaDevices`` exists) at a name that is not localhost."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from rtckit.certs import CertificateSpec, IssuedCertificate, KeyType, LocalCA
from rtckit.https import RedirectServer
from rtckit.testing import require_executable

HOST = "rtckit-certs.test"  # mapped to 127.0.0.1 by the resolver rule below, nothing else
TIMEOUT = 60


def _chromium_args() -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # no off-machine lookups (see /work/shared/notes/browser.md); our test name -> loopback
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND, "
        "EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ]


def _nss_db_trusting(home: Path, ca: LocalCA) -> None:
    """Make $HOME/.pki/nssdb, where Chromium on Linux finds the CAs a user trusts."""
    certutil = require_executable("certutil", hint="apt-get install libnss3-tools")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    ca_file = home / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "rtckit test CA", "-i", str(ca_file)],
    ):
        subprocess.run(
            [certutil, "-d", f"sql:{db}", *args], check=True, capture_output=True, timeout=30
        )


async def _page(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><title>rtckit</title>", content_type="text/html")


@asynccontextmanager
async def _https_site(certificate: IssuedCertificate) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _page)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock, ssl_context=certificate.server_ssl_context()).start()
        yield int(sock.getsockname()[1])
    finally:
        await runner.cleanup()
        sock.close()


async def test_chromium_trusts_the_local_ca_after_the_redirect(tmp_path: Path) -> None:
    chromium = require_executable("chromium", hint="apt-get install chromium")
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    ca = LocalCA.create(key_type=KeyType.EC)
    _nss_db_trusting(tmp_path, ca)
    trusted = ca.issue(CertificateSpec(hosts=[HOST], key_type=KeyType.EC))
    stranger = LocalCA.create(key_type=KeyType.EC).issue(
        CertificateSpec(hosts=[HOST], key_type=KeyType.EC)
    )
    async with (
        asyncio.timeout(TIMEOUT),
        _https_site(trusted) as https_port,
        _https_site(stranger) as untrusted_port,
        RedirectServer(https_port=https_port, host="127.0.0.1", port=0) as redirect,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=_chromium_args(),
            env={**os.environ, "HOME": str(tmp_path)},
        )
        try:
            page = await browser.new_page()
            response = await page.goto(f"http://{HOST}:{redirect.port}/call?room=7")
            assert response is not None
            assert response.status == 200
            assert page.url == f"https://{HOST}:{https_port}/call?room=7"
            secure, has_media = await page.evaluate(
                "[window.isSecureContext, !!navigator.mediaDevices]"
            )
            assert secure is True
            assert has_media is True
            # the same name, served with a certificate from a CA the browser does not trust
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(f"https://{HOST}:{untrusted_port}/")
        finally:
            await browser.close()
