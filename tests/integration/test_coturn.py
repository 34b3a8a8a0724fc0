"""coturn management (rtckit.coturn) with real coturn processes: start, credentials, TLS,
failures, the CLI, and rtckit's ICE configuration relayed through it (the configuration
rendering is tested in tests/test_coturn.py)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import random
import shutil
import signal
import ssl
import struct
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rtckit import SystemComponentError, _aiortc
from rtckit.coturn import (
    CoturnConfig,
    CoturnProcess,
    run_coturn,
)
from rtckit.ice import IceConfig
from rtckit.ice.turn import TurnRestAuth
from rtckit.peer.connection import create_peer_connection
from rtckit.stun.codec import MessageClass, binding_request, parse_message
from rtckit.stun.server import stun_binding
from rtckit.testing import require_executable
from rtckit.testing.coturn import free_port, turnutils_uclient
from test_coturn import SECRET, base_config

ROOT = Path(__file__).resolve().parents[2]


def lab_config(**changes: object) -> CoturnConfig:
    relay_base = random.randrange(40000, 48000, 40)
    arguments: dict[str, object] = {
        "listening_port": free_port(),
        "min_port": relay_base,
        "max_port": relay_base + 39,
        "startup_timeout": 15.0,
    }
    arguments.update(changes)
    return base_config(**arguments)


def rest_credential(secret: str, user: str, lifetime: int) -> tuple[str, str]:
    """TURN REST credential computed here, independently of rtckit.ice.turn."""
    username = f"{int(time.time()) + lifetime}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


async def uclient(
    port: int, username: str, *, password: str | None = None, secret: str | None = None
) -> tuple[int, str]:
    """coturn's own client on 127.0.0.1:*port*."""
    require_executable("turnutils_uclient", hint="apt-get install coturn")
    return await turnutils_uclient(
        "127.0.0.1", port, username=username, password=password, secret=secret
    )


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_coturn_starts_answers_and_stops() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    config = lab_config()
    async with run_coturn(config) as turn:
        pid = turn.pid
        assert pid is not None
        conf = turn.config_path
        assert conf is not None
        assert conf.stat().st_mode & 0o777 == 0o600
        assert f"static-auth-secret={SECRET}" in conf.read_text(encoding="utf-8")
        for transport in ("udp", "tcp"):
            async with asyncio.timeout(10):
                response = await stun_binding(
                    "127.0.0.1",
                    config.listening_port,
                    transport=transport,
                )
            assert response.message_class is MessageClass.SUCCESS_RESPONSE
            assert response.mapped_address() is not None
        assert any("Black listing: 169.254.169.254" in line for line in turn.log_tail(500))
    assert turn.returncode is not None
    assert _gone(pid)
    assert not conf.parent.exists()
    await turn.aclose()  # idempotent


async def test_rest_credentials_allocate_with_turnutils_uclient() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    config = lab_config(allow_loopback_peers=True)
    port = config.listening_port
    async with run_coturn(config):
        username, password = rest_credential(SECRET, "alice", 600)
        status, output = await uclient(port, username, password=password)
        assert status == 0, output

        username, password = rest_credential("not-the-secret", "alice", 600)
        status, output = await uclient(port, username, password=password)
        assert status != 0
        assert "Cannot complete Allocation" in output

        username, password = rest_credential(SECRET, "alice", -60)  # expired
        status, output = await uclient(port, username, password=password)
        assert status != 0

        status, output = await uclient(port, "bob", secret="wrong")
        assert status != 0

        # turnutils_uclient's own REST computation from the right secret agrees.
        status, output = await uclient(port, "bob", secret=SECRET)
        assert status == 0, output


async def test_loopback_peers_are_denied_by_default() -> None:
    """Without the lab exception, coturn refuses to relay to 127.0.0.1 (403 Forbidden IP)."""
    require_executable("turnserver", hint="apt-get install coturn")
    config = lab_config()
    async with run_coturn(config):
        username, password = rest_credential(SECRET, "alice", 600)
        status, output = await uclient(config.listening_port, username, password=password)
    assert status != 0
    assert "403" in output, output


def _write_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "turn.pem", directory / "turn.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_coturn_serves_tls_with_pem_files(tmp_path: Path) -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    cert, key = _write_certificate(tmp_path)
    config = lab_config(tls_cert=cert, tls_key=key, tls_listening_port=free_port())
    context = ssl.create_default_context(cafile=str(cert))
    async with run_coturn(config):
        request = binding_request()
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", config.tls_listening_port, ssl=context, server_hostname="localhost"
            )
            try:
                writer.write(request)
                await writer.drain()
                header = await reader.readexactly(20)
                body = await reader.readexactly(struct.unpack_from("!H", header, 2)[0])
            finally:
                writer.close()
                await writer.wait_closed()
    response = parse_message(header + body)
    assert response.message_class is MessageClass.SUCCESS_RESPONSE
    assert response.transaction_id == request[8:20]


async def test_startup_timeout_reports_the_log_tail() -> None:
    """coturn runs but never answers (listeners off): a clear error with its log."""
    require_executable("turnserver", hint="apt-get install coturn")
    config = lab_config(extra_options=["no-udp", "no-tcp"], startup_timeout=1.5)
    process = CoturnProcess(config)
    with pytest.raises(SystemComponentError, match="did not answer STUN") as info:
        await process.start()
    assert "last log lines" in str(info.value)
    assert process.pid is not None
    assert _gone(process.pid)


