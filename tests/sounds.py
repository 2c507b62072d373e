"""Deterministic test sounds: distinct textures (tones, chirps, filtered
noise, rhythms), encoded as real WAV/FLAC/OGG/MP3 bytes."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

RATE = 44100


def sound(seed: int, seconds: float = 4.0, rate: int = RATE) -> np.ndarray:
    """A sound with its own pitch content, rhythm and noise colour."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = np.zeros_like(t)
    for _ in range(rng.integers(1, 4)):
        f0 = rng.uniform(80, 2000)
        sweep = rng.uniform(-0.3, 0.3) * f0
        phase = 2 * np.pi * (f0 * t + sweep * t**2 / (2 * seconds))
        out += rng.uniform(0.2, 1.0) * np.sin(phase) * (1 + 0.3 * np.sin(phase * 2.01))
    # Amplitude rhythm: pulses at a seed-specific rate.
    beat = rng.uniform(1.0, 8.0)
    envelope = 0.3 + 0.7 * (np.sin(2 * np.pi * beat * t) > rng.uniform(-0.5, 0.5))
    noise = rng.standard_normal(len(t))
    kernel = np.ones(int(rng.integers(1, 40))) / 1.0
    noise = np.convolve(noise, kernel / kernel.sum(), mode="same")
    out = out * envelope + rng.uniform(0.05, 0.6) * noise * (1 - envelope * rng.uniform(0, 1))
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def encode(samples: np.ndarray, rate: int = RATE, fmt: str = "WAV", channels: int = 1) -> bytes:
    data = samples if channels == 1 else np.stack([samples] * channels, axis=1)
    buf = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def excerpt(samples: np.ndarray, start: float, end: float, rate: int = RATE, gain: float = 0.5) -> np.ndarray:
    return (samples[int(start * rate) : int(end * rate)] * gain).astype(np.float32)


def music(seed: int, seconds: float, rate: int = 22050) -> np.ndarray:
    """Two voices of random notes (random lengths, timbres and onsets) and
    drum hits: enough structure for landmarks, and no repeating bar."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate) + rate, dtype=np.float32)
    for _voice in range(2):
        start = 0.0
        while start < seconds:
            length = rng.uniform(0.12, 0.6)
            t = np.arange(int(length * rate)) / rate
            f0 = 80 * 2 ** (rng.uniform(0, 48) / 12)
            amps = rng.uniform(0.1, 1.0, 5)
            note = sum(a * np.sin(2 * np.pi * f0 * (h + 1) * t) for h, a in enumerate(amps)) * np.exp(
                -t * rng.uniform(2, 10)
            )
            i = int(start * rate)
            out[i : i + len(t)] += 0.2 * note.astype(np.float32)
            if rng.random() < 0.3:
                out[i : i + 800] += (0.3 * rng.standard_normal(800) * np.exp(-np.arange(800) / 150)).astype(np.float32)
            start += length * rng.uniform(0.7, 1.3)
    out = out[: int(seconds * rate)]
    return out / np.abs(out).max() * 0.8
