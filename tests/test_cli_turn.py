"""``rtckit turn credentials``."""

from __future__ import annotations

import json
import time

import pytest

from rtckit.cli import main
from rtckit.ice import IceConfig, IceTransportPolicy
from rtckit.ice.turn import TurnRestAuth


def test_credentials_text(capsys: pytest.CaptureFixture[str]) -> None:
    before = int(time.time())
    assert main(["turn", "credentials", "--secret", "s", "--user", "alice", "--ttl", "600"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("username: ")
    assert lines[1].startswith("password: ")
    assert lines[2].startswith("expires:  ")
    username = lines[0].removeprefix("username: ")
    password = lines[1].removeprefix("password: ")
    creds = TurnRestAuth(secrets=["s"]).verify(username, password)
    assert creds.user == "alice"
    assert before + 600 <= creds.expires_at <= int(time.time()) + 600


def test_credentials_json_secret_from_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTCKIT_TURN_SECRET", "from-env")
    assert main(["turn", "credentials", "--user", "bob", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"username", "password", "ttl", "expires_at"}
    assert out["ttl"] == 86400
    assert TurnRestAuth(secrets=["from-env"]).verify(out["username"], out["password"]).user == "bob"


def test_credentials_browser_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["turn", "credentials", "--secret", "s", "--user", "carol", "--ttl", "60"]
    argv += ["--uri", "turn:turn.example.org", "--uri", "turns:turn.example.org:443", "--relay"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    config = IceConfig.from_dict(data)
    assert config.transport_policy is IceTransportPolicy.RELAY
    (server,) = data["iceServers"]
    assert server["urls"] == ["turn:turn.example.org", "turns:turn.example.org:443"]
    assert (
        TurnRestAuth(secrets=["s"]).verify(server["username"], server["credential"]).user == "carol"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "a"], "give --secret or set RTCKIT_TURN_SECRET"),
        (["--user", "a", "--secret", "s", "--ttl", "0"], "invalid TURN credential ttl 0"),
        (["--user", "a", "--secret", "s", "--uri", "stun:x"], "not 'stun:x'"),
        (["--user", "a", "--secret", "s", "--uri", "turn://x"], "have no '//'"),
        (["--user", "a", "--secret", "s", "--relay"], "--relay needs at least one --uri"),
    ],
)
def test_credentials_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RTCKIT_TURN_SECRET", raising=False)
    assert main(["turn", "credentials", *argv]) == 2
    assert message in capsys.readouterr().err


def test_turn_without_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["turn"]) == 2
    assert "credentials" in capsys.readouterr().err


def test_user_is_required() -> None:
    with pytest.raises(SystemExit) as info:
        main(["turn", "credentials", "--secret", "s"])
    assert info.value.code == 2
