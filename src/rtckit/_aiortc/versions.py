"""Supported aiortc/aioice versions and the errors raised when an internal moved."""

from __future__ import annotations

import re
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

from rtckit.errors import InternalsError

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    pass


SUPPORTED_AIORTC: Final = ((1, 14), (1, 17))
"""aiortc versions rtckit's internals support: ``>=1.14,<1.17``."""
SUPPORTED_AIOICE: Final = ((0, 10), (0, 14))
"""aioice versions rtckit's internals support: ``>=0.10,<0.14``."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def check_versions(*, aiortc_version: str | None = None, aioice_version: str | None = None) -> None:
    """Raise :class:`~rtckit.errors.InternalsError` unless aiortc/aioice are supported.

    The versions default to the installed distributions' (read with :mod:`importlib.metadata`).
    """
    for name, given, (low, high) in (
        ("aiortc", aiortc_version, SUPPORTED_AIORTC),
        ("aioice", aioice_version, SUPPORTED_AIOICE),
    ):
        text = given if given is not None else metadata.version(name)
        version = _version_tuple(text)
        if not low <= version[:2] < high:
            raise InternalsError(
                f"rtckit supports {name}>={low[0]}.{low[1]},<{high[0]}.{high[1]} "
                f"(it relies on some of its internals), but {name} {text} is installed"
            )


def missing_internal(what: str, exc: BaseException | None = None) -> InternalsError:
    error = InternalsError(
        f"aiortc/aioice internals moved: {what} (supported: aiortc>=1.14,<1.17, aioice<0.14)"
    )
    if exc is not None:
        error.__cause__ = exc
    return error


def get_internal(obj: object, name: str) -> Any:
    """Return the internal attribute *name* of *obj*, or raise :class:`InternalsError`."""
    try:
        return getattr(obj, name)
    except AttributeError as exc:
        raise InternalsError(
            f"{type(obj).__module__}.{type(obj).__qualname__} has no attribute {name!r}: "
            "the installed aiortc/aioice changed an internal rtckit relies on"
        ) from exc
