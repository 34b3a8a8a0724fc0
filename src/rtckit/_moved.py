"""Old import paths of moved modules: each name still resolves, with a ``DeprecationWarning``.

A module that moved leaves a few lines at its old path::

    __getattr__ = moved_names(__name__, {"SignalingServer": "rtckit.signaling.wsserver"})

``from rtckit.old import Name`` then returns the object from its new module and warns with a
message naming the new path; nothing is imported from the new module until a name is asked for.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved_names", "same_names"]


def moved_names(old: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """Return a module ``__getattr__`` that serves *names* (name -> new module) from *old*."""
    table = dict(names)

    def __getattr__(name: str) -> object:  # noqa: N807 - the module hook Python looks up
        new = table.get(name)
        if new is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; import it from {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)

    return __getattr__


def same_names(module: str, names: list[str]) -> dict[str, str]:
    """Map every name in *names* to *module* (for :func:`moved_names`)."""
    return dict.fromkeys(names, module)
