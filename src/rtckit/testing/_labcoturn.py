"""Start coturn for NAT lab tests and benchmarks (in a lab namespace or on loopback).

A private stand-in for rtckit's coturn management: :func:`coturn` is the one place to switch to
it, given a way to start the child inside a namespace (``NatLab.spawn``). The process is
started through *spawn*, so the same code runs coturn in the lab's ``pub`` namespace or on
loopback; it is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["PRIVATE_RANGES", "Coturn", "coturn", "free_port", "make_cert"]

Spawn = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]

PRIVATE_RANGES = (
    "10.0.0.0-10.255.255.255",
    "172.16.0.0-172.31.255.255",
    "192.168.0.0-192.168.255.255",
)


@attrs.frozen(kw_only=True)
class Coturn:
    ip: str
    port: int
    tls_port: int | None
    secret: str
    log: list[str]

    def uri(self, scheme: str = "turn", transport: str | None = None) -> str:
        port = self.tls_port if scheme.endswith("s") else self.port
        uri = f"{scheme}:{self.ip}:{port}"
        return uri + (f"?transport={transport}" if transport else "")


def make_cert(directory: Path, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for *ip* (its own CA): returns (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtckit natlab")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port(ip: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on *ip* right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((ip, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@contextlib.asynccontextmanager
async def coturn(
    spawn: Spawn,
    workdir: Path,
    *,
    ip: str,
    secret: str,
    port: int = 3478,
    tls_port: int | None = None,
    min_port: int = 49160,
    max_port: int = 49260,
    extra: Sequence[str] = (),
) -> AsyncIterator[Coturn]:
    """Run coturn with TURN REST auth on *ip*; yield once it listens; stop it by PID."""
    argv = [
        "turnserver", "-n", "--no-cli", "--log-file=stdout", "--simple-log", "-v",
        f"--listening-ip={ip}", f"--relay-ip={ip}", f"--listening-port={port}",
        f"--min-port={min_port}", f"--max-port={max_port}", "--realm=lab.test",
        "--fingerprint", "--no-dtls", "--no-rfc5780", "--no-multicast-peers",
        f"--pidfile={workdir / 'turnserver.pid'}", f"--userdb={workdir / 'turndb.sqlite'}",
        "--use-auth-secret", f"--static-auth-secret={secret}",
        *(f"--denied-peer-ip={r}" for r in PRIVATE_RANGES),
        *extra,
    ]  # fmt: skip
    if tls_port is not None:
        cert, key = make_cert(workdir, ip)
        argv += [f"--tls-listening-port={tls_port}", f"--cert={cert}", f"--pkey={key}"]
    else:
        argv.append("--no-tls")
    proc = await spawn(argv)
    assert proc.stdout is not None
    log: list[str] = []
    ready = asyncio.Event()
    wanted = [f"UDP listener opened on: {ip}:{port}", "DB connection success"]

    async def drain() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            if all(any(w in seen for seen in log) for w in wanted):
                ready.set()

    drainer = asyncio.create_task(drain())
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield Coturn(ip=ip, port=port, tls_port=tls_port, secret=secret, log=log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(3):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
