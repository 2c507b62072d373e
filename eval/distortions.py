"""The distortions of the near-duplicate task. Each takes (samples, rate,
rng) and returns (samples, rate): what a copy suffers on its way back."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import soundfile as sf

from services.embedder.audio import resample

Distortion = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, int]]


def gain(db: float, clip: bool = False) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        y = x * 10 ** (db / 20)
        return (np.clip(y, -1, 1) if clip else y).astype(np.float32), rate

    return apply


def round_trip(rate_to: int) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return resample(resample(x, rate, rate_to), rate_to, rate), rate

    return apply


def codec(fmt: str, subtype: str, quality: float) -> Distortion:
    """Encode and decode with libsndfile; `quality` is its compression
    level (0 best, 1 smallest)."""

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        buf = io.BytesIO()
        sf.write(buf, np.clip(x, -1, 1), rate, format=fmt, subtype=subtype, compression_level=quality)
        buf.seek(0)
        y, out_rate = sf.read(buf, dtype="float32")
        return y, out_rate

    return apply


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum))
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0
    return np.fft.irfft(spectrum, n)


def noise(colour: str, snr_db: float) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        n = rng.standard_normal(len(x)) if colour == "white" else _pink(len(x), rng)
        power = float(np.mean(x**2)) or 1e-12
        n *= np.sqrt(power / 10 ** (snr_db / 10) / float(np.mean(n**2)))
        return (x + n).astype(np.float32), rate

    return apply


def chain(*steps: Distortion) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        for step in steps:
            x, rate = step(x, rate, rng)
        return x, rate

    return apply


DISTORTIONS: dict[str, Distortion] = {
    "clean": lambda x, rate, rng: (x, rate),
    "gain_-12dB": gain(-12),
    "gain_+6dB_clip": gain(6, clip=True),
    "resample_16k": round_trip(16000),
    "mp3": codec("MP3", "MPEG_LAYER_III", 0.5),
    "vorbis_low": codec("OGG", "VORBIS", 1.0),
    "white_10dB": noise("white", 10),
    "white_5dB": noise("white", 5),
    "pink_10dB": noise("pink", 10),
    "pink_5dB": noise("pink", 5),
    "combo_gain_16k_mp3_pink10": chain(
        gain(-6), round_trip(16000), codec("MP3", "MPEG_LAYER_III", 0.5), noise("pink", 10)
    ),
}
