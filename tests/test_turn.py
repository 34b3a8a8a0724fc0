"""rtckit.ice.turn: TURN REST credentials as coturn's use-auth-secret checks them (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess

import pytest

from rtckit import ConfigurationError, CredentialError
from rtckit.ice import IceConfig, parse_uri
from rtckit.ice.turn import TurnCredentials, TurnRestAuth, ice_server, password_for

NOW = 1_700_000_000.25


def clock() -> float:
    return NOW


def test_issue_username_and_password_format() -> None:
    auth = TurnRestAuth(secrets=["north"], ttl=3600, clock=clock)
    creds = auth.issue("alice")
    assert creds.username == "1700003600:alice"
    assert creds.user == "alice"
    assert creds.expires_at == 1_700_003_600
    assert creds.ttl_at(NOW) == pytest.approx(3599.75)
    expected = base64.b64encode(
        hmac.new(b"north", b"1700003600:alice", hashlib.sha1).digest()
    ).decode()
    assert creds.password == expected
    # A fixed vector, so that a change of the algorithm cannot go unnoticed.
    assert password_for("north", "1700003600:alice") == expected
    assert password_for(b"north", "1700003600:alice") == expected


def test_password_matches_openssl() -> None:
    """An independent implementation (openssl) computes the same password."""
    result = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", "north", "-binary"],
        input=b"1700003600:alice",
        capture_output=True,
        check=True,
        timeout=10,
    )
    assert base64.b64encode(result.stdout).decode() == password_for("north", "1700003600:alice")


def test_issue_with_own_ttl_empty_user_and_separator() -> None:
    auth = TurnRestAuth(secrets="s", clock=clock, separator="_")
    assert auth.issue("bob", ttl=10).username == "1700000010_bob"
    assert auth.issue("").username == "1700086400"
    assert auth.verify(auth.issue("").username, auth.issue("").password).user == ""


def test_verify_accepts_what_it_issues() -> None:
    auth = TurnRestAuth(secrets=["s"], clock=clock)
    creds = auth.issue("carol:with:colons")
    assert auth.verify(creds.username, creds.password) == creds


def test_rotation_issues_with_first_and_verifies_with_all() -> None:
    old = TurnRestAuth(secrets=["old"], clock=clock)
    rotated = TurnRestAuth(secrets=["new", "old"], clock=clock)
    new_only = TurnRestAuth(secrets=["new"], clock=clock)
    issued_before = old.issue("a")
    issued_after = rotated.issue("a")
    assert issued_after.password == new_only.issue("a").password
    assert rotated.verify(issued_before.username, issued_before.password).user == "a"
    assert rotated.verify(issued_after.username, issued_after.password).user == "a"
    with pytest.raises(CredentialError, match="forged"):
        new_only.verify(issued_before.username, issued_before.password)


def test_expired_is_refused() -> None:
    now = [NOW]
    auth = TurnRestAuth(secrets=["s"], ttl=60, clock=lambda: now[0])
    creds = auth.issue("a")
    now[0] += 60
    assert auth.verify(creds.username, creds.password) == creds  # the last valid second
    now[0] += 1.5
    with pytest.raises(CredentialError, match=r"expired TURN credential '1700000060:a'"):
        auth.verify(creds.username, creds.password)


@pytest.mark.parametrize(
    "username",
    ["alice", "alice:1700000060", "", ":alice", "-1700000060:alice", "17000\u06600060:a", "0x10:a"],
)
def test_malformed_username_is_refused(username: str) -> None:
    auth = TurnRestAuth(secrets=["s"], clock=clock)
    with pytest.raises(CredentialError, match="malformed TURN username"):
        auth.verify(username, password_for("s", username))


def test_forged_is_refused_even_when_expired() -> None:
    auth = TurnRestAuth(secrets=["s"], clock=clock)
    with pytest.raises(CredentialError, match="forged"):
        auth.verify("1:alice", "AAAA")
    creds = auth.issue("a")
    with pytest.raises(CredentialError, match="forged"):
        auth.verify(creds.username.replace(":a", ":b"), creds.password)
    assert issubclass(CredentialError, PermissionError)


def test_verify_compares_in_constant_time_against_every_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    auth = TurnRestAuth(secrets=["s1", "s2", "s3"], clock=clock)
    creds = auth.issue("a")
    auth.verify(creds.username, creds.password)
    assert len(calls) == 3  # no early exit on the first (matching) secret
    with pytest.raises(CredentialError):
        auth.verify(creds.username, "wrong")
    assert len(calls) == 6


def test_secrets_are_not_in_repr() -> None:
    auth = TurnRestAuth(secrets=["topsecret"], clock=clock)
    creds = auth.issue("a")
    assert "topsecret" not in repr(auth)
    assert creds.password not in repr(creds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secrets": []}, "at least one secret"),
        ({"secrets": [""]}, "non-empty"),
        ({"secrets": [5]}, "non-empty string"),
        ({"secrets": ["s"], "ttl": 0}, "invalid TURN credential ttl 0"),
        ({"secrets": ["s"], "ttl": 1.5}, "invalid TURN credential ttl 1.5"),
        ({"secrets": ["s"], "separator": "::"}, "separator"),
        ({"secrets": ["s"], "separator": "1"}, "separator"),
    ],
)
def test_bad_auth_config(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TurnRestAuth(**kwargs)  # type: ignore[arg-type]


def test_bad_issue_arguments() -> None:
    auth = TurnRestAuth(secrets=["s"])
    with pytest.raises(ConfigurationError, match="ttl -1"):
        auth.issue("a", ttl=-1)
    with pytest.raises(ConfigurationError, match="TURN user"):
        auth.issue(None)  # type: ignore[arg-type]


def test_ice_server_helper() -> None:
    auth = TurnRestAuth(secrets=["s"], clock=clock)
    creds = auth.issue("a")
    server = ice_server(["turn:t", "turns:t:443"], creds)
    assert server.urls == (parse_uri("turn:t"), parse_uri("turns:t:443"))
    assert (server.username, server.credential) == (creds.username, creds.password)
    assert ice_server("turn:t", creds).urls == (parse_uri("turn:t"),)
    assert auth.ice_server(["turn:t", "turns:t:443"], "a") == server
    config = IceConfig(servers=[server], transport_policy="relay")
    assert config.to_browser()["iceServers"][0]["credential"] == creds.password
    with pytest.raises(ConfigurationError, match="not 'stun:t'"):
        ice_server(["turn:t", "stun:t"], creds)


def test_credentials_are_frozen() -> None:
    creds = TurnCredentials(username="1:a", password="p", user="a", expires_at=1)
    with pytest.raises(AttributeError):
        creds.user = "b"  # type: ignore[misc]
