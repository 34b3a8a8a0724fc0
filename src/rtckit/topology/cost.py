"""A pure cost model of mesh, SFU and MCU rooms (no I/O; numbers in, numbers out).

For *N* participants each sending one stream of *bitrate* kbit/s:

========  ===========  ===========  ========================  =======================
topology  client up    client down  server in / out           server work
========  ===========  ===========  ========================  =======================
mesh      N-1 streams  N-1 streams  0 / 0 (signaling only)    none
SFU       1 stream     N-1 streams  N / N(N-1)                forward N(N-1) streams
MCU       1 stream     1 stream     N / N                     decode N, mix, encode N
========  ===========  ===========  ========================  =======================

Client CPU follows the streams: a mesh client encodes its video once per connection (WebRTC
peer connections do not share encoders; aiortc and browsers both encode per sender) and
decodes N-1 streams; an SFU client encodes once and decodes N-1; an MCU client encodes once
and decodes one mixed stream.

CPU figures are in *cores* and come from :class:`CpuModel`, whose defaults are the
measurements of 640x480 30 fps VP8 on aiortc written down in the project's notes
(encode ~14% of a core, decode ~2.5%, lean RTP forwarding ~25 µs per packet, a 4-up
composite ~13 ms per frame). They are orders of magnitude for comparing topologies, not a
capacity plan.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from rtckit.errors import ConfigurationError
from rtckit.topology.base import Topology

__all__ = ["CpuModel", "TopologyCost", "compare", "cost", "cost_table"]


def _nonnegative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ConfigurationError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class CpuModel:
    """CPU cost of media work, in cores (1.0 = one core busy)."""

    #: Encoding one video stream, VP8 640x480 at 30 fps, 4.4-5.2 ms per frame.
    encode: float = attrs.field(default=0.14, validator=_nonnegative)
    #: Decoding one video stream, 0.7-0.8 ms per frame.
    decode: float = attrs.field(default=0.025, validator=_nonnegative)
    #: Forwarding one outgoing stream without decoding, per 1000 kbit/s, that is about
    #: 100 packets/s of 1200 B at 25 µs each.
    forward_per_mbps: float = attrs.field(default=0.0025, validator=_nonnegative)
    #: Composing one mixed output picture, a 4-up composite taking 13 ms per frame.
    mix: float = attrs.field(default=0.39, validator=_nonnegative)


@attrs.frozen(kw_only=True)
class TopologyCost:
    """Streams, bandwidth (kbit/s) and CPU (cores) of one room."""

    topology: Topology
    participants: int
    bitrate_kbps: float
    client_up_streams: int
    client_down_streams: int
    client_up_kbps: float
    client_down_kbps: float
    client_connections: int
    client_encodes: int
    client_decodes: int
    client_cpu: float
    server_in_streams: int
    server_out_streams: int
    server_in_kbps: float
    server_out_kbps: float
    server_decodes: int
    server_encodes: int
    server_cpu: float


def cost(
    topology: Topology | str,
    participants: int,
    bitrate_kbps: float = 1000.0,
    *,
    cpu: CpuModel | None = None,
    mcu_personal_mix: bool = True,
) -> TopologyCost:
    """The cost of a room of *participants* each publishing one stream of *bitrate_kbps*.

    *mcu_personal_mix*: the MCU sends each participant a mix without their own picture
    (N mixes and N encodes); ``False``: one shared mix, encoded once.
    """
    topology = Topology.parse(topology)
    if participants < 1:
        raise ConfigurationError(f"participants must be >= 1, got {participants}")
    if bitrate_kbps <= 0:
        raise ConfigurationError(f"bitrate_kbps must be > 0, got {bitrate_kbps}")
    cpu = cpu if cpu is not None else CpuModel()
    n = participants
    others = n - 1
    if topology is Topology.MESH:
        up, down, connections, encodes = others, others, others, others
        server_in = server_out = server_decodes = server_encodes = 0
        server_cpu = 0.0
    elif topology is Topology.SFU:
        up, down, connections, encodes = min(1, others), others, 1, 1
        server_in, server_out = n if others else 0, n * others
        server_decodes = server_encodes = 0
        server_cpu = server_out * cpu.forward_per_mbps * bitrate_kbps / 1000
    else:
        alone = others == 0
        up, down, connections, encodes = (0, 0, 1, 1) if alone else (1, 1, 1, 1)
        server_in = server_out = 0 if alone else n
        server_decodes = server_in
        mixes = (n if mcu_personal_mix else 1) if not alone else 0
        server_encodes = mixes
        server_cpu = server_decodes * cpu.decode + mixes * (cpu.mix + cpu.encode)
    decodes = down
    return TopologyCost(
        topology=topology,
        participants=n,
        bitrate_kbps=bitrate_kbps,
        client_up_streams=up,
        client_down_streams=down,
        client_up_kbps=up * bitrate_kbps,
        client_down_kbps=down * bitrate_kbps,
        client_connections=connections,
        client_encodes=encodes if up else 0,
        client_decodes=decodes,
        client_cpu=(encodes if up else 0) * cpu.encode + decodes * cpu.decode,
        server_in_streams=server_in,
        server_out_streams=server_out,
        server_in_kbps=server_in * bitrate_kbps,
        server_out_kbps=server_out * bitrate_kbps,
        server_decodes=server_decodes,
        server_encodes=server_encodes,
        server_cpu=server_cpu,
    )


def compare(
    participants: int, bitrate_kbps: float = 1000.0, *, cpu: CpuModel | None = None
) -> tuple[TopologyCost, TopologyCost, TopologyCost]:
    """Mesh, SFU and MCU costs of the same room."""
    return (
        cost(Topology.MESH, participants, bitrate_kbps, cpu=cpu),
        cost(Topology.SFU, participants, bitrate_kbps, cpu=cpu),
        cost(Topology.MCU, participants, bitrate_kbps, cpu=cpu),
    )


def cost_table(
    sizes: Iterable[int], bitrate_kbps: float = 1000.0, *, cpu: CpuModel | None = None
) -> list[tuple[str, ...]]:
    """Rows (with a header row) comparing the topologies for each room size in *sizes*."""
    rows: list[tuple[str, ...]] = [
        (
            "N",
            "topology",
            "client up",
            "client down",
            "client CPU",
            "server in/out",
            "server out",
            "server CPU",
        )
    ]
    rows.extend(
        (
            str(n),
            item.topology.value,
            f"{item.client_up_streams} ({item.client_up_kbps / 1000:g} Mb/s)",
            f"{item.client_down_streams} ({item.client_down_kbps / 1000:g} Mb/s)",
            f"{item.client_cpu:.2f}",
            f"{item.server_in_streams}/{item.server_out_streams}",
            f"{item.server_out_kbps / 1000:g} Mb/s",
            f"{item.server_cpu:.2f}",
        )
        for n in sizes
        for item in compare(n, bitrate_kbps, cpu=cpu)
    )
    return rows
