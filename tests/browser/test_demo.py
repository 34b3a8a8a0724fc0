"""``rtckit demo`` in real browsers: three headless Chromium pages join one room over HTTPS
(the browser trusts the demo's local CA through an NSS database, no certificate errors are
ignored), in each topology: mesh, SFU (the server forwards) and MCU (the server composes one
picture). They see each other's video decoded and playing, chat, and leave. A topology the
server cannot host (a strategy module that does not import) is refused with a clear message
on the page. ``rtckit serve`` with tokens refuses a page without a valid ``?token=``.

Screenshots of the three-person room in each topology go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from rtckit.server.app import available_topologies
from rtckit.signaling import TokenAuth
from rtckit.testing import require_executable
from rtckit.testing.browser import chromium_args

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

TIMEOUT = 240  # three Chromium pages encode and decode 6 streams on 2 shared cores
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
NAMES = ("Ada", "Grace", "Linus")


def _env(**extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else ""), **extra}


@asynccontextmanager
async def _rtckit(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[list[str]]:
    """Run ``python -m rtckit ARGS``; yield its output lines as they come; SIGINT at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtckit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env or _env(),
    )
    lines: list[str] = []

    async def pump() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode())  # noqa: PERF401 - others read it while it grows

    reader = asyncio.create_task(pump())
    try:
        yield lines
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader
    assert process.returncode == 0, "".join(lines)


async def _wait_for(lines: list[str], pattern: str) -> re.Match[str]:
    while True:
        for line in lines:
            found = re.search(pattern, line)
            if found:
                return found
        await asyncio.sleep(0.05)


def _trust(home: Path, ca_file: Path) -> None:
    """Make $HOME/.pki/nssdb trust *ca_file*: Chromium on Linux reads the user's CAs there."""
    certutil = require_executable("certutil", hint="apt-get install libnss3-tools")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "rtckit demo CA", "-i", str(ca_file)],
    ):
        subprocess.run(
            [certutil, "-d", f"sql:{db}", *args], check=True, capture_output=True, timeout=30
        )


@asynccontextmanager
async def _chromium(home: Path) -> AsyncIterator[Browser]:
    chromium = require_executable("chromium", hint="apt-get install chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        env: dict[str, str | float | bool] = {**_env(HOME=str(home))}
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=chromium_args(fps=15), env=env
        )
        try:
            yield browser
        finally:
            await browser.close()


_CONSOLE: dict[int, list[str]] = {}  # id(page) -> its console errors and warnings


async def _join(page: Page, url: str, name: str, topology: str) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    console = _CONSOLE.setdefault(id(page), [])
    page.on(
        "console",
        lambda message: (
            console.append(message.text[:300]) if message.type in ("error", "warning") else None
        ),
    )
    response = await page.goto(url)
    assert response is not None
    assert response.ok
    await page.fill("#name-input", name)
    await page.check(f'input[name="topology"][value="{topology}"]')
    await page.click("#join-button")
    assert not errors, errors


_VIDEOS = """() => [...document.querySelectorAll('#grid .tile:not(.local) video')]
    .map((v) => ({width: v.videoWidth, time: v.currentTime, paused: v.paused}))"""

_TILES = """() => [...document.querySelectorAll('#grid .tile')].map((t) => ({
    name: t.querySelector('.name').textContent, id: t.dataset.peerId,
    state: t.dataset.state ?? null,
    width: t.querySelector('video').videoWidth, time: t.querySelector('video').currentTime}))"""

_DEBUG = """async () => {
  // what the page's room received: remote tracks by mid, transceivers, inbound RTP
  const room = window.rtckitPage.room;
  const out = {};
  out.remote = [...(room.remote || new Map())].map(
    ([mid, e]) => [mid, e.participantId, e.track.kind, e.track.muted]);
  const pc = room.session ? room.session.pc : null;
  if (pc) {
    out.transceivers = pc.getTransceivers().map(
      (t) => [t.mid, t.currentDirection, t.receiver.track.kind]);
    out.inbound = [];
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') out.inbound.push([s.mid, s.packetsReceived]);
    });
  }
  return JSON.stringify(out);
}"""

_STATS = """() => [...document.querySelectorAll('#stats-body .conn')].map((c) => c.innerText)"""

_FRAMES = """() => [...document.querySelectorAll('#stats-body .conn')]
    .map((c) => Number(c.dataset.framesDecoded))"""