async def test_early_exit_is_reported() -> None:
    false = shutil.which("false")
    assert false is not None
    process = CoturnProcess(lab_config(executable=false))
    with pytest.raises(SystemComponentError, match="exited with status 1 before answering"):
        await process.start()


async def test_cli_turn_serve_runs_until_interrupted() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    port = free_port()
    script = (
        "import sys, argparse\n"
        "from rtckit.cli.turn_serve import register_serve\n"
        "parser = argparse.ArgumentParser()\n"
        "turn = parser.add_subparsers().add_parser('turn')\n"
        "register_serve(turn.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.handler(args))\n"
    )
    relay_base = random.randrange(40000, 48000, 40)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        "turn",
        "serve",
        "--realm",
        "lab.test",
        "--port",
        str(port),
        "--min-port",
        str(relay_base),
        "--max-port",
        str(relay_base + 39),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "RTCKIT_TURN_SECRET": SECRET},
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
            assert first.startswith("rtckit turn serve: coturn running, pid "), first
            coturn_pid = int(first.rsplit(" ", 1)[1])
            assert (
                (await process.stdout.readline())
                .decode()
                .strip()
                .endswith(f"stun:127.0.0.1:{port}")
            )
            response = await stun_binding("127.0.0.1", port)
            assert response.message_class is MessageClass.SUCCESS_RESPONSE
            process.send_signal(signal.SIGINT)
            rest, errors = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, errors.decode()
    assert "rtckit turn serve: stopped" in rest.decode()
    assert _gone(coturn_pid)


async def test_coturn_dies_with_its_parent() -> None:
    """kill -9 of the Python process that started coturn leaves no orphan turnserver."""
    require_executable("turnserver", hint="apt-get install coturn")
    config = lab_config()
    script = (
        "import asyncio, sys\n"
        "from rtckit.coturn import CoturnConfig, CoturnProcess\n"
        "async def main():\n"
        f"    config = CoturnConfig(realm='lab.test', static_auth_secrets=['{SECRET}'],\n"
        f"        listening_port={config.listening_port},\n"
        f"        min_port={config.min_port}, max_port={config.max_port})\n"
        "    turn = CoturnProcess(config)\n"
        "    await turn.start()\n"
        "    print(turn.pid, turn.config_path.parent, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert parent.stdout is not None
    coturn_pid = 0
    directory: Path | None = None
    try:
        async with asyncio.timeout(30):
            pid_text, directory_text = (await parent.stdout.readline()).decode().split()
            coturn_pid, directory = int(pid_text), Path(directory_text)
            assert not _gone(coturn_pid)
            parent.kill()
            await parent.wait()
            for _ in range(400):  # bounded: 20 s at most, inside the 30 s timeout
                if _gone(coturn_pid):
                    break
                await asyncio.sleep(0.05)
            assert _gone(coturn_pid), "coturn outlived the process that started it"
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if coturn_pid and not _gone(coturn_pid):
            os.kill(coturn_pid, signal.SIGKILL)
        if directory is not None:  # kill -9 left no chance to remove it
            shutil.rmtree(directory, ignore_errors=True)


# --- from rtckit's ICE configuration to a running coturn and relayed peers ---------------------


async def test_ice_config_to_coturn_to_relay_only_peers() -> None:
    """rtckit's ICE config -> coturn config -> running coturn -> clients' config -> relay."""
    require_executable("turnserver", hint="apt-get install coturn")
    auth = TurnRestAuth(secrets=[SECRET], ttl=600)
    port = free_port()
    deployment = IceConfig(
        servers=[auth.ice_server([f"turn:127.0.0.1:{port}?transport=udp"], "ops")],
        transport_policy="relay",
    )
    relay_base = random.randrange(40000, 48000, 40)
    config = CoturnConfig.from_ice(
        deployment,
        auth=auth,
        realm="lab.test",
        allow_loopback_peers=True,  # both peers on this machine
        min_port=relay_base,
        max_port=relay_base + 39,
    )
    assert (config.listening_ips, config.udp, config.tcp) == (("127.0.0.1",), True, False)
    async with run_coturn(config):
        clients = [
            config.ice_config(user=user, auth=auth, transport_policy="relay")
            for user in ("alice", "bob")
        ]
        a, b = (create_peer_connection(ice) for ice in clients)
        try:
            channel = a.createDataChannel("x")
            opened = asyncio.Event()
            channel.on("open", opened.set)
            async with asyncio.timeout(20):
                await a.setLocalDescription(await a.createOffer())
                await b.setRemoteDescription(a.localDescription)
                await b.setLocalDescription(await b.createAnswer())
                await a.setRemoteDescription(b.localDescription)
                await opened.wait()
            for pc in (a, b):
                assert pc.sctp is not None
                ((local, remote),) = _aiortc.nominated_pairs(pc.sctp.transport.transport)
                assert (local.type, remote.type) == ("relay", "relay")
                assert local.host == "127.0.0.1"
        finally:
            await a.close()
            await b.close()
