"""The ``rtckit`` command line.

Each sub-command lives in its own module under :mod:`rtckit.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``(argparse.Namespace) -> int`` (the exit status). This module only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from rtckit import __version__
from rtckit.errors import RtcKitError

__all__ = ["build_parser", "main", "os_error_text", "plain_text"]

# One line per sub-command module, in the order ``rtckit --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "rtckit.cli.cert",
    "rtckit.cli.turn",
    "rtckit.cli.stun",
    "rtckit.cli.doctor",
    "rtckit.cli.signaling",
    "rtckit.cli.demo",
    "rtckit.cli.serve",
    "rtckit.cli.whip",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``rtckit`` with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="rtckit", description="WebRTC applications in Python, on aiortc."
    )
    parser.add_argument("--version", action="version", version=f"rtckit {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser
    )
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


class _CommandParser(argparse.ArgumentParser):
    """The parser of a sub-command: it reports an unknown option itself, with its own usage
    (argparse would hand it up to ``rtckit``'s parser, whose usage does not help)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def plain_text(text: str) -> str:
    """*text* (a docstring) without reST inline markup, for ``--help``: ````x```` and
    ``:role:`x``` become ``x``, ``:role:`~a.x``` becomes ``x`` and ``:role:`title <target>```
    becomes ``title``."""

    def role(match: re.Match[str]) -> str:
        if match[1]:
            return match[1]
        target: str = match[2]
        return target[1:].rpartition(".")[2] if target.startswith("~") else target

    text = re.sub(r":[a-z:]+:`(?:([^`<]*?)\s*<[^`>]*>|([^`]*))`", role, text)
    return text.replace("``", "")


def os_error_text(exc: OSError) -> str:
    """One line for an :class:`OSError`: ``"FILE: reason"``, or the reason alone."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success).

    An error the user can cause (a bad option or file, a busy port) is one line,
    ``rtckit: error: ...``, on stderr with a non-zero status, never a traceback: rtckit's own
    errors exit 2, an :class:`OSError` that no command turned into one of them exits 1. When
    the reader of the output goes away (``rtckit cert show F | head -1``) the command stops
    quietly with status 141, as a program killed by SIGPIPE does.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # as parse_args would, but with the usage of the sub-command at fault
        getattr(args, "rtckit_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        status: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
    except RtcKitError as exc:
        print(f"rtckit: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # later flushes (at exit) must not fail again: stdout goes nowhere from now on
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except OSError as exc:
        print(f"rtckit: error: {os_error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
