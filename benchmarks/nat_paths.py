"""Connect time through each ICE path in the NAT lab (needs root, ip, iptables, coturn).

Run: ``sudo python benchmarks/nat_paths.py [--runs N]``. For each path, N pairs of real aiortc
peer processes (``rtckit.testing.natlab.connect_peers``) connect across the lab; the figure is
the offerer's time from having both descriptions to ``connectionState == "connected"`` (and to
the first data channel round trip), as a median, and as a ratio to the direct host path
measured in the same run. The failure row is the wall time until both peers report
``IceError`` for two symmetric NATs with STUN only (aioice STUN retransmissions = 2).
Writes ``docs/topics/nat-paths-benchmark.rst``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rtckit.ice import IceConfig, IceServerUri  # noqa: E402
from rtckit.ice.turn import TurnRestAuth  # noqa: E402
from rtckit.testing.natlab import NatLab, connect_peers, lab_tls  # noqa: E402

SECRET = "bench-secret"  # noqa: S105 - a lab-only shared secret
OUTPUT = ROOT / "docs" / "topics" / "nat-paths-benchmark.rst"


async def bench(runs: int, time_budget: float) -> list[tuple[str, str, list[float], list[float]]]:
    rows: list[tuple[str, str, list[float], list[float]]] = []
    deadline = time.monotonic() + time_budget
    with tempfile.TemporaryDirectory() as workdir:
        async with NatLab() as lab:
            await lab.add_host("pa")
            await lab.add_host("pb")
            await lab.add_host("ca", nat="cone")
            await lab.add_host("cb", nat="cone")
            await lab.add_host("sa", nat="symmetric")
            await lab.add_host("sb", nat="symmetric")
            auth = TurnRestAuth(secrets=[SECRET], ttl=3600)
            tls = lab_tls(Path(workdir), lab.public_address)
            config = lab.coturn_config(auth, tls=tls)
            async with lab.run_coturn(config), lab.run_stun_server(port=3479) as stun_uri:
                _coturn_stun, turn_udp, turn_tcp, turns = config.uris()

                def turn(uri: IceServerUri) -> IceConfig:
                    return IceConfig(servers=[auth.ice_server([uri], "bench")])

                stun = IceConfig.from_uris([stun_uri])
                scenarios = [
                    ("host", "no NAT, no server", "pa", "pb", IceConfig()),
                    ("srflx", "cone NATs, STUN", "ca", "cb", stun),
                    ("relay UDP", "symmetric NATs, TURN/UDP", "sa", "sb", turn(turn_udp)),
                    ("relay TCP", "symmetric NATs, TURN/TCP", "sa", "sb", turn(turn_tcp)),
                    ("relay TLS", "symmetric NATs, TURN/TLS", "sa", "sb", turn(turns)),
                ]
                env = {"SSL_CERT_FILE": str(tls.ca_file)}
                for name, setup, a, b, servers in scenarios:
                    connect: list[float] = []
                    data: list[float] = []
                    for _ in range(runs):
                        if time.monotonic() > deadline:
                            break
                        offer, answer = await connect_peers(lab, a, b, ice_servers=servers, env=env)
                        if not (offer.connected and answer.connected):
                            raise SystemExit(f"{name}: did not connect: {offer.error}")
                        assert offer.connect_seconds is not None
                        assert offer.data_seconds is not None
                        connect.append(offer.connect_seconds)
                        data.append(offer.data_seconds)
                    rows.append((name, setup, connect, data))
                failures: list[float] = []
                for _ in range(max(1, runs // 2)):
                    if time.monotonic() > deadline:
                        break
                    started = time.monotonic()
                    offer, answer = await connect_peers(
                        lab, "sa", "sb", ice_servers=stun, stun_retries=2, ice_timeout=30
                    )
                    if offer.connected or offer.state != "failed":
                        raise SystemExit(f"symmetric STUN-only did not fail cleanly: {offer}")
                    failures.append(time.monotonic() - started)
                rows.append(("failure", "symmetric NATs, STUN only", failures, []))
    return rows


def render(rows: list[tuple[str, str, list[float], list[float]]], runs: int) -> str:
    baseline = statistics.median(rows[0][2])
    header = (
        "..\n   Written by benchmarks/nat_paths.py; do not edit by hand.\n\n"
        "Measured connect times\n----------------------\n\n"
        f"Median of {runs} runs per path on the build machine (2 cores, noisy: allow +-30%),\n"
        "aiortc 1.16 / aioice 0.13, STUN from rtckit's own server, TURN from coturn 4.6, all in\n"
        "one NAT lab. *Connected*: both\n"
        'descriptions set to ``connectionState == "connected"`` on the offerer; *data*: to the\n'
        "first data channel round trip; *ratio*: connected time over the direct host path's.\n"
        "The failure row is the wall time (peer processes included) until both peers report\n"
        "``IceError`` with aioice's STUN retransmissions set to 2.\n\n"
    )
    table = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - Path",
        "     - Lab setup",
        "     - Connected (s)",
        "     - Data (s)",
        "     - Ratio",
    ]
    for name, setup, connect, data in rows:
        median = statistics.median(connect) if connect else float("nan")
        table += [
            f"   * - {name}",
            f"     - {setup}",
            f"     - {median:.3f}",
            f"     - {statistics.median(data):.3f}" if data else "     - --",
            f"     - {median / baseline:.2f}" if data else "     - --",
        ]
    return header + "\n".join(table) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--time-budget", type=float, default=240.0, help="seconds, overall")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs page")
    args = parser.parse_args()
    rows = asyncio.run(bench(args.runs, args.time_budget))
    text = render(rows, args.runs)
    print(text)
    if not args.no_write:
        OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
