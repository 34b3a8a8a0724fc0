"""``rtckit serve --config FILE``: the video-room server for deployments, from a TOML file.

The file format is :mod:`rtckit.server.config`; room tokens are required by default. A bad
file is reported with the file, table and key at fault (exit status 2). ``--check`` validates
the file and prints what would be served.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from rtckit.cli.demo import serve_until_signal
from rtckit.cli.workers import WORKER_INDEX_ENV, check_workers, supervise, worker_command
from rtckit.errors import ConfigurationError
from rtckit.eventloop import add_loop_argument, run
from rtckit.server.config import ServeConfig, load_config

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``serve`` sub-command."""
    serve = subparsers.add_parser(
        "serve",
        help="run the video-room server from a TOML configuration file",
        description="Run the rtckit server (room page, signaling, ICE config, metrics) as "
        "configured by FILE (see the deployment guide). Stops cleanly on Ctrl-C or SIGTERM.",
    )
    serve.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the server's TOML configuration file (format: rtckit.server.config, "
        "docs/howto/deploy.rst)",
    )
    serve.add_argument(
        "--check", action="store_true", help="check the configuration, print a summary, exit"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (SO_REUSEPORT) and, through the [cluster] "
        "backplane, every room (1)",
    )
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_loop_argument(serve, default="asyncio")  # uvloop opt-in: see rtckit.eventloop
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    """Every configuration error names the file, also those found after parsing it (a
    topology or the metrics extra this installation lacks, certificates, ports)."""
    source = str(args.config)
    try:
        return _serve_file(args)
    except ConfigurationError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise ConfigurationError(f"{source}: {exc}") from exc


def _serve_file(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    check_workers(config, args.workers)
    if args.check:
        _summary(config, sys.stdout)
        return 0
    if args.workers > 1:
        cluster = config.cluster  # check_workers: --workers needs one
        return supervise(
            worker_command(args.config, args.loop),
            args.workers,
            sys.stdout,
            drain_timeout=0.0 if cluster is None else cluster.drain_timeout,
        )
    from rtckit.server.logs import configure_logging

    worker = 0
    if args.worker:
        with contextlib.suppress(ValueError):
            worker = int(os.environ.get(WORKER_INDEX_ENV, "0"))

    handler = configure_logging(config.logging.level, config.logging.format)
    try:
        status: int = run(
            serve_until_signal(
                config,
                sys.stdout,
                demo=False,
                ca=None,
                banner=None,
                reuse_port=args.worker,
                worker=worker,
            ),
            loop=args.loop,
        )
        return status
    finally:
        logging.getLogger("rtckit").removeHandler(handler)


def _summary(config: ServeConfig, out: TextIO) -> None:
    from rtckit.server.app import check_topologies, new_backplane, new_metrics

    # what the real start would refuse, --check refuses too
    check_topologies(config)
    if config.metrics.enabled:
        new_metrics(required=True)
    new_backplane(config)  # the redis extra; Redis itself is reached at the start
    server = config.server
    scheme = "http" if config.tls is None else "https"
    host = f"[{server.host}]" if ":" in server.host else server.host
    port = server.port or "0 (any free port)"
    print(f"listen: {scheme}://{host}:{port}/", file=out)
    if server.http_port is not None:
        http_port = server.http_port or "0 (any free port)"
        print(f"redirect: http port {http_port} -> {scheme}", file=out)
    print(f"auth: {config.auth.mode}", file=out)
    print(f"ice: {', '.join(config.ice.urls) or 'host candidates only'}", file=out)
    rooms = ", ".join(f"{r.name} ({r.topology})" for r in config.rooms.declared) or "none"
    print(f"declared rooms: {rooms}", file=out)
    on_demand = config.rooms.default_topology if config.rooms.create_on_demand else "off"
    print(f"rooms on demand: {on_demand}", file=out)
    metrics = config.metrics.path if config.metrics.enabled else "off"
    print(f"metrics: {metrics}", file=out)
    cluster = config.cluster
    shared = "off (one node)" if cluster is None else f"redis, namespace {cluster.namespace}"
    print(f"cluster: {shared}", file=out)
