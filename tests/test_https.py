"""rtckit.https and the TLS contexts of rtckit.certs, on real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import doctest
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

import rtckit.https
from rtckit import ConfigurationError
from rtckit.certs import (
    CertificateSpec,
    IssuedCertificate,
    KeyType,
    LocalCA,
    client_ssl_context,
    create_self_signed,
)
from rtckit.https import (
    RedirectServer,
    https_redirect_middleware,
    redirect_app,
    redirect_location,
)

TIMEOUT = 20


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create(key_type=KeyType.EC)


@pytest.fixture(scope="module")
def leaf(ca: LocalCA) -> IssuedCertificate:
    return ca.issue(CertificateSpec(hosts=["localhost", "127.0.0.1", "::1"], key_type=KeyType.EC))


def _bound_socket() -> tuple[socket.socket, int]:
    """A TCP socket bound to a free port of 127.0.0.1, and that port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello over {request.scheme}")


@asynccontextmanager
async def _serve(
    app: web.Application, *sites: tuple[socket.socket, ssl.SSLContext | None]
) -> AsyncIterator[None]:
    """Serve *app* on bound sockets, each with its TLS context (None: plain HTTP)."""
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    try:
        for sock, context in sites:
            await web.SockSite(runner, sock, ssl_context=context).start()
        yield
    finally:
        await runner.cleanup()
        for sock, _ in sites:
            sock.close()


def _hello_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _hello)
    return app


async def _raw_request(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Send *request* bytes as they are; return the status and headers of the answer."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


# --- the pure function ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "target", "https_port", "expected"),
    [
        ("example.test", "/", 8443, "https://example.test:8443/"),
        (
            "example.test:8080",
            "/room?id=7&x=%20y",
            8443,
            "https://example.test:8443/room?id=7&x=%20y",
        ),
        ("Example.TEST:80", "/a/b/", 443, "https://example.test/a/b/"),
        ("example.test.", "/", 443, "https://example.test./"),
        ("192.168.1.20:8080", "/?q", 8443, "https://192.168.1.20:8443/?q"),
        ("[::1]:8080", "/x?y=1", 8443, "https://[::1]:8443/x?y=1"),
        ("[::1]", "/", 443, "https://[::1]/"),
        ("[FD00:0::2]:80", "/", 443, "https://[fd00::2]/"),
        ("localhost:", "/p", 4443, "https://localhost:4443/p"),
        ("x", "//evil.test/", 8443, "https://x:8443//evil.test/"),
        ("ignored.test", "http://other.test:81/p?q=1", 8443, "https://other.test:8443/p?q=1"),
        ("ignored.test", "http://other.test", 443, "https://other.test/"),
    ],
)
def test_redirect_location(host: str, target: str, https_port: int, expected: str) -> None:
    assert redirect_location(host, target, https_port) == expected


@pytest.mark.parametrize(
    ("host", "target"),
    [
        (None, "/"),
        ("", "/"),
        ("   ", "/"),
        ("a b", "/"),
        ("exa mple.test", "/"),
        ("example.test:99999", "/"),
        ("example.test:0", "/"),
        ("example.test:http", "/"),
        ("example.test:80:80", "/"),
        ("user@example.test", "/"),
        ("::1", "/"),
        ("[::1", "/"),
        ("[::1]x", "/"),
        ("[not-ip]:80", "/"),
        ("[fe80::1%25eth0]", "/"),
        ("example.test/path", "/"),
        ("-bad.test", "/"),
        ("bücher.test", "/"),
        ("example.test", "*"),
        ("example.test", "ftp://example.test/"),
        ("example.test", "/a b"),
        ("example.test", "/\r\nSet-Cookie: x"),
    ],
)
def test_redirect_location_refuses_garbage(host: str | None, target: str) -> None:
    assert redirect_location(host, target, 8443) is None


@pytest.mark.parametrize("port", [0, -1, 65536, True, 8443.0])
def test_bad_https_port(port: int) -> None:
    with pytest.raises(ConfigurationError, match="https_port"):
        redirect_location("example.test", "/", port)
    with pytest.raises(ConfigurationError):
        redirect_app(port)
    with pytest.raises(ConfigurationError):
        RedirectServer(https_port=port, host="127.0.0.1", port=0)


def test_bad_listen_port() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        RedirectServer(https_port=443, host="127.0.0.1", port=70000)
    with pytest.raises(ConfigurationError, match="shutdown_timeout"):
        RedirectServer(https_port=443, host="127.0.0.1", port=0, shutdown_timeout=-1)


# --- the redirect server ----------------------------------------------------------------------


async def test_redirect_server_answers_308() -> None:
    async with RedirectServer(https_port=8443, host="127.0.0.1", port=0) as server:
        assert server.addresses == [("127.0.0.1", server.port)]
        port = server.port
        cases = [
            (
                b"GET /room/42?name=a%20b&x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n",
                "https://127.0.0.1:8443/room/42?name=a%20b&x=1",
            ),
            (b"GET /v6?q HTTP/1.1\r\nHost: [::1]:%d\r\n", "https://[::1]:8443/v6?q"),
            (b"HEAD / HTTP/1.1\r\nHost: phone.lan\r\n", "https://phone.lan:8443/"),
            (
                b"POST /form HTTP/1.1\r\nHost: pc.lan:%d\r\nContent-Length: 3\r\n",
                "https://pc.lan:8443/form",
            ),
            (b"GET /any/path/at/all HTTP/1.0\r\nHost: x\r\n", "https://x:8443/any/path/at/all"),
        ]
        for head, location in cases:
            request = (head.replace(b"%d", str(port).encode())) + b"Connection: close\r\n\r\n"
            if request.startswith(b"POST"):
                request += b"a=b"
            status, headers = await _raw_request(port, request)
            assert status == 308, request
            assert headers["location"] == location