async def _remote_video_playing(page: Page, count: int, topology: str = "mesh") -> None:
    """Every remote tile of *page* decodes frames and its video element advances.

    Mesh and SFU: one tile per other participant (*count*); MCU: one tile, the room's
    composite. Mesh has a connection per participant, SFU and MCU one, to the server.
    Deadlines are generous: other test runs share this machine's two cores.
    """
    connections = count if topology == "mesh" else 1
    if topology == "mcu":
        count = 1
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    async def until(condition: str, what: str, milliseconds: float) -> None:
        try:
            await page.wait_for_function(condition, timeout=milliseconds)
        except PlaywrightTimeout:
            tiles = await page.evaluate(_TILES)
            stats = await page.evaluate(_STATS)
            note = await page.locator("#preview-note").text_content()
            debug = await page.evaluate(_DEBUG)
            raise AssertionError(
                f"{what} on {await page.title()}: tiles {tiles}, connections {stats}, "
                f"camera note {note!r}, console {_CONSOLE.get(id(page))}, room {debug}"
            ) from None

    await until(f"document.querySelectorAll('#grid .tile').length === {count + 1}", "tiles", 30_000)
    await until(
        f"""() => {{
            const v = [...document.querySelectorAll('#grid .tile:not(.local) video')];
            return v.length === {count}
                && v.every((e) => e.videoWidth > 0 && e.currentTime > 0 && !e.paused);
        }}""",
        "remote video not playing",
        90_000,
    )
    await until(
        f"() => {{ const f = ({_FRAMES})(); "
        f"return f.length === {connections} && f.every((n) => n > 0); }}",
        "no frame decoded",
        30_000,
    )
    # then both keep advancing: the video elements' clocks and getStats' framesDecoded
    times = await page.evaluate(_VIDEOS)
    frames = await page.evaluate(_FRAMES)
    await until(
        f"""() => {{
            const times = {[video["time"] for video in times]};
            const frames = {frames};
            const v = ({_VIDEOS})();
            const f = ({_FRAMES})();
            return v.length === times.length && f.length === frames.length
                && v.every((e, i) => e.width > 0 && e.time > times[i])
                && f.every((n, i) => n > frames[i]);
        }}""",
        "remote video stalled",
        30_000,
    )


async def _chat_arrives(page: Page, text: str) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_selector(f"#messages li:has-text('{text}')", timeout=30_000)
    except PlaywrightTimeout:
        messages = await page.locator("#messages").inner_text()
        tiles = await page.evaluate(_TILES)
        raise AssertionError(
            f"{text!r} not received on {await page.title()}: chat {messages!r}, tiles {tiles}"
        ) from None


class Demo(NamedTuple):
    base: str  # https://localhost:PORT
    http_port: int
    home: Path  # a HOME whose NSS database trusts the demo's CA
    certs: Path


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """A running ``rtckit demo`` over HTTPS, and a browser HOME trusting its CA."""
    certs = tmp_path / "certs"
    args = ("demo", "--host", "127.0.0.1", "--port", "0", "--http-port", "0")
    async with asyncio.timeout(30), _rtckit(*args, "--cert-dir", str(certs)) as lines:
        port = int((await _wait_for(lines, r"https://localhost:(\d+)/")).group(1))
        http_port = int((await _wait_for(lines, r"http://\.\.\.:(\d+)/ redirects")).group(1))
        home = tmp_path / "home"
        _trust(home, certs / "ca.pem")
        yield Demo(f"https://localhost:{port}", http_port, home, certs)


_MIX = "#grid .tile.mix"


async def _mix_names(page: Page, names: list[str]) -> None:
    """The MCU page's mix tile names exactly *names* (the server's layout), in any order."""
    caption = page.locator(f"{_MIX} .name")
    try:
        await page.wait_for_function(
            """(names) => {
                const c = document.querySelector('#grid .tile.mix .name');
                if (!c || !c.textContent.startsWith('Room mix · ')) return false;
                const shown = c.textContent.slice('Room mix · '.length).split(', ').sort();
                return JSON.stringify(shown) === JSON.stringify([...names].sort());
            }""",
            arg=names,
            timeout=30_000,
        )
    except Exception:
        raise AssertionError(
            f"mix caption {await caption.text_content()!r}, expected {names}"
        ) from None


