"""Old names kept importable from their old modules, with a :class:`DeprecationWarning`.

A module that renamed a public name lists the old one in a table and sets its module
``__getattr__`` (:pep:`562`) from :func:`renamed`; the warning names the new import path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["renamed", "warn_renamed"]


def renamed(module: str, names: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for *module*'s old names.

    *names* maps each old name to ``(new import path, object)``, e.g.
    ``{"Candidate": ("rtckit.peer.signaller.PeerCandidate", PeerCandidate)}``.
    """

    def module_getattr(name: str) -> Any:
        try:
            new, value = names[name]
        except KeyError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        warn_renamed(module, name, new, stacklevel=2)
        return value

    return module_getattr


def warn_renamed(module: str, name: str, new: str, *, stacklevel: int) -> None:
    """Warn that *module*'s *name* is deprecated, naming its *new* import path.

    *stacklevel* counts as :func:`warnings.warn`'s does, from the caller of this function.
    """
    warnings.warn(
        f"{module}.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel + 1
    )
