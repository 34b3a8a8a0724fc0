"""Room tokens: who may join which room, as whom, with which permissions (pure, no I/O).

A room token is a JWT signed with a shared secret (HS256 by default) carrying:

* ``room``: the room it admits to (a token for room A is refused in room B);
* ``sub``: the identity of the holder (shown to other peers);
* ``exp`` and ``nbf`` (optional ``iat``): validity period, in seconds since the epoch;
* ``permissions``: a list among ``publish``, ``subscribe``, ``admin`` (default: publish and
  subscribe).

:class:`TokenAuth` verifies them; :class:`OpenAuth` admits everyone without a token and exists
only for local demos and tests (a server config never defaults to it). Both implement the
:class:`Authenticator` protocol, which a server calls for every ``join``.

.. code-block:: python

    import secrets

    auth = TokenAuth(secret=secrets.token_urlsafe(32))  # at least 32 bytes
    token = auth.mint(room="lobby", identity="alice", ttl=3600)
    grant = auth.authenticate("lobby", token)  # Grant(identity='alice', permissions=(...))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import attrs
import jwt

from rtckit.errors import AuthError, ConfigurationError
from rtckit.signaling.protocol import MAX_ID_LENGTH, ErrorCode

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_PERMISSIONS",
    "ENV_SIGNALING_SECRET",
    "MIN_SECRET_LENGTH",
    "Authenticator",
    "Grant",
    "OpenAuth",
    "TokenAuth",
]

#: The environment variable holding the room-token secret when none is given otherwise
#: (``rtckit signaling``, ``rtckit token``, ``rtckit serve``'s ``[auth]`` table).
ENV_SIGNALING_SECRET = "RTCKIT_SIGNALING_SECRET"  # noqa: S105 - a variable name, not a secret

#: Permissions a token may carry.
ALL_PERMISSIONS: tuple[str, ...] = ("admin", "publish", "subscribe")
#: Permissions of a token without a ``permissions`` claim.
DEFAULT_PERMISSIONS: tuple[str, ...] = ("publish", "subscribe")

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


@attrs.frozen(kw_only=True)
class Grant:
    """What an accepted token allows: the holder's identity and permissions."""

    identity: str | None = None
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS


@runtime_checkable
class Authenticator(Protocol):
    """Decides whether a ``join`` to *room* with *token* is admitted."""

    def authenticate(self, room: str, token: str | None) -> Grant:
        """Return the grant, or raise :class:`~rtckit.errors.AuthError` with a ``code``."""
        ...


@attrs.frozen(kw_only=True)
class OpenAuth:
    """Admit everyone, with or without a token (tokens are ignored). For local demos only."""

    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS

    def authenticate(self, room: str, token: str | None) -> Grant:
        """Return a grant with no identity and these ``permissions``."""
        return Grant(identity=None, permissions=self.permissions)


def _check_permissions(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    unknown = set(value) - set(ALL_PERMISSIONS)
    if unknown:
        raise ConfigurationError(f"unknown permission(s) {sorted(unknown)}")


#: Shortest secret accepted, in bytes (RFC 7518 section 3.2 asks for the hash size).
MIN_SECRET_LENGTH = 32


def _check_secret(_instance: object, _attribute: object, value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"the token secret must have at least {MIN_SECRET_LENGTH} bytes "
            "(e.g. secrets.token_urlsafe(32))"
        )


@attrs.frozen(kw_only=True)
class TokenAuth:
    """Verify (and, for development, mint) HMAC-signed JWT room tokens.

    *algorithm* is the only algorithm accepted (never ``none``); *leeway* is the clock skew
    tolerated on ``exp``/``nbf`` in seconds; *clock* returns the current UNIX time.
    """

    secret: str | bytes = attrs.field(repr=False, validator=_check_secret)
    algorithm: str = attrs.field(default="HS256", validator=attrs.validators.in_(_HMAC_ALGORITHMS))
    leeway: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    require_identity: bool = True
    clock: Callable[[], float] = attrs.field(default=time.time, repr=False)

    def mint(
        self,
        *,
        room: str,
        identity: str,
        ttl: float = 3600.0,
        permissions: Iterable[str] = DEFAULT_PERMISSIONS,
        not_before: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Return a signed token for *identity* in *room*, valid for *ttl* seconds from now."""
        perms = tuple(permissions)
        _check_permissions(None, None, perms)
        if ttl <= 0:
            raise ConfigurationError("ttl must be positive")
        now = self.clock()
        claims: dict[str, Any] = dict(extra or {})
        claims.update(
            room=room,
            sub=identity,
            iat=int(now),
            nbf=int(now if not_before is None else not_before),
            exp=int(now + ttl),
            permissions=list(perms),
        )
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)

    def authenticate(self, room: str, token: str | None) -> Grant:
        """Verify *token* for *room*; if refused, raise :class:`~rtckit.errors.AuthError`.

        Codes: ``auth_required`` (no token), ``auth_invalid`` (malformed, forged, another
        algorithm, ``alg: none``, bad claims), ``auth_expired``, ``auth_not_yet_valid``,
        ``auth_wrong_room``.
        """
        if not token:
            raise AuthError("this room needs a token", code=ErrorCode.AUTH_REQUIRED)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}", code=ErrorCode.AUTH_INVALID) from None
        if header.get("alg") != self.algorithm:
            raise AuthError(
                f"token algorithm {header.get('alg')!r} refused (want {self.algorithm})",
                code=ErrorCode.AUTH_INVALID,
            )
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[self.algorithm],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "room"],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid", code=ErrorCode.AUTH_INVALID) from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}", code=ErrorCode.AUTH_INVALID) from None
        return self._check_claims(room, claims)

    def _check_claims(self, room: str, claims: dict[str, Any]) -> Grant:
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        for name, value in (("exp", exp), ("nbf", nbf)):
            if value is not None and (type(value) not in (int, float)):
                raise AuthError(f"claim {name!r} must be a number", code=ErrorCode.AUTH_INVALID)
        if exp is not None and now >= exp + self.leeway:
            raise AuthError("token has expired", code=ErrorCode.AUTH_EXPIRED)
        if nbf is not None and now < nbf - self.leeway:
            raise AuthError("token is not valid yet", code=ErrorCode.AUTH_NOT_YET_VALID)
        if claims.get("room") != room:
            raise AuthError("token is for another room", code=ErrorCode.AUTH_WRONG_ROOM)
        identity = claims.get("sub")
        if identity is None and self.require_identity:
            raise AuthError("token has no 'sub' identity", code=ErrorCode.AUTH_INVALID)
        if identity is not None and (
            type(identity) is not str or not 1 <= len(identity) <= MAX_ID_LENGTH
        ):
            raise AuthError("claim 'sub' must be a short string", code=ErrorCode.AUTH_INVALID)
        permissions = claims.get("permissions", list(DEFAULT_PERMISSIONS))
        if type(permissions) is not list or not all(
            item in ALL_PERMISSIONS for item in permissions
        ):
            raise AuthError(
                f"claim 'permissions' must be a list among {list(ALL_PERMISSIONS)}",
                code=ErrorCode.AUTH_INVALID,
            )
        return Grant(identity=identity, permissions=tuple(permissions))
