"""Time-limited TURN credentials of the "TURN REST API" (pure, no I/O).

This is what coturn checks with ``use-auth-secret`` and ``static-auth-secret=<secret>``
(draft-uberti-behave-turn-rest): the application and coturn share a secret; the application
hands each client

* username: ``"<expiry-unix-time>:<user>"`` (the separator is coturn's ``rest-api-separator``,
  ``:`` by default),
* password: ``base64(HMAC-SHA1(secret, username))``,

and coturn refuses the credential (401) once the expiry time has passed. Nothing is stored on
either side. To rotate the secret, give coturn both secrets (``static-auth-secret`` twice),
put the new one first in ``TurnRestAuth.secrets``, and drop the old one once every
credential issued with it has expired.

Example::

    auth = TurnRestAuth(secrets=["s3cret"], ttl=3600)
    creds = auth.issue("alice")
    server = ice_server(["turn:turn.example.org"], creds)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from typing import Final

import attrs

from rtckit.errors import ConfigurationError, CredentialError
from rtckit.ice.servers import IceServer, IceServerUri

__all__ = [
    "DEFAULT_SEPARATOR",
    "DEFAULT_TTL",
    "TurnCredentials",
    "TurnRestAuth",
    "ice_server",
    "password_for",
]

DEFAULT_TTL: Final = 86400
"""Default lifetime of issued credentials, in seconds (one day)."""
DEFAULT_SEPARATOR: Final = ":"
"""coturn's default ``rest-api-separator``."""


def password_for(secret: str | bytes, username: str) -> str:
    """Return ``base64(HMAC-SHA1(secret, username))``, the password coturn expects."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@attrs.frozen(kw_only=True)
class TurnCredentials:
    """A TURN REST credential; give ``username`` and ``password`` to the client."""

    username: str
    password: str = attrs.field(repr=False)
    user: str
    """The user part of ``username`` (may be empty)."""
    expires_at: int
    """Unix time after which coturn refuses the credential."""

    def ttl_at(self, now: float) -> float:
        """Seconds left at time *now* (negative once expired)."""
        return self.expires_at - now


def _to_secrets(value: Iterable[str | bytes] | str | bytes) -> tuple[bytes, ...]:
    if isinstance(value, str | bytes):
        value = [value]
    secrets: list[bytes] = []
    for item in value:
        secret: object = item.encode() if isinstance(item, str) else item
        if not isinstance(secret, bytes) or not secret:
            raise ConfigurationError("a TURN REST secret must be a non-empty string")
        secrets.append(secret)
    if not secrets:
        raise ConfigurationError("TurnRestAuth needs at least one secret")
    return tuple(secrets)


def _check_ttl(_instance: object, _attribute: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(
            f"invalid TURN credential ttl {value!r}: expected a positive number of seconds"
        )


def _check_separator(_instance: object, _attribute: object, value: object) -> None:
    if not isinstance(value, str) or len(value) != 1 or value.isdigit():
        raise ConfigurationError(
            f"invalid TURN REST separator {value!r}: expected one non-digit character"
        )


@attrs.frozen(kw_only=True)
class TurnRestAuth:
    """Issue and verify TURN REST credentials with one or more shared secrets.

    ``secrets`` lists the secrets newest first: :meth:`issue` signs with the first one,
    :meth:`verify` accepts any of them (rotation). ``clock`` returns the current Unix time
    (injectable for tests). Secrets never appear in ``repr()``.
    """

    secrets: tuple[bytes, ...] = attrs.field(converter=_to_secrets, repr=False)
    ttl: int = attrs.field(default=DEFAULT_TTL, validator=_check_ttl)
    separator: str = attrs.field(default=DEFAULT_SEPARATOR, validator=_check_separator)
    clock: Callable[[], float] = attrs.field(default=time.time, repr=False, eq=False)

    def issue(self, user: str, *, ttl: int | None = None) -> TurnCredentials:
        """Return a credential for *user*, valid for *ttl* (default: the ``ttl`` field) seconds."""
        if ttl is not None:
            _check_ttl(None, None, ttl)
        if not isinstance(user, str):
            raise ConfigurationError(f"invalid TURN user {user!r}: expected a string")
        expires_at = int(self.clock()) + (self.ttl if ttl is None else ttl)
        username = f"{expires_at}{self.separator}{user}" if user else str(expires_at)
        return TurnCredentials(
            username=username,
            password=password_for(self.secrets[0], username),
            user=user,
            expires_at=expires_at,
        )

    def verify(self, username: str, password: str) -> TurnCredentials:
        """Check a credential as coturn would: return it, or raise a ``CredentialError``.

        The error says *malformed* (username not ``"<digits>:<user>"``), *forged* (the password
        matches none of the secrets) or *expired*. Passwords are compared in constant time,
        against every secret.
        """
        stamp, _sep, user = username.partition(self.separator)
        if not stamp.isascii() or not stamp.isdigit():
            raise CredentialError(
                f"malformed TURN username {username!r}: expected '<expiry-unix-time>"
                f"{self.separator}<user>'"
            )
        given = password.encode()
        matched = False
        for secret in self.secrets:  # no early exit: the time does not tell which one matched
            expected = password_for(secret, username).encode()
            matched |= hmac.compare_digest(expected, given)
        if not matched:
            raise CredentialError(
                f"forged TURN credential for {username!r}: the password does not match"
            )
        expires_at = int(stamp)
        now = int(self.clock())  # coturn compares with whole seconds
        if expires_at < now:
            raise CredentialError(
                f"expired TURN credential {username!r}: expired {now - expires_at} s ago"
            )
        return TurnCredentials(
            username=username, password=password, user=user, expires_at=expires_at
        )

    def ice_server(
        self, uris: Iterable[str | IceServerUri], user: str, *, ttl: int | None = None
    ) -> IceServer:
        """Issue a credential for *user* and return an :class:`~rtckit.ice.IceServer` with it."""
        return ice_server(uris, self.issue(user, ttl=ttl))


def ice_server(uris: Iterable[str | IceServerUri] | str, credentials: TurnCredentials) -> IceServer:
    """Return an :class:`~rtckit.ice.IceServer` for TURN *uris* with *credentials*.

    Raises :class:`~rtckit.errors.ConfigurationError` if a URI is not ``turn:``/``turns:``.
    """
    server = IceServer(urls=uris, username=credentials.username, credential=credentials.password)
    for uri in server.urls:
        if not uri.is_turn:
            raise ConfigurationError(
                f"TURN credentials go with turn: or turns: URIs, not {str(uri)!r}"
            )
    return server
