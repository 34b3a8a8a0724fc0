"""Deprecated alias of :mod:`rtckit.ice.doctor`."""

from __future__ import annotations

from rtckit._moved import moved_names, same_names

__all__ = [
    "DoctorConfig",
    "DoctorReport",
    "DoctorServer",
    "ProbeResult",
    "format_report",
    "probe_server",
    "run_doctor",
    "servers_from_ice",
    "with_all_transports",
]

__getattr__ = moved_names(__name__, same_names("rtckit.ice.doctor", __all__))
