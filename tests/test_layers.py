"""The package's layer contract and its ``__all__`` lists, checked on the source.

Read with :mod:`ast`, never imported, so that ``nox -s lint`` runs this file without installing
rtckit. Every import of every module under ``src/rtckit`` counts: top-level, inside functions,
relative. Imports under ``if TYPE_CHECKING:`` never run; they may point to a higher layer (an
annotation names a type, it does not depend on its module), but a pure core does not name
asyncio or aiortc types even there.

The tables below are keyed by module prefix (``"rtckit.peer"`` is the package and all its
modules; the longest prefix wins), so a moved module needs a one-line change here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "rtckit"

# The layers, lowest first. A module may import its own layer and the layers below it, never a
# higher one. Within a layer anything goes.
LAYERS: tuple[tuple[str, ...], ...] = (
    # foundations: imported by everything
    ("rtckit.errors", "rtckit._deprecated", "rtckit._lazy"),
    # ICE/TURN configuration, STUN codec, candidates, coturn configuration, certificates,
    # this machine's addresses
    ("rtckit.ice", "rtckit.stun", "rtckit.coturn.config", "rtckit.certs", "rtckit.net"),
    # asyncio services and helpers on those (sockets, processes, HTTP(S), the event loop, the
    # backplane nodes share)
    (
        "rtckit.backplane",
        "rtckit.stun.server",
        "rtckit.coturn",
        "rtckit.httpserver",
        "rtckit.https",
        "rtckit.eventloop",
    ),
    # the aiortc adapter: its private internals, and an IceConfig as aiortc's configuration
    ("rtckit._aiortc", "rtckit.ice.aiortc"),
    # peer sessions, and the peer-connection factory
    ("rtckit.peer",),
    # signaling: protocol, state machine, hub, transports, client, server
    ("rtckit.signaling",),
    # media engines
    ("rtckit.sfu", "rtckit.mcu"),
    # rooms: mesh, SFU, MCU strategies (server and client side)
    ("rtckit.topology",),
    # applications and kits: the demo server, the doctor, the test kit, the package's own API,
    # and the deprecated aliases of moved modules (nothing in rtckit imports them)
    (
        "rtckit.server",
        "rtckit.whip",
        "rtckit.ice.doctor",
        "rtckit.testing",
        "rtckit",
        "rtckit.turn",
        "rtckit.candidates",
        "rtckit.doctor",
        "rtckit.rtcconfig",
        "rtckit.stunserver",
        "rtckit.signaling.server",
    ),
    # the command line
    ("rtckit.cli", "rtckit.__main__"),
)

# (importer prefix, imported prefix) -> why it is tolerated. An entry that matches no
# import any more fails the test, so that the table only shrinks.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

# The sans-I/O cores: no event loop, no sockets, no WebRTC stack. They import only each other
# (and rtckit.errors) at run time.
PURE_CORES: tuple[str, ...] = (
    "rtckit.errors",
    "rtckit._deprecated",
    "rtckit._lazy",
    "rtckit.backplane.base",
    "rtckit.backplane.keys",
    "rtckit.backplane.journal",  # the session journal's records (signaling.state writes them)
    "rtckit.signaling.protocol",
    "rtckit.signaling.state",
    "rtckit.signaling.relay_wire",  # the signaling router's envelope between nodes
    "rtckit.signaling.config",  # signaling.state's configuration
    "rtckit.signaling.auth",  # token checks (PyJWT), used by signaling.state
    "rtckit.peer.negotiation",
    "rtckit.peer.signaller",
    "rtckit.peer.stats",
    "rtckit.peer.events",
    "rtckit.stun.codec",
    "rtckit.ice.servers",
    "rtckit.ice.turn",
    "rtckit.ice.config",
    "rtckit.ice.candidates",
    "rtckit.coturn.config",
    "rtckit.certs.tls",
    "rtckit.certs.x509",
    "rtckit.certs.ca",
    "rtckit.topology.base",
    "rtckit.topology.cost",
    "rtckit.sfu.rtp",
    "rtckit.sfu.depacketize",
    "rtckit.sfu.forward",
    "rtckit.sfu.selection",
    "rtckit.mcu.audio",
    "rtckit.mcu.video",
    "rtckit.whip.protocol",  # WHIP's HTTP decisions (statuses, headers, SDP checks)
    "rtckit.peer.simulcast",  # simulcast SDP (a=rid, a=simulcast) read and written
)
# rtckit.certs.dev is not listed: it names this machine with rtckit.net, which asks the system.
NOT_IN_PURE_CORES = frozenset({"asyncio", "aiohttp", "aiortc", "aioice", "av", "socket", "redis"})
# (pure core, forbidden module) -> why it is there anyway
PURE_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("rtckit.stun.codec", "socket"): "socket.inet_pton, the IP address codec; it opens no socket",
    ("rtckit.certs.ca", "socket"): "socket.gethostname in a new CA's name; it opens no socket",
}

# The only module that may touch aiortc's and aioice's private internals (see its docstring:
# underscore names, undocumented submodules). Their public API is the top-level package
# (``import aiortc``, ``from aiortc import RTCPeerConnection``) and aiortc's documented helpers.
PRIVATE_INTERNALS = "rtckit._aiortc"
PUBLIC_SUBMODULES = frozenset({"aiortc.contrib.media"})
# (importer prefix, private module) -> what it takes, for a private aiortc/aioice module used
# outside rtckit._aiortc. None is: aiortc's SDP parser (rtckit._aiortc.sdp) and the unexported
# RTCRtpReceiveParameters (rtckit._aiortc.sfu) go through it, with a test in
# tests/test_aiortc_internals.py. An entry that matches no import any more fails the test.
KNOWN_PRIVATE: dict[tuple[str, str], str] = {}


class Import(NamedTuple):
    module: str
    """The imported module (for ``from m import n``: ``m.n`` if that is a module, else ``m``)."""
    name: str | None
    """The name taken from it (``from m import n``), or None (``import m``)."""
    line: int
    type_checking: bool
    """Whether the import sits under ``if TYPE_CHECKING:`` (it never runs)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


