"""Room tokens (TokenAuth, OpenAuth) and the ``rtckit token`` / ``rtckit signaling`` CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from rtckit.cli import main
from rtckit.errors import AuthError, ConfigurationError
from rtckit.signaling.auth import Authenticator, Grant, OpenAuth, TokenAuth
from rtckit.signaling.protocol import ErrorCode

SECRET = "0123456789abcdef-0123456789abcdef-test-secret"
NOW = 1_800_000_000.0
SRC = Path(__file__).resolve().parent.parent / "src"


def auth(**kwargs: object) -> TokenAuth:
    return TokenAuth(secret=SECRET, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def refused(checker: TokenAuth, room: str, token: str | None) -> str | int | None:
    with pytest.raises(AuthError) as info:
        checker.authenticate(room, token)
    assert isinstance(info.value, PermissionError)
    return info.value.code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_token() -> None:
    checker = auth()
    token = checker.mint(room="r", identity="ada", permissions=["publish"])
    assert checker.authenticate("r", token) == Grant(identity="ada", permissions=("publish",))
    assert isinstance(checker, Authenticator)


def test_default_permissions() -> None:
    checker = auth()
    token = jwt.encode({"room": "r", "sub": "x", "exp": NOW + 10}, SECRET, algorithm="HS256")
    assert checker.authenticate("r", token).permissions == ("publish", "subscribe")


def test_wrong_room() -> None:
    checker = auth()
    assert refused(checker, "B", checker.mint(room="A", identity="x")) == ErrorCode.AUTH_WRONG_ROOM


def test_expired_and_leeway() -> None:
    token = auth().mint(room="r", identity="x", ttl=10)
    later = TokenAuth(secret=SECRET, clock=lambda: NOW + 10)
    assert refused(later, "r", token) == ErrorCode.AUTH_EXPIRED
    lenient = TokenAuth(secret=SECRET, clock=lambda: NOW + 10, leeway=5)
    assert lenient.authenticate("r", token).identity == "x"


def test_not_yet_valid() -> None:
    token = auth().mint(room="r", identity="x", not_before=NOW + 100)
    assert refused(auth(), "r", token) == ErrorCode.AUTH_NOT_YET_VALID


def test_forged_with_another_secret() -> None:
    other = TokenAuth(secret="another-secret-of-sufficient-length-xyz", clock=lambda: NOW)
    assert refused(auth(), "r", other.mint(room="r", identity="x")) == ErrorCode.AUTH_INVALID


def test_tampered_payload() -> None:
    token = auth().mint(room="r", identity="x", permissions=["subscribe"])
    header, _payload, signature = token.split(".")
    claims = {"room": "r", "sub": "x", "exp": NOW + 100, "permissions": ["admin"]}
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert refused(auth(), "r", forged) == ErrorCode.AUTH_INVALID


def test_alg_none_is_refused() -> None:
    claims = {"room": "r", "sub": "x", "exp": NOW + 100}
    for alg in ("none", "None", "NONE"):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        unsigned = f"{header}.{_b64(json.dumps(claims).encode())}."
        assert refused(auth(), "r", unsigned) == ErrorCode.AUTH_INVALID


def test_other_algorithm_is_refused() -> None:
    token = jwt.encode({"room": "r", "sub": "x", "exp": NOW + 100}, SECRET * 2, "HS512")
    assert refused(auth(), "r", token) == ErrorCode.AUTH_INVALID


@pytest.mark.parametrize(
    "claims",
    [
        {"room": "r", "sub": "x"},  # no exp
        {"sub": "x", "exp": NOW + 100},  # no room
        {"room": "r", "exp": NOW + 100},  # no identity
        {"room": "r", "sub": "x", "exp": "tomorrow"},
        {"room": "r", "sub": 7, "exp": NOW + 100},
        {"room": "r", "sub": "x", "exp": NOW + 100, "permissions": "admin"},
        {"room": "r", "sub": "x", "exp": NOW + 100, "permissions": ["root"]},
    ],
)
def test_bad_claims(claims: dict[str, object]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert refused(auth(), "r", token) == ErrorCode.AUTH_INVALID


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "ey.ey.ey", "é.é.é"])
def test_malformed(token: str) -> None:
    expected = ErrorCode.AUTH_REQUIRED if token == "" else ErrorCode.AUTH_INVALID
    assert refused(auth(), "r", token) == expected


def test_missing_token() -> None:
    assert refused(auth(), "r", None) == ErrorCode.AUTH_REQUIRED


def test_identity_optional_when_configured() -> None:
    token = jwt.encode({"room": "r", "exp": NOW + 100}, SECRET, algorithm="HS256")
    assert auth(require_identity=False).authenticate("r", token).identity is None


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        TokenAuth(secret="short")
    with pytest.raises(ValueError, match="must be in"):
        TokenAuth(secret=SECRET, algorithm="none")
    with pytest.raises(ConfigurationError):
        auth().mint(room="r", identity="x", permissions=["root"])
    with pytest.raises(ConfigurationError):
        auth().mint(room="r", identity="x", ttl=0)
    assert "secret" not in repr(auth()).split("clock")[0].replace("secret=", "")


def test_open_auth_admits_everyone_without_admin() -> None:
    grant = OpenAuth().authenticate("any", None)
    assert grant.identity is None
    assert "admin" not in grant.permissions


# --- command line ------------------------------------------------------------------------


def test_cli_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "token",
                "--secret",
                SECRET,
                "--room",
                "r",
                "--identity",
                "ada",
                "--ttl",
                "60",
                "--permissions",
                "subscribe",
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    grant = TokenAuth(secret=SECRET).authenticate("r", token)
    assert grant == Grant(identity="ada", permissions=("subscribe",))


def test_cli_token_needs_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RTCKIT_SIGNALING_SECRET", raising=False)
    assert main(["token", "--room", "r", "--identity", "x"]) == 2
    assert "secret" in capsys.readouterr().err


def test_cli_signaling_refuses_to_start_without_auth_mode(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RTCKIT_SIGNALING_SECRET", raising=False)
    assert main(["signaling", "--port", "0"]) == 2
    assert "--open" in capsys.readouterr().err


async def test_cli_signaling_serves_until_sigterm(tmp_path: Path) -> None:
    from rtckit.signaling.client import SignalingClient

    src = SRC
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtckit",
        "signaling",
        "--port",
        "0",
        "--secret",
        SECRET,
        "--room",
        "demo:sfu",
        "--no-create-rooms",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        async with asyncio.timeout(30):
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode()
            assert "room tokens" in line, line
            url = line.split()[3]
            token = TokenAuth(secret=SECRET).mint(room="demo", identity="ada")
            async with SignalingClient.connect(url, room="demo", token=token) as client:
                assert client.topology == "sfu"
                assert client.identity == "ada"
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
