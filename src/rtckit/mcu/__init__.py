"""MCU media engine: mix audio, compose video, encode once (numpy, a default dependency).

* :mod:`rtckit.mcu.audio`: mix-minus mixer with a limiter (pure numpy);
* :mod:`rtckit.mcu.video`: grid layouts and the compositor (pure numpy);
* :mod:`rtckit.mcu.engine`: the asyncio engine on aiortc tracks: clocks, shared encoders,
  per-viewer output tracks of pre-encoded packets, stats.

Its modules import numpy (and the engine PyAV); ``import rtckit`` never imports them, nor does
``import rtckit.mcu`` until one of the names below is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
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
# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.mcu.audio": ["AudioMixer", "MixerConfig", "MixResult"],
            "rtckit.mcu.engine": [
                "McuConfig",
                "McuEngine",
                "McuParticipant",
                "McuStats",
                "PacketTrack",
            ],
            "rtckit.mcu.video": [
                "Compositor",
                "CompositorConfig",
                "I420Image",
                "Rect",
                "Tile",
                "grid_layout",
            ],
        },
    )
