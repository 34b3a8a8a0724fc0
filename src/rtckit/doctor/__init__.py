"""Deprecated: the names of ``rtckit.doctor`` moved to :mod:`rtckit.ice.doctor`.

Each old name still imports from here, with a :class:`DeprecationWarning` that names its new
path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.ice import doctor as _ice_doctor

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        "DoctorConfig": ("rtckit.ice.doctor.DoctorConfig", _ice_doctor.DoctorConfig),
        "DoctorReport": ("rtckit.ice.doctor.DoctorReport", _ice_doctor.DoctorReport),
        "DoctorServer": ("rtckit.ice.doctor.DoctorServer", _ice_doctor.DoctorServer),
        "format_report": ("rtckit.ice.doctor.format_report", _ice_doctor.format_report),
        "probe_server": ("rtckit.ice.doctor.probe_server", _ice_doctor.probe_server),
        "ProbeResult": ("rtckit.ice.doctor.ProbeResult", _ice_doctor.ProbeResult),
        "run_doctor": ("rtckit.ice.doctor.run_doctor", _ice_doctor.run_doctor),
        "servers_from_ice": ("rtckit.ice.doctor.servers_from_ice", _ice_doctor.servers_from_ice),
        "with_all_transports": (
            "rtckit.ice.doctor.with_all_transports",
            _ice_doctor.with_all_transports,
        ),
    },
)
