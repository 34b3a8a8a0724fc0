"""Unit tests of the MCU audio mixer (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from rtckit.errors import ConfigurationError
from rtckit.mcu.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioMixer,
    Limiter,
    MixerConfig,
    dbfs,
    silence,
    soft_clip,
)

FREQS = {"a": 440.0, "b": 660.0, "c": 880.0, "d": 1100.0}


def tone(freq: float, index: int = 0, amplitude: float = 6000.0) -> np.ndarray:
    t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / SAMPLE_RATE
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_freqs(samples: np.ndarray, threshold: float = 0.2) -> set[float]:
    """Frequencies among FREQS whose magnitude is above threshold x the strongest."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    mags = {f: float(spectrum[np.argmin(np.abs(freqs - f))]) for f in FREQS.values()}
    top = max(mags.values())
    return {f for f, m in mags.items() if top > 0 and m >= threshold * top}


def test_mix_minus_excludes_own_voice() -> None:
    mixer: AudioMixer[str] = AudioMixer()
    out = None
    for i in range(3):
        out = mixer.mix({k: tone(f, i) for k, f in FREQS.items()})
    assert out is not None
    assert out.speakers == frozenset(FREQS)
    assert out.distinct_mixes == 5
    assert peak_freqs(out.common) == set(FREQS.values())
    for k, f in FREQS.items():
        heard = peak_freqs(out.for_listener(k))
        assert f not in heard
        assert heard == set(FREQS.values()) - {f}


def test_silent_participants_share_the_common_mix_exactly() -> None:
    mixer: AudioMixer[str] = AudioMixer(MixerConfig(hangover_frames=0))
    out = mixer.mix({"a": tone(440), "b": silence(), "c": None, "d": tone(1100) // 1000})
    # d is far below the gate: it is gated out, so it shares the common mix too
    assert out.speakers == frozenset({"a"})
    assert out.distinct_mixes == 2
    for k in ("b", "c", "d", "someone-else"):
        assert out.for_listener(k) is out.common
    assert peak_freqs(out.common) == {440.0}
    # a alone in the room hears silence
    assert not out.for_listener("a").any()


def test_hangover_keeps_speaker_through_short_pause() -> None:
    mixer: AudioMixer[str] = AudioMixer(MixerConfig(hangover_frames=2))
    assert mixer.mix({"a": tone(440)}).speakers == {"a"}
    assert mixer.mix({"a": silence()}).speakers == {"a"}
    assert mixer.mix({"a": silence()}).speakers == {"a"}
    assert mixer.mix({"a": silence()}).speakers == frozenset()
    # a missing frame (late packet) counts as silence: the hangover holds
    mixer.mix({"a": tone(440)})
    out = mixer.mix({"a": None, "b": tone(660)})
    assert out.speakers == {"a", "b"}
    assert peak_freqs(out.for_listener("a")) == {660.0}
    mixer.mix({"a": None})
    assert "a" not in mixer.mix({"a": None}).speakers


def test_loud_mix_is_limited_without_wraparound() -> None:
    mixer: AudioMixer[str] = AudioMixer()
    loud = {k: tone(f, amplitude=30000) for k, f in FREQS.items()}
    for _ in range(3):
        out = mixer.mix(loud)
        assert out.common.dtype == np.int16
        # naive int16 sum wraps; the limited mix stays within -1 dBFS-ish and keeps its sign
        ceiling = 32767 * 10 ** (-1 / 20)
        assert np.abs(out.common.astype(np.int32)).max() <= 32767
        assert np.abs(out.common.astype(np.int32)).max() >= 0.5 * ceiling
        naive = np.sum([f.astype(np.float64) for f in loud.values()], axis=0)
        signs_agree = np.sign(out.common) == np.sign(np.rint(naive))
        assert signs_agree[np.abs(naive) > 1000].all()


def test_limiter_releases_back_to_unity() -> None:
    limiter = Limiter(MixerConfig(release_per_frame=0.5))
    limiter.process(np.full(FRAME_SAMPLES, 100000.0, dtype=np.float32))
    assert limiter.gain < 0.5
    quiet = np.full(FRAME_SAMPLES, 1000.0, dtype=np.float32)
    for _ in range(30):
        out = limiter.process(quiet)
    assert limiter.gain == pytest.approx(1.0, abs=1e-3)
    assert out[-1] == pytest.approx(1000, abs=2)


def test_quiet_mix_passes_unchanged() -> None:
    mixer: AudioMixer[str] = AudioMixer()
    a, b = tone(440, amplitude=3000), tone(660, amplitude=3000)
    out = mixer.mix({"a": a, "b": b})
    np.testing.assert_array_equal(out.common, a.astype(np.int32) + b)
    np.testing.assert_array_equal(out.for_listener("a"), b)


def test_soft_clip_is_bounded_and_monotonic() -> None:
    x = np.linspace(-200000, 200000, 4001, dtype=np.float32)
    y = soft_clip(x, knee=0.7)
    assert np.all(np.abs(y) <= 32767)
    assert np.all(np.diff(y) >= 0)
    small = np.array([100.0, -20000.0], dtype=np.float32)
    np.testing.assert_array_equal(soft_clip(small, knee=0.7), small)


def test_bad_frames_and_config_are_rejected() -> None:
    mixer: AudioMixer[str] = AudioMixer()
    with pytest.raises(ConfigurationError):
        mixer.mix({"a": np.zeros(480, dtype=np.int16)})
    with pytest.raises(ConfigurationError):
        mixer.mix({"a": np.zeros(FRAME_SAMPLES, dtype=np.float32)})
    with pytest.raises(ConfigurationError):
        MixerConfig(knee_dbfs=-0.5, ceiling_dbfs=-1.0)
    with pytest.raises(ConfigurationError):
        MixerConfig(gate_dbfs=3.0)
    with pytest.raises(ConfigurationError):
        MixerConfig(release_per_frame=0.0)


def test_forget_drops_state() -> None:
    mixer: AudioMixer[str] = AudioMixer()
    mixer.mix({"a": tone(440), "b": tone(660)})
    assert set(mixer.participants_with_state()) == {"a", "b"}
    mixer.forget("a")
    assert set(mixer.participants_with_state()) == {"b"}


def test_dbfs() -> None:
    assert dbfs(silence()) == float("-inf")
    full = np.full(100, 32767, dtype=np.int16)
    assert dbfs(full) == pytest.approx(0.0, abs=1e-6)
    assert dbfs(tone(440, amplitude=32767)) == pytest.approx(-3.01, abs=0.05)