async def _advancing(page: Page, selector: str) -> None:
    """The video element at *selector* plays and its clock advances."""
    before = await page.evaluate(f"document.querySelector({selector!r} + ' video').currentTime")
    await page.wait_for_function(
        f"""() => {{
            const v = document.querySelector({selector!r} + ' video');
            return v && v.videoWidth > 0 && !v.paused && v.currentTime > {before};
        }}""",
        timeout=30_000,
    )


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("topology", ["mesh", "sfu", "mcu"])
async def test_three_pages_in_one_room(demo: Demo, topology: str) -> None:
    base, _, home, _ = demo
    room = f"{topology}-{secrets.token_hex(3)}"
    async with asyncio.timeout(TIMEOUT), _chromium(home) as browser:
        if not available_topologies()[topology]:  # e.g. the MCU without numpy
            page = await browser.new_page()
            await _join(page, f"{base}/?room={room}", "Ada", topology)
            error = page.locator("#join-error")
            await error.wait_for(state="visible", timeout=20_000)
            text = await error.text_content()
            assert text is not None
            assert f"cannot host {topology.upper()} rooms" in text
            assert await page.locator("#call").is_hidden()
            return
        pages: list[Page] = []
        for name in NAMES:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await _join(page, f"{base}/?room={room}", name, topology)
            await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
            pages.append(page)
        for page in pages:
            await _remote_video_playing(page, len(NAMES) - 1, topology)
            assert await page.locator("#topology-badge").text_content() == topology.upper()
            me = await page.input_value("#name-input")
            labels = await page.locator("#grid .tile .name").all_text_contents()
            if topology == "mcu":
                # one composite of everyone, plus the local preview
                await _mix_names(page, list(NAMES))
                labels = await page.locator("#grid .tile:not(.mix) .name").all_text_contents()
                assert labels == [f"{me} (you)"]
                assert await page.locator(_MIX).count() == 1
            else:
                assert await page.locator(_MIX).count() == 0
                assert sorted(labels) == sorted([f"{n} (you)" if n == me else n for n in NAMES])
            assert "3 people" in (await page.locator("#status").text_content() or "")
        # chat over the room's data channels
        await pages[0].fill("#chat-input", "Hello from Ada")
        await pages[0].press("#chat-input", "Enter")
        await pages[1].fill("#chat-input", "Hi Ada! Grace here.")
        await pages[1].press("#chat-input", "Enter")
        for page in pages[1:]:
            await _chat_arrives(page, "Hello from Ada")
        for page in (pages[0], pages[2]):
            await _chat_arrives(page, "Grace here")
        # mute: the others see the camera off (MCU: inside the composite, not a tile's state)
        if topology != "mcu":
            await _muted_camera_shows(pages)
        ARTIFACTS.mkdir(exist_ok=True)
        await pages[0].wait_for_timeout(1500)  # let the stats panel fill its rates
        for index, page in enumerate(pages):
            await page.screenshot(path=ARTIFACTS / f"demo-room-{topology}-{index + 1}.png")
        await pages[2].click("#tab-stats")
        await pages[2].wait_for_timeout(1200)
        await pages[2].screenshot(path=ARTIFACTS / f"demo-room-{topology}-stats.png")
        # leaving removes the tile everywhere (MCU: the composite's layout drops the person)
        await pages[2].click("#leave-button")
        for page in pages[:2]:
            if topology == "mcu":
                await _mix_names(page, list(NAMES[:2]))
                await _advancing(page, _MIX)
            else:
                await page.wait_for_function(
                    "document.querySelectorAll('#grid .tile').length === 2", timeout=20_000
                )
                assert await page.locator("#grid .tile:has-text('Linus')").count() == 0
            await page.wait_for_selector("#status:has-text('2 people')", timeout=20_000)
        assert await pages[2].locator("#lobby").is_visible()


async def _muted_camera_shows(pages: list[Page]) -> None:
    await pages[1].click("#cam-button")
    await pages[0].wait_for_selector("#grid .tile.muted-video:has-text('Grace')")
    await pages[1].click("#cam-button")
    await pages[0].wait_for_selector(
        "#grid .tile:has-text('Grace'):not(.muted-video)", timeout=10_000
    )


async def test_http_port_redirects_the_browser_to_https(demo: Demo) -> None:
    base, http_port, home, _ = demo
    async with asyncio.timeout(TIMEOUT), _chromium(home) as browser:
        page = await browser.new_page()
        response = await page.goto(f"http://localhost:{http_port}/?room=standup")
        assert response is not None
        assert response.ok
        assert page.url == f"{base}/?room=standup"
        assert await page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
        assert await page.input_value("#room-input") == "standup"
        first = response.request.redirected_from
        assert first is not None
        redirect = await first.response()
        assert redirect is not None
        assert redirect.status == 308


_SLOW_CAMERA = """(() => {
  const devices = navigator.mediaDevices;
  const open = devices.getUserMedia.bind(devices);
  devices.getUserMedia = (constraints) => new Promise((resolve, reject) => {
    setTimeout(() => open(constraints).then(resolve, reject), 2000);
  });
})();"""


