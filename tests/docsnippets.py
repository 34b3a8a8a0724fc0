"""Extract the code blocks of the README, the Sphinx pages and the autodoc'd docstrings.

Used by ``tests/test_docs_snippets.py``. The pages are parsed with docutils (installed with
Sphinx), with stand-ins for Sphinx's own directives, so a block is found however it is
written: ``.. code-block::``, a ``::`` literal block, ``.. literalinclude::`` or a ``>>>``
doctest. Docstrings come from the modules that ``.. automodule::`` renders.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import docutils.core
import docutils.nodes
from docutils.parsers.rst import Directive, directives, roles
from docutils.parsers.rst.directives.body import CodeBlock

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@attrs.frozen
class Block:
    """One code block: where it is, its language and its text (or the included file)."""

    source: str  # "README.md", "docs/howto/x.rst", or a dotted name for a docstring
    language: str  # "python", "toml", "::" (plain literal), "include", "doctest", ...
    text: str
    include: Path | None = None
    included: str = ""  # an included file's shown part (``start-after``/``end-before``)

    def __str__(self) -> str:
        first = next((line for line in self.text.splitlines() if line.strip()), "")
        return f"{self.source} [{self.language}] {first.strip()[:70]!r}"


class _AnyOptions(dict[str, Any]):
    """An option spec accepting every option (Sphinx's directives have many)."""

    def __init__(self) -> None:
        super().__init__(_=None)  # non-empty: docutils skips option parsing for a falsy spec

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return directives.unchanged


class _LiteralInclude(Directive):
    required_arguments = 1
    has_content = False

    def run(self) -> list[docutils.nodes.Node]:
        node = docutils.nodes.literal_block("", "", classes=["literalinclude"])
        node["filename"] = self.arguments[0]
        node["language"] = self.options.get("language", "")
        node["start-after"] = self.options.get("start-after")
        node["end-before"] = self.options.get("end-before")
        return [node]


class _Ignored(Directive):
    """toctree, automodule...: nothing to extract (docstrings are read from the modules)."""

    optional_arguments = 10
    final_argument_whitespace = True
    has_content = True

    def run(self) -> list[docutils.nodes.Node]:
        return []


class _SphinxCodeBlock(CodeBlock):
    """``code-block``, with every Sphinx option accepted."""


def _role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: object,
    options: object = None,
    content: object = None,
) -> tuple[list[docutils.nodes.Node], list[docutils.nodes.Node]]:
    del name, lineno, inliner, options, content
    return [docutils.nodes.literal(rawtext, text)], []


def _register() -> None:
    for directive in (_LiteralInclude, _Ignored, _SphinxCodeBlock):
        setattr(directive, "option_spec", _AnyOptions())  # noqa: B010 - docutils types it None
    directives.register_directive("code-block", _SphinxCodeBlock)
    directives.register_directive("sourcecode", _SphinxCodeBlock)
    directives.register_directive("literalinclude", _LiteralInclude)
    for name in ("toctree", "automodule", "autoclass", "autofunction", "autodata"):
        directives.register_directive(name, _Ignored)
    for name in ("versionadded", "versionchanged", "deprecated", "seealso", "currentmodule"):
        directives.register_directive(name, _Ignored)
    kinds = ("func", "class", "meth", "mod", "attr", "data", "exc", "obj", "const", "type")
    for name in (*kinds, *(f"py:{k}" for k in kinds), "doc", "ref", "envvar", "file", "rfc"):
        roles.register_local_role(name, _role)


_register()


def _in_error(node: docutils.nodes.Node) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, docutils.nodes.system_message):
            return True
        parent = parent.parent
    return False


def rst_blocks(text: str, source: str, source_path: Path | None = None) -> Iterator[Block]:
    """The code blocks of reST *text*, in document order."""
    publish: Callable[..., docutils.nodes.document] = docutils.core.publish_doctree
    document = publish(
        text,
        source_path=str(source_path) if source_path else None,
        settings_overrides={"report_level": 5, "halt_level": 5, "syntax_highlight": "none"},
    )
    for node in document.findall(
        lambda n: isinstance(n, docutils.nodes.literal_block | docutils.nodes.doctest_block)
    ):
        if _in_error(node):  # an unknown directive: docutils quotes it in a literal block
            raise AssertionError(f"{source}: docutils could not parse {node.astext()[:200]!r}")
        if isinstance(node, docutils.nodes.doctest_block):
            yield Block(source, "doctest", node.astext())
            continue
        classes = node.get("classes", [])
        if "literalinclude" in classes:
            assert source_path is not None
            path = (source_path.parent / node["filename"]).resolve()
            shown = path.read_text(encoding="utf-8") if path.is_file() else ""
            if node["start-after"]:
                shown = shown.partition(node["start-after"])[2]
            if node["end-before"]:
                shown = shown.partition(node["end-before"])[0]
            yield Block(source, "include", node["filename"], include=path, included=shown)
        elif "code" in classes:
            yield Block(source, classes[1] if len(classes) > 1 else "text", node.astext())
        else:
            yield Block(source, "::", node.astext())


def page_blocks() -> Iterator[Block]:
    """Every block of every page under docs/ (``.inc`` files come through ``include``)."""
    for path in sorted(DOCS.rglob("*.rst")):
        if "_build" in path.parts:
            continue
        source = path.relative_to(ROOT).as_posix()
        yield from rst_blocks(path.read_text(encoding="utf-8"), source, path)


_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks() -> Iterator[Block]:
    """The fenced blocks of README.md."""
    for match in _FENCE.finditer((ROOT / "README.md").read_text(encoding="utf-8")):
        yield Block("README.md", match.group(1) or "text", match.group(2).rstrip("\n"))


def automodules() -> list[str]:
    """The modules the docs render with ``.. automodule::`` (members included by default)."""
    names: set[str] = set()
    for path in DOCS.rglob("*.rst"):
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r"^\.\. automodule:: (\S+)", text, re.MULTILINE))
    return sorted(names)


def _docstrings(name: str) -> Iterator[tuple[str, str]]:
    module = importlib.import_module(name)
    yield name, inspect.getdoc(module) or ""
    public = getattr(module, "__all__", None)
    for attr, value in vars(module).items():
        if attr.startswith("_") or (public is not None and attr not in public):
            continue
        if getattr(value, "__module__", None) != name:
            continue
        if inspect.isfunction(value):
            yield f"{name}.{attr}", inspect.getdoc(value) or ""
        elif inspect.isclass(value):
            yield f"{name}.{attr}", inspect.getdoc(value) or ""
            for member_name, member in vars(value).items():
                if member_name.startswith("_"):
                    continue
                function = member.fget if isinstance(member, property) else member
                function = getattr(function, "__func__", function)
                doc = getattr(function, "__doc__", None) if callable(function) else None
                if doc:
                    yield f"{name}.{attr}.{member_name}", inspect.cleandoc(doc)


def docstring_blocks() -> Iterator[Block]:
    """The blocks of the docstrings autodoc renders (module, public classes and functions)."""
    for name in automodules():
        for where, doc in _docstrings(name):
            if "::" in doc or ">>>" in doc:
                yield from rst_blocks(doc, where)


def all_blocks() -> list[Block]:
    """README, pages and docstrings."""
    return [*readme_blocks(), *page_blocks(), *docstring_blocks()]
