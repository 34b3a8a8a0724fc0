"""Lazy re-exports for a package's ``__init__`` (:pep:`562`).

A package re-exports the names of its modules so that ``from rtckit.peer import PeerSession``
works; importing them all in ``__init__`` would make every import of one of its modules pay for
all the others (``rtckit.peer.negotiation``, a pure core, would load aiortc with
``rtckit.peer.session``). So a package's ``__init__`` lists what it re-exports and from which
module, and :func:`lazy_exports` gives it the module ``__getattr__`` and ``__dir__`` that import
that module on the first access of one of its names::

    if TYPE_CHECKING:  # what mypy and Sphinx read; it never runs
        from rtckit.peer.session import PeerSession

    __all__ = ["PeerSession"]

    __getattr__, __dir__ = lazy_exports(__name__, {"rtckit.peer.session": ["PeerSession"]})

Accessing a name of the table imports its module and stores the name in the package, so the
next access is a plain attribute read. A deprecated name (*renamed*: old name -> its new
import path) warns as :func:`rtckit._deprecated.renamed` does, and imports its new path only
then. Any other name that is a submodule of the package is imported, as it was when
``__init__`` imported everything (``rtckit.signaling.protocol`` after ``import rtckit``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rtckit._deprecated import warn_renamed

__all__ = ["lazy_exports", "resolve"]


def resolve(path: str) -> Any:
    """The object at the import path *path*: ``"rtckit.sfu.SfuConfig"`` imports ``rtckit.sfu``
    and returns its ``SfuConfig``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def lazy_exports(
    package: str,
    exports: Mapping[str, Iterable[str]],
    *,
    renamed: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of *package*.

    *exports* maps a module to the names *package* re-exports from it; *renamed* maps each
    deprecated name of *package* to its new import path.
    """
    where = {name: module for module, names in exports.items() for name in names}
    old_names = dict(renamed or {})

    def module_getattr(name: str) -> Any:
        module = where.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
            setattr(sys.modules[package], name, value)  # the next access skips this function
            return value
        if name in old_names:
            warn_renamed(package, name, old_names[name], stacklevel=2)
            return resolve(old_names[name])
        if _is_submodule(package, name):
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return module_getattr, module_dir


def _is_submodule(package: str, name: str) -> bool:
    """Whether *name* names a module of *package* (not a dunder some tool looks up)."""
    if not name.isidentifier() or name.startswith("__"):
        return False
    return importlib.util.find_spec(f"{package}.{name}") is not None