async def test_a_join_clicked_before_the_camera_opened_waits_for_it(demo: Demo) -> None:
    """A person who clicks Join while the camera is still opening joins with the camera.

    Each page's camera takes two seconds to open (as a permission prompt would); the test
    clicks Join at once. Before the page waited for its preview, the first page of a fresh
    browser sometimes joined without media and the others saw a black tile.
    """
    room = f"slow-{secrets.token_hex(3)}"
    async with asyncio.timeout(TIMEOUT), _chromium(demo.home) as browser:
        pages: list[Page] = []
        for name in NAMES[:2]:
            context = await browser.new_context()
            await context.add_init_script(_SLOW_CAMERA)
            page = await context.new_page()
            await _join(page, f"{demo.base}/?room={room}", name, "mesh")
            pages.append(page)
        for page in pages:
            await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
            await page.wait_for_function(
                "document.querySelector('#grid .tile.local video').videoWidth > 0",
                timeout=20_000,
            )
            await _remote_video_playing(page, 1)


async def test_a_python_participant_joins_the_browsers(demo: Demo) -> None:
    """examples/demo_bot.py (aiortc, join_room) in a room with two pages: one room API."""
    room = f"bot-{secrets.token_hex(3)}"
    async with asyncio.timeout(TIMEOUT), _chromium(demo.home) as browser:
        pages: list[Page] = []
        for name in NAMES[:2]:
            page = await (await browser.new_context()).new_page()
            await _join(page, f"{demo.base}/?room={room}", name, "mesh")
            await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
            pages.append(page)
        bot = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / "demo_bot.py"),
            demo.base,
            room,
            "--ca",
            str(demo.certs / "ca.pem"),
            "--seconds",
            "90",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_env(),
        )
        try:
            for page in pages:
                await page.wait_for_selector("#grid .tile:has-text('rtckit bot')", timeout=20_000)
                await page.wait_for_selector(
                    "#messages li:has-text('I am a Python peer')", timeout=20_000
                )
            await pages[0].fill("#chat-input", "ping bot")
            await pages[0].press("#chat-input", "Enter")
            for page in pages:
                await page.wait_for_selector("#messages li:has-text('Ada said: ping bot')")
            ARTIFACTS.mkdir(exist_ok=True)
            await pages[1].screenshot(path=ARTIFACTS / "demo-room-with-python-bot.png")
            for page in pages:
                await _remote_video_playing(page, 2)
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGINT)
            assert bot.stdout is not None
            output = (await bot.stdout.read()).decode()
            await bot.wait()
        assert bot.returncode == 0, output
        assert "joined" in output
        assert "Ada: ping bot" in output
        for page in pages:
            await page.wait_for_function(
                "document.querySelectorAll('#grid .tile').length === 2", timeout=20_000
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_with_tokens_refuses_a_page_without_a_valid_token(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(32)
    port = _free_port()
    config = tmp_path / "serve.toml"
    # plain HTTP on 127.0.0.1 (a secure context for the camera); TLS is tested above
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ninsecure = true\n'
        '[auth]\nsecret_env = "RTCKIT_PAGE_TEST_SECRET"\n',
        encoding="utf-8",
    )
    tokens = TokenAuth(secret=secret)
    env = _env(RTCKIT_PAGE_TEST_SECRET=secret)
    async with (
        asyncio.timeout(TIMEOUT),
        _rtckit("serve", "--config", str(config), env=env) as lines,
        _chromium(tmp_path) as browser,
    ):
        await _wait_for(lines, '"message": "serving')
        base = f"http://127.0.0.1:{port}"
        page = await browser.new_page()
        await page.goto(f"{base}/?room=board")
        await page.locator("#token-note").wait_for(state="visible")
        assert await page.locator("#topology-field").is_hidden()
        await page.fill("#name-input", "Mallory")
        await page.click("#join-button")
        error = page.locator("#join-error")
        await error.wait_for(state="visible", timeout=20_000)
        assert "invitation link" in (await error.text_content() or "")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "serve-token-refused.png")
        forged = TokenAuth(secret="f" * 40).mint(room="board", identity="mallory")
        await page.goto(f"{base}/?room=board&token={forged}")
        await page.fill("#name-input", "Mallory")
        await page.click("#join-button")
        await error.wait_for(state="visible", timeout=20_000)
        assert "not valid" in (await error.text_content() or "")
        good = tokens.mint(room="board", identity="ada")
        await page.goto(f"{base}/?room=board&token={good}")
        assert await page.locator("#token-note").is_hidden()
        await page.fill("#name-input", "Ada")
        await page.click("#join-button")
        await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
        status: Any = await page.locator("#status").text_content()
        assert "Connected" in status
