"""Comments and docs describe the code as it is, not how it came to be.

No branch or work-session names (``(icefail)``, ``(peer helper)``), no "for now" or "being
studied": the reason a piece of code has its shape is written as a fact about the code, and a
limit as a limit. Read as text, so ``nox -s lint`` runs this file without installing rtckit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "docs", "examples", "benchmarks", "tests")
SUFFIXES = frozenset({".py", ".rst", ".md", ".js", ".html", ".css", ".txt", ".toml"})

# The repository's branch names (``git branch -a``, and those merged into main). Those that are
# also words or module names (ice, peer...) are forbidden only as a parenthesised tag in prose
# (not a call's argument); the others anywhere. "signaling" is left out: "(signaling)" is a fair
# table cell.
BRANCH_WORDS = (
    "certs|checks|demo|docsnippets|folders|hostile|ice|jsmodules|mcu|natlab|peer|readers|rooms|stun"
)
BRANCH_NAMES = (
    "aiomesh|demosfu|dtlsrsa|extfix|hostile2|icefail|mcuroom|newuser"
    "|rtprouting|sfuroom|siglimits|sigperf|unify"
)
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "a branch name": re.compile(
        rf"(?<![\w\])])\((?:{BRANCH_WORDS}|{BRANCH_NAMES})\)|\b(?:{BRANCH_NAMES})\b"
    ),
    "a work session": re.compile(r'\bhelper "\w+"|\(\w+ helper\)'),
    "'for now'": re.compile(r"\bfor now\b", re.IGNORECASE),
    "'being studied'": re.compile(r"\b(?:being studied|under study)\b", re.IGNORECASE),
}


def _files() -> list[Path]:
    return sorted(
        path
        for top in SCANNED
        for path in (ROOT / top).rglob("*")
        if path.suffix in SUFFIXES
        and "_build" not in path.parts
        and "data" not in path.relative_to(ROOT).parts[1:2]
        and path != Path(__file__).resolve()
    )


def test_the_scan_reads_the_package_and_the_docs() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in _files()}
    assert {"src/rtckit/_aiortc/__init__.py", "docs/index.rst", "src/rtckit/eventloop.py"} <= files


@pytest.mark.parametrize(("what", "pattern"), FORBIDDEN.items(), ids=list(FORBIDDEN))
def test_no_history_in_comments_and_docs(what: str, pattern: re.Pattern[str]) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"{what}: describe the code as it is\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        "# --- peer: trickled candidates on bundled transports (icefail) ---",
        "# --- ICE / TURN (ice helper) ---",
        '# --- nominated pair (helper "peer") ---',
        "default to ``asyncio`` for now: a stall that is being studied",
        "see the sigperf numbers",
    ],
)
def test_the_patterns_catch_what_they_are_for(line: str) -> None:
    assert any(pattern.search(line) for pattern in FORBIDDEN.values())


@pytest.mark.parametrize(
    "line",
    [
        "none (signaling)",
        "ICE restart (see rtckit.peer)",
        "a helper function",
        "unified",
        "Recorder(peer)",
        "from docsnippets import Block",
        "from jsmodules import exports",
    ],
)
def test_the_patterns_leave_ordinary_text_alone(line: str) -> None:
    assert not any(pattern.search(line) for pattern in FORBIDDEN.values())