@cache
def _tree(module: str) -> ast.Module:
    path = _modules()[module]
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under *node*, with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for inner in child.body:
                yield inner, True
                yield from _walk(inner, True)
            for inner in child.orelse:
                yield inner, type_checking
                yield from _walk(inner, type_checking)
            continue
        yield child, type_checking
        yield from _walk(child, type_checking)


@cache
def _imports(module: str) -> tuple[Import, ...]:
    is_package = _modules()[module].name == "__init__.py"
    found = []
    for node, type_checking in _walk(_tree(module)):
        if isinstance(node, ast.Import):
            found += [Import(a.name, None, node.lineno, type_checking) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in _modules() else base
                found.append(Import(target, alias.name, node.lineno, type_checking))
    return tuple(found)


def _match(module: str, prefixes: tuple[str, ...]) -> str | None:
    """The longest of *prefixes* that is *module* or a package holding it (``rtckit`` itself
    matches only the package's ``__init__``)."""
    hits = [p for p in prefixes if module == p or (p != PACKAGE and module.startswith(p + "."))]
    return max(hits, key=len) if hits else None


def _layer(module: str) -> int:
    prefix = _match(module, tuple(p for layer in LAYERS for p in layer))
    assert prefix is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return next(i for i, layer in enumerate(LAYERS) if prefix in layer)


def _internal(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


MODULES = sorted(_modules())


def test_the_tables_name_existing_modules() -> None:
    prefixes = [
        *(p for layer in LAYERS for p in layer),
        *PURE_CORES,
        PRIVATE_INTERNALS,
        *(key for pair in (*KNOWN_UPWARD, *KNOWN_PRIVATE, *PURE_EXCEPTIONS) for key in pair[:1]),
    ]
    for prefix in prefixes:
        assert any(_match(m, (prefix,)) for m in MODULES), f"no module {prefix}"


@pytest.mark.parametrize("module", MODULES)
def test_nothing_imports_a_higher_layer(module: str) -> None:
    own = _layer(module)
    upward = {
        f"{module}:{imp.line} imports {imp.module}"
        for imp in _imports(module)
        if _internal(imp.module)
        and not imp.type_checking
        and _layer(imp.module) > own
        and not any(
            _match(module, (src,)) and _match(imp.module, (dst,)) for src, dst in KNOWN_UPWARD
        )
    }
    assert not upward, sorted(upward)


def test_known_upward_imports_still_exist() -> None:
    for importer, imported in KNOWN_UPWARD:
        assert any(
            _match(imp.module, (imported,)) and not imp.type_checking
            for module in MODULES
            if _match(module, (importer,))
            for imp in _imports(module)
        ), f"{importer} -> {imported} is gone: remove it from KNOWN_UPWARD"


@pytest.mark.parametrize("module", [m for m in MODULES if _match(m, PURE_CORES)])
def test_pure_cores_import_no_io_and_only_pure_cores(module: str) -> None:
    bad = set()
    for imp in _imports(module):
        top = imp.module.split(".")[0]
        if top in NOT_IN_PURE_CORES and not any(
            _match(module, (core,)) and top == forbidden for core, forbidden in PURE_EXCEPTIONS
        ):
            bad.add(f"{module}:{imp.line} imports {imp.module}")
        if _internal(imp.module) and not imp.type_checking and not _match(imp.module, PURE_CORES):
            bad.add(f"{module}:{imp.line} imports {imp.module}, which is not a pure core")
    assert not bad, sorted(bad)


def _private(imp: Import) -> str | None:
    """The private aiortc/aioice module or name *imp* reaches, if it does.

    Their public names are classes (``CamelCase``): ``from aiortc import sdp`` takes a
    submodule, ``from aiortc import _x`` a private name.
    """
    top, _, rest = imp.module.partition(".")
    if top not in {"aiortc", "aioice"}:
        return None
    if rest:
        return None if imp.module in PUBLIC_SUBMODULES else imp.module
    if imp.name is not None and not imp.name[:1].isupper():
        return f"{imp.module}.{imp.name}"
    return None


def _attribute_uses(module: str) -> Iterator[tuple[int, str]]:
    """``aiortc.x`` / ``aioice.x`` attribute reads in *module* (``import aiortc`` then use)."""
    for node, _ in _walk(_tree(module)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in {"aiortc", "aioice"}
        ):
            yield node.lineno, f"{node.value.id}.{node.attr}"


@pytest.mark.parametrize("module", MODULES)
def test_only_the_internals_module_touches_aiortc_privates(module: str) -> None:
    if _match(module, (PRIVATE_INTERNALS,)):
        return
    known = {imported for importer, imported in KNOWN_PRIVATE if _match(module, (importer,))}
    bad = {
        f"{module}:{imp.line} imports {reached}"
        for imp in _imports(module)
        if (reached := _private(imp)) and reached not in known
    }
    bad |= {
        f"{module}:{line} uses {name}"
        for line, name in _attribute_uses(module)
        if not name.split(".")[1][:1].isupper() and name != "aiortc.__version__"
    }
    assert not bad, sorted(bad)


def test_known_private_imports_still_exist() -> None:
    for importer, imported in KNOWN_PRIVATE:
        assert any(
            _private(imp) == imported
            for module in MODULES
            if _match(module, (importer,))
            for imp in _imports(module)
        ), f"{importer} -> {imported} is gone: remove it from KNOWN_PRIVATE"


# --- __all__ ---------------------------------------------------------------------------------


def _public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


def _all(module: str) -> list[str] | None:
    for node in _tree(module).body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(node.value) if node.value else None
            assert isinstance(value, list | tuple), f"{module}.__all__ is not a literal list"
            return list(value)
    return None


def _bound(module: str) -> set[str]:
    """The names *module* binds at its top level (in ``if``/``try`` blocks too)."""
    names: set[str] = set()
    todo: list[ast.stmt] = list(_tree(module).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.If | ast.Try | ast.With):
            todo += [*node.body, *node.orelse] if not isinstance(node, ast.With) else node.body
            if isinstance(node, ast.Try):
                todo += [*node.finalbody, *(s for h in node.handlers for s in h.body)]
    return names


def _natural(name: str) -> tuple[int, list[int | str]]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest; natural sort."""
    screaming = len(name) > 1 and name.isupper()
    kind = 0 if screaming else 1 if name[:1].isupper() else 2
    return kind, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


@pytest.mark.parametrize("module", MODULES)
def test_all_is_defined_sorted_and_bound(module: str) -> None:
    names = _all(module)
    if names is None:
        assert not _public(module), f"{module} is public and has no __all__"
        return
    assert names == sorted(names, key=_natural), f"{module}.__all__ is not sorted"
    assert len(set(names)) == len(names), f"{module}.__all__ repeats a name"
    missing = set(names) - _bound(module)
    assert not missing, f"{module}.__all__ names what it does not define: {sorted(missing)}"


def _aliases(module: str) -> dict[str, str]:
    """Local names bound to rtckit modules (``from rtckit.signaling import protocol as sp``)."""
    aliases: dict[str, str] = {}
    for node, _ in _walk(_tree(module)):
        if isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and _internal(a.name)}
    for imp in _imports(module):
        if imp.name is not None and _internal(imp.module) and imp.module.endswith("." + imp.name):
            aliases[imp.name] = imp.module  # refined below when it has an ``as`` name
    for node, _ in _walk(_tree(module)):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname and alias.name in aliases:
                    aliases[alias.asname] = aliases.pop(alias.name)
    return aliases


def _uses_of_other_modules(module: str) -> Iterator[tuple[str, str, int]]:
    """(other rtckit module, public name, line) for each name *module* takes from another."""
    for imp in _imports(module):
        if _internal(imp.module) and imp.name and not imp.module.endswith("." + imp.name):
            yield imp.module, imp.name, imp.line
    aliases = _aliases(module)
    for node, _ in _walk(_tree(module)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            yield aliases[node.value.id], node.attr, node.lineno


@pytest.mark.parametrize("module", MODULES)
def test_names_taken_from_another_module_are_in_its_all(module: str) -> None:
    missing = set()
    for other, name, line in _uses_of_other_modules(module):
        if other == module or name.startswith("_") or f"{other}.{name}" in _modules():
            continue
        exported = _all(other)
        if exported is not None and name not in exported:
            missing.add(f"{module}:{line} takes {name} from {other}, not in its __all__")
    assert not missing, sorted(missing)
