"""Decoding, resampling and windowing."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument, ResourceExhausted
from services.embedder.audio import decode, frame, resample
from tests.sounds import encode, sound


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (48000, 6)])
def test_decodes_formats_rates_and_channels_to_mono(fmt: str, rate: int, channels: int) -> None:
    if fmt == "MP3" and rate == 8000:
        rate = 16000  # MPEG layer III has no 8 kHz mode in libsndfile's encoder
    if fmt == "MP3":
        channels = min(channels, 2)  # and at most two channels
    data = encode(sound(1, seconds=1.5, rate=rate), rate=rate, fmt=fmt, channels=channels)
    decoded = decode(data, max_seconds=60, target_rate=rate)
    assert decoded.samples.ndim == 1 and decoded.samples.dtype == np.float32
    assert (decoded.sample_rate, decoded.source_rate, decoded.channels) == (rate, rate, channels)
    assert decoded.duration == pytest.approx(1.5, abs=0.1)  # MP3 adds encoder padding
    assert len(decoded.sha256) == 64
    resampled = decode(data, max_seconds=60, target_rate=8000)
    assert resampled.sample_rate == 8000 and resampled.source_rate == rate
    assert len(resampled.samples) == pytest.approx(decoded.duration * 8000, abs=20)


def test_rejects_empty_garbage_and_too_long() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        decode(b"", 60, 16000)
    with pytest.raises(InvalidArgument, match="decode"):
        decode(b"RIFF not really a wave file" * 10, 60, 16000)
    with pytest.raises(InvalidArgument, match="decode"):
        decode(bytes(range(256)) * 40, 60, 16000)
    with pytest.raises(ResourceExhausted, match="limit"):
        decode(encode(sound(1, seconds=3.0)), max_seconds=2, target_rate=16000)


def test_resample_keeps_duration_and_pitch() -> None:
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(tone, 44100, 32000)
    assert len(out) == 32000
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)  # 1 Hz bins over 1 s


def test_frame_covers_the_whole_signal() -> None:
    rate = 100
    windows, offsets = frame(np.arange(1050, dtype=np.float32), rate, window_s=2.0, hop_s=0.5, min_s=0.1)
    assert offsets[0] == 0 and offsets[-1] == pytest.approx(8.5)  # tail window aligned to the end
    assert all(len(w) == 200 for w in windows)
    assert windows[-1][-1] == 1049
    short, offsets = frame(np.ones(50, dtype=np.float32), rate, 2.0, 0.5, min_s=1.0)
    assert len(short) == 1 and len(short[0]) == 100 and offsets == [0.0]  # padded to min, not to the window
    mid, _ = frame(np.ones(150, dtype=np.float32), rate, 2.0, 0.5, min_s=1.0)
    assert len(mid) == 1 and len(mid[0]) == 150


def test_long_audio_is_decoded_without_whole_copies() -> None:
    """Three minutes of 48 kHz stereo: the float copy would be 69 MB; only
    the mono 8 kHz result (5.8 MB) and small blocks may exist at once."""
    import tracemalloc

    rng = np.random.default_rng(0)
    seconds, rate = 180, 48000
    stereo = (rng.standard_normal((seconds * rate, 2)) * 0.1).astype(np.float32)
    data = encode(stereo[:, 0], rate=rate, fmt="WAV", channels=2)
    del stereo
    tracemalloc.start()
    decoded = decode(data, max_seconds=3600, target_rate=8000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert decoded.duration == pytest.approx(seconds) and decoded.channels == 2
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("seconds", [0.3, 1.0, 9.99, 10.0, 10.01, 17.3, 25.0, 61.7])
@pytest.mark.parametrize("hop", [1.0, 5.0, 10.0])
def test_windows_cut_from_blocks_equal_windows_cut_from_the_whole(seconds: float, hop: float) -> None:
    """The streaming framer gives exactly the windows of the whole signal
    (every hop, plus one aligned to the end), however the blocks fall."""
    from services.embedder.audio import Framer, window_starts

    rate, window = 1000, 10.0
    signal = np.random.default_rng(int(seconds * 100)).standard_normal(int(seconds * rate)).astype(np.float32)
    size = round(window * rate)
    if len(signal) <= size:
        expected = [(0.0, np.pad(signal, (0, max(0, rate - len(signal)))))]
    else:
        expected = [
            (s, signal[round(s * rate) : round(s * rate) + size]) for s in window_starts(len(signal), rate, window, hop)
        ]
    cuts = np.sort(np.random.default_rng(1).choice(len(signal), size=min(12, len(signal)), replace=False))
    framer = Framer(rate, window, hop, 1.0)
    got = []
    for block in np.split(signal, cuts):
        got += framer.push(block)
    got += framer.finish()
    assert [o for o, _ in got] == [o for o, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