async def test_redirect_server_drops_port_443() -> None:
    async with RedirectServer(https_port=443, host="127.0.0.1", port=0) as server:
        request = b"GET /x?y=z HTTP/1.1\r\nHost: [fd00::2]:80\r\nConnection: close\r\n\r\n"
        status, headers = await _raw_request(server.port, request)
        assert status == 308
        assert headers["location"] == "https://[fd00::2]/x?y=z"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.0\r\n\r\n",  # no Host at all (HTTP/1.0 allows that, we cannot redirect)
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",  # no Host in HTTP/1.1
        b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x:99999\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
)
async def test_redirect_server_refuses_bad_host(request_bytes: bytes) -> None:
    async with RedirectServer(https_port=8443, host="127.0.0.1", port=0) as server:
        status, headers = await _raw_request(server.port, request_bytes)
        assert status == 400
        assert "location" not in headers


async def test_redirect_with_aiohttp_client() -> None:
    async with (
        RedirectServer(https_port=9443, host="127.0.0.1", port=0) as server,
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT),
    ):
        url = f"http://127.0.0.1:{server.port}/call?room=a&peer=b"
        async with session.put(url, data=b"x", allow_redirects=False) as response:
            assert response.status == 308
            assert response.headers["Location"] == "https://127.0.0.1:9443/call?room=a&peer=b"


async def test_redirect_server_close_is_idempotent() -> None:
    server = RedirectServer(https_port=8443, host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    await server.start()
    await server.start()  # already started: nothing happens
    port = server.port
    await server.aclose()
    await server.aclose()
    assert server.addresses == []
    with pytest.raises(OSError):  # noqa: PT012 - connecting is the thing that must fail
        async with asyncio.timeout(TIMEOUT):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()


# --- HTTPS with certificates from rtckit.certs ------------------------------------------------


async def test_https_server_trusted_through_the_local_ca(
    ca: LocalCA, leaf: IssuedCertificate
) -> None:
    sock, port = _bound_socket()
    async with (
        _serve(_hello_app(), (sock, leaf.server_ssl_context())),
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT),
    ):
        trusting = ca.client_ssl_context()
        async with session.get(f"https://127.0.0.1:{port}/", ssl=trusting) as response:
            assert response.status == 200
            assert await response.text() == "hello over https"
        # the name checked can be a DNS name of the certificate too
        async with session.get(
            f"https://127.0.0.1:{port}/", ssl=trusting, server_hostname="localhost"
        ) as response:
            assert response.status == 200


async def test_https_server_refused_without_trust(ca: LocalCA, leaf: IssuedCertificate) -> None:
    stranger = LocalCA.create(key_type=KeyType.EC).client_ssl_context()
    system = ssl.create_default_context()  # the machine's usual CAs do not know our CA
    sock, port = _bound_socket()
    async with (
        _serve(_hello_app(), (sock, leaf.server_ssl_context())),
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT),
    ):
        for context in (stranger, system):
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"https://127.0.0.1:{port}/", ssl=context):
                    pass
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not a name it is for
            async with session.get(
                f"https://127.0.0.1:{port}/",
                ssl=ca.client_ssl_context(),
                server_hostname="example.test",
            ):
                pass


async def test_https_server_with_self_signed_certificate() -> None:
    own = create_self_signed(CertificateSpec(hosts=["127.0.0.1"], key_type=KeyType.EC))
    sock, port = _bound_socket()
    async with (
        _serve(_hello_app(), (sock, own.server_ssl_context())),
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT),
        session.get(f"https://127.0.0.1:{port}/", ssl=client_ssl_context(own)) as response,
    ):
        assert await response.text() == "hello over https"


async def test_middleware_redirects_plain_http_only(ca: LocalCA, leaf: IssuedCertificate) -> None:
    http_sock, http_port = _bound_socket()
    https_sock, https_port = _bound_socket()
    app = web.Application(middlewares=[https_redirect_middleware(https_port)])
    app.router.add_get("/", _hello)
    async with (
        _serve(app, (http_sock, None), (https_sock, leaf.server_ssl_context())),
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT),
    ):
        async with session.get(
            f"http://127.0.0.1:{http_port}/?a=1", allow_redirects=False
        ) as response:
            assert response.status == 308
            location = response.headers["Location"]
            assert location == f"https://127.0.0.1:{https_port}/?a=1"
        # following the redirect lands on the HTTPS site, trusted through the CA
        async with session.get(
            f"http://127.0.0.1:{http_port}/", ssl=ca.client_ssl_context()
        ) as response:
            assert response.status == 200
            assert str(response.url) == f"https://127.0.0.1:{https_port}/"
            assert await response.text() == "hello over https"


def test_docstring_examples() -> None:
    result = doctest.testmod(rtckit.https, raise_on_error=False)
    assert result.attempted >= 2
    assert result.failed == 0
