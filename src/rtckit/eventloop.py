"""Choosing the event loop that rtckit's servers run on: asyncio's own, or uvloop.

uvloop is an asyncio event loop built on libuv (the I/O library under Node.js). It is an
optional extra (``pip install rtckit[speed]``): with it a signaling server spends about half
the CPU time per relayed message in the event loop and the socket transports (see
:doc:`/topics/signaling-benchmark`). Nothing in rtckit needs it.

The command-line servers run their main coroutine with :func:`run` and take
``--loop auto|asyncio|uvloop``, where ``auto`` means uvloop when it is installed.
``rtckit signaling`` (signaling only) defaults to ``auto``. ``rtckit serve`` and ``rtckit demo``
default to ``asyncio``: in their browser rooms' mesh test a browser-to-browser stall of unknown
cause shows up more often with the server on uvloop (4 runs in 5 against 1 in 2), so uvloop is
opt-in there (``--loop uvloop``). An application that embeds rtckit picks its own
loop; this module only helps:

.. code-block:: python

    from rtckit.eventloop import run

    run(main(), loop="auto")  # uvloop if installed, else asyncio
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeAlias, TypeVar

from rtckit.errors import ConfigurationError

__all__ = [
    "LOOP_CHOICES",
    "LoopChoice",
    "add_loop_argument",
    "loop_factory",
    "loop_name",
    "resolve_loop",
    "run",
    "uvloop_available",
]

#: The values of ``--loop``: ``auto`` (uvloop if installed), ``asyncio``, ``uvloop``.
LOOP_CHOICES: tuple[str, ...] = ("auto", "asyncio", "uvloop")

LoopChoice: TypeAlias = Literal["auto", "asyncio", "uvloop"]

_T = TypeVar("_T")


def uvloop_available() -> bool:
    """Whether the ``uvloop`` package can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def resolve_loop(choice: str) -> Literal["asyncio", "uvloop"]:
    """Return the loop *choice* (one of :data:`LOOP_CHOICES`) means on this machine.

    Raises :class:`~rtckit.errors.ConfigurationError` for an unknown choice, or for
    ``uvloop`` when it is not installed.
    """
    if choice == "asyncio":
        return "asyncio"
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    if choice == "uvloop":
        if not uvloop_available():
            raise ConfigurationError(
                "the uvloop event loop is not installed (pip install 'rtckit[speed]')"
            )
        return "uvloop"
    raise ConfigurationError(f"event loop must be one of {LOOP_CHOICES}, not {choice!r}")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a function making a new event loop of *choice* (see :func:`resolve_loop`)."""
    if resolve_loop(choice) == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, _T], *, loop: str = "auto", debug: bool | None = None) -> _T:
    """Run *main* to completion on a new event loop of kind *loop*, like ``asyncio.run``.

    *loop* is one of :data:`LOOP_CHOICES`. The loop is closed afterwards.
    """
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(event_loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Name the kind of *event_loop* (default: the running one): ``uvloop`` or ``asyncio``."""
    if event_loop is None:
        event_loop = asyncio.get_running_loop()
    module = type(event_loop).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"


def add_loop_argument(parser: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """Add ``--loop {auto,asyncio,uvloop}`` to a command's *parser*."""
    parser.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default=default,
        help=f"event loop ({default} by default): auto is uvloop if installed "
        "(pip install 'rtckit[speed]'), else asyncio's own",
    )
