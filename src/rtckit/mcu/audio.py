"""Audio mixing for the MCU: mix-minus on 20 ms frames, pure numpy.

No asyncio, no aiortc: :class:`AudioMixer` takes one frame of int16 samples per participant and
returns the mixes to encode. Everything is synchronous and deterministic, so the tests feed it
arrays and check arrays.

What "speaking" means
---------------------
A participant is **speaking** in a frame when its frame's RMS level is at or above
:attr:`MixerConfig.gate_dbfs` (default -55 dBFS), or was within the last
:attr:`MixerConfig.hangover_frames` frames (default 10, i.e. 200 ms, so the tails of words and
short pauses do not flap the state). Frames of participants who are not speaking are **left out
of the mix** (a noise gate). This is what makes sharing exact rather than approximate: a
non-speaker contributes nothing, so its mix-minus *is* the common mix, sample for sample, and
it can receive the one shared encoding of the common mix. A missing frame (a late or lost
packet) counts as a silent one: it does not end speaking before the hangover runs out.

The hangover also keeps the encoded streams clean. Opus frames overlap, so the first packet a
listener gets from another encoder still carries a few milliseconds of what that encoder coded
before: a speaker switched to the common stream right after talking would hear a faint echo of
themselves. After 200 ms of silence the common stream holds none of their voice any more, and
the switch is inaudible.

So per frame there are ``1 + len(speakers)`` distinct mixes:

* the **common mix**: the sum of every speaker, heard by every non-speaker;
* one **mix-minus** per speaker: the common sum minus that speaker's own samples.

Each mix has its own limiter state (a mix-minus can be much quieter than the common mix).

Level and clipping
------------------
Inputs are summed in float32 with unit gain (no per-input automatic gain control). Each output
mix then goes through a limiter: a gain that drops at once when the frame's peak would exceed
:attr:`MixerConfig.ceiling_dbfs` (default -1 dBFS) and recovers towards 1 with
:attr:`MixerConfig.release_per_frame`, ramped linearly across the frame so that the gain never
steps inside a frame; a ``tanh`` soft knee above :attr:`MixerConfig.knee_dbfs` catches what the
ramp lets through, and a final clip makes int16 wraparound impossible.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

import attrs
import numpy as np
import numpy.typing as npt

from rtckit.errors import ConfigurationError

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioMixer",
    "Limiter",
    "MixResult",
    "MixerConfig",
    "dbfs",
    "silence",
    "soft_clip",
]

SAMPLE_RATE = 48000
"""Sample rate of the mixer, in Hz (Opus' native rate)."""

FRAME_SAMPLES = 960
"""Samples per mixer frame (20 ms at 48 kHz, one Opus packet)."""

_FULL_SCALE = 32767.0

_K = TypeVar("_K", bound=Hashable)


def _db_to_linear(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def dbfs(samples: npt.NDArray[np.integer] | npt.NDArray[np.floating]) -> float:
    """RMS level of int16-scaled samples in dB relative to full scale (``-inf`` for silence)."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms == 0.0:
        return -math.inf
    return 20.0 * math.log10(rms / _FULL_SCALE)


def silence(samples: int = FRAME_SAMPLES) -> npt.NDArray[np.int16]:
    """A frame of int16 silence."""
    return np.zeros(samples, dtype=np.int16)


def soft_clip(x: npt.NDArray[np.float32], *, knee: float) -> npt.NDArray[np.float32]:
    """Soft-knee limit of int16-scaled float samples, in place-free form.

    Samples with ``|x| <= knee * 32767`` pass unchanged; above the knee, the excess is
    compressed with ``tanh`` so that the output approaches but never exceeds full scale.
    """
    k = knee * _FULL_SCALE
    span = _FULL_SCALE - k
    mag = np.abs(x)
    over = mag > k
    if not over.any():
        return x
    out = x.copy()
    squashed = k + span * np.tanh((mag[over] - k) / span)
    out[over] = np.sign(x[over]) * squashed
    return out


def _check_frame_samples(_inst: object, _attr: object, value: int) -> None:
    if value <= 0:
        raise ConfigurationError(f"frame_samples must be positive, got {value}")


def _check_negative_db(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value <= 0.0:
        raise ConfigurationError(f"{attr.name} must be <= 0 dBFS, got {value}")


def _check_release(_inst: object, _attr: object, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigurationError(f"release_per_frame must be in (0, 1], got {value}")


def _check_hangover(_inst: object, _attr: object, value: int) -> None:
    if value < 0:
        raise ConfigurationError(f"hangover_frames must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class MixerConfig:
    """Settings of :class:`AudioMixer`."""

    frame_samples: int = attrs.field(default=FRAME_SAMPLES, validator=_check_frame_samples)
    """Samples per frame (mono)."""
    gate_dbfs: float = attrs.field(default=-55.0, validator=_check_negative_db)
    """RMS level at or above which a frame counts as speech."""
    hangover_frames: int = attrs.field(default=10, validator=_check_hangover)
    """Frames a participant stays "speaking" after its last frame above the gate."""
    ceiling_dbfs: float = attrs.field(default=-1.0, validator=_check_negative_db)
    """Peak level the limiter's gain aims at."""
    knee_dbfs: float = attrs.field(default=-3.0, validator=_check_negative_db)
    """Level above which the soft clipper starts compressing."""
    release_per_frame: float = attrs.field(default=0.05, validator=_check_release)
    """Fraction of the way back to unity gain the limiter recovers per frame."""

    def __attrs_post_init__(self) -> None:
        if self.knee_dbfs > self.ceiling_dbfs:
            raise ConfigurationError(
                f"knee_dbfs ({self.knee_dbfs}) must not be above ceiling_dbfs ({self.ceiling_dbfs})"
            )


class Limiter:
    """Gain limiter for one output stream (state: the gain at the end of the last frame)."""

    def __init__(self, config: MixerConfig) -> None:
        self._ceiling = _db_to_linear(config.ceiling_dbfs) * _FULL_SCALE
        self._knee = _db_to_linear(config.knee_dbfs)
        self._release = config.release_per_frame
        self.gain = 1.0
        """Gain applied at the end of the last frame (1.0 = untouched)."""

    def process(self, mix: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
        """Limit one frame of summed samples (float32, int16 scale) to int16."""
        peak = float(np.max(np.abs(mix))) if mix.size else 0.0
        target = 1.0
        if peak * self.gain > self._ceiling:
            target = self._ceiling / peak  # attack: at once
        else:
            # release: recover part of the way to unity, but not past what this frame allows
            target = self.gain + (1.0 - self.gain) * self._release
            if peak > 0.0:
                target = min(target, self._ceiling / peak)
        start = self.gain
        self.gain = target
        if start == 1.0 and target == 1.0:
            scaled = mix
        else:
            ramp = np.linspace(start, target, num=mix.size, dtype=np.float32)
            scaled = mix * ramp
        limited = soft_clip(scaled, knee=self._knee)
        return np.clip(np.rint(limited), -32768, 32767).astype(np.int16)


@attrs.frozen
class MixResult(Generic[_K]):
    """The distinct mixes of one frame.

    Listeners who are not in :attr:`speakers` (including participants that sent nothing) hear
    :attr:`common`; each speaker hears its own entry in :attr:`mix_minus`.
    """

    common: npt.NDArray[np.int16]
    """Mix of every speaker."""
    mix_minus: Mapping[_K, npt.NDArray[np.int16]]
    """For each speaker, the mix of every other speaker (without themselves)."""
    speakers: frozenset[_K]
    """Participants whose audio is in the mix this frame."""

    def for_listener(self, listener: _K) -> npt.NDArray[np.int16]:
        """The samples ``listener`` hears in this frame."""
        own = self.mix_minus.get(listener)
        return self.common if own is None else own

    @property
    def distinct_mixes(self) -> int:
        """How many different streams must be encoded for this frame."""
        return 1 + len(self.mix_minus)


class AudioMixer(Generic[_K]):
    """Mix-minus mixer on fixed-size int16 mono frames.

    Call :meth:`mix` once per frame period with the frame of every participant that has one;
    a missing participant (or ``None``) is silence. Limiter and speaking state carry over from
    frame to frame; :meth:`forget` drops a participant's state when it leaves.
    """

    def __init__(self, config: MixerConfig | None = None) -> None:
        self.config = config if config is not None else MixerConfig()
        self._gate = _db_to_linear(self.config.gate_dbfs) * _FULL_SCALE
        self._hangover: dict[_K, int] = {}
        self._common_limiter = Limiter(self.config)
        self._limiters: dict[_K, Limiter] = {}
        self._silence = np.zeros(self.config.frame_samples, dtype=np.int16)

    def forget(self, participant: _K) -> None:
        """Drop the speaking and limiter state of a participant who left."""
        self._hangover.pop(participant, None)
        self._limiters.pop(participant, None)

    def _is_speaking(self, participant: _K, frame: npt.NDArray[np.int16] | None) -> bool:
        loud = False
        if frame is not None and frame.size:
            rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float32))))
            loud = rms >= self._gate
        if loud:
            self._hangover[participant] = self.config.hangover_frames
            return True
        left = self._hangover.get(participant, 0)
        if left > 0:
            # a quiet or missing frame (a late packet) within the hangover: still speaking,
            # so the listener stays on its own stream instead of flapping between encoders
            self._hangover[participant] = left - 1
            return True
        self._hangover.pop(participant, None)
        return False

    def mix(self, frames: Mapping[_K, npt.NDArray[np.int16] | None]) -> MixResult[_K]:
        """Mix one frame.

        ``frames`` maps each participant to its frame (``frame_samples`` int16 mono samples) or
        ``None`` for a participant with nothing this period. Raises :class:`ValueError` for a
        frame of the wrong shape or type.
        """
        n = self.config.frame_samples
        speakers: dict[_K, npt.NDArray[np.int16]] = {}
        for participant, frame in frames.items():
            if frame is not None and (frame.dtype != np.int16 or frame.shape != (n,)):
                raise ConfigurationError(
                    f"frame of {participant!r} must be int16 of shape ({n},), "
                    f"got {frame.dtype} {frame.shape}"
                )
            if self._is_speaking(participant, frame):
                speakers[participant] = frame if frame is not None else self._silence
        total = np.zeros(n, dtype=np.float32)
        for frame in speakers.values():
            total += frame
        common = self._common_limiter.process(total)
        mix_minus: dict[_K, npt.NDArray[np.int16]] = {}
        for participant, frame in speakers.items():
            limiter = self._limiters.get(participant)
            if limiter is None:
                limiter = self._limiters[participant] = Limiter(self.config)
            mix_minus[participant] = limiter.process(total - frame)
        for participant in list(self._limiters):
            if participant not in speakers:
                # a new speaking stretch starts from unity gain, like a fresh encoder
                del self._limiters[participant]
        return MixResult(common=common, mix_minus=mix_minus, speakers=frozenset(speakers))

    def participants_with_state(self) -> Iterable[_K]:
        """Participants the mixer currently holds speaking state for."""
        return tuple(self._hangover)
