"""MCU media engine: mix audio, compose video, encode once (numpy, a default dependency).

* :mod:`rtckit.mcu.audio`: mix-minus mixer with a limiter (pure numpy);
* :mod:`rtckit.mcu.video`: grid layouts and the compositor (pure numpy);
* :mod:`rtckit.mcu.engine`: the asyncio engine on aiortc tracks: clocks, shared encoders,
  per-viewer output tracks of pre-encoded packets, stats.

This package imports numpy and PyAV; ``import rtckit`` never imports it.
"""

from __future__ import annotations

from rtckit.mcu.audio import AudioMixer, MixerConfig, MixResult
from rtckit.mcu.engine import McuConfig, McuEngine, McuParticipant, McuStats, PacketTrack
from rtckit.mcu.video import Compositor, CompositorConfig, I420Image, Rect, Tile, grid_layout

__all__ = [
    "AudioMixer",
    "Compositor",
    "CompositorConfig",
    "I420Image",
    "McuConfig",
    "McuEngine",
    "McuParticipant",
    "McuStats",
    "MixResult",
    "MixerConfig",
    "PacketTrack",
    "Rect",
    "Tile",
    "grid_layout",
]
