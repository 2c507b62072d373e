"""Decoding uploaded bytes into mono float32 samples at a model's rate."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np
import soundfile as sf
import soxr

from services.common.errors import InvalidArgument, ResourceExhausted

SUPPORTED = "WAV, FLAC, OGG (Vorbis/Opus) or MP3"


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Audio as the source had it, mixed down to mono."""

    samples: np.ndarray  # float32, mono, at `sample_rate`
    sample_rate: int
    channels: int
    sha256: str

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode(data: bytes, max_seconds: float) -> Decoded:
    """Decodes any sample rate and channel count; mixes down to mono."""
    if not data:
        raise InvalidArgument("the upload is empty: send the bytes of a " + SUPPORTED + " file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames > 0 and f.frames / f.samplerate > max_seconds:
                raise ResourceExhausted(
                    f"audio is {f.frames / f.samplerate:.0f} s long; the limit is {max_seconds:.0f} s "
                    "(AUDIOSEARCH_MAX_AUDIO_SECONDS)"
                )
            samples = f.read(dtype="float32", always_2d=True)
            rate, channels = f.samplerate, f.channels
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InvalidArgument(f"could not decode the upload as audio ({exc}); send a {SUPPORTED} file") from None
    if len(samples) == 0:
        raise InvalidArgument("the audio file holds no samples")
    mono = samples.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise InvalidArgument("the audio holds NaN or infinite samples")
    return Decoded(np.ascontiguousarray(mono), rate, channels, digest)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """High-quality sample-rate conversion (libsoxr)."""
    if source_rate == target_rate:
        return samples
    return soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def frame(
    samples: np.ndarray, rate: int, window_s: float, hop_s: float, min_s: float
) -> tuple[list[np.ndarray], list[float]]:
    """Slices audio into overlapping windows of `window_s`. Audio shorter
    than a window stays one window of its own length (zero-padded to
    `min_s`), so padding never dilutes a short sound. The tail is covered by
    a last window aligned to the end, so no sound is left out.
    Returns (windows, offsets in seconds)."""
    size, hop = round(window_s * rate), round(hop_s * rate)
    if len(samples) <= size:
        minimum = round(min_s * rate)
        if len(samples) < minimum:
            samples = np.pad(samples, (0, minimum - len(samples)))
        return [samples], [0.0]
    starts = list(range(0, len(samples) - size + 1, hop))
    if starts[-1] + size < len(samples):
        starts.append(len(samples) - size)
    return [samples[s : s + size] for s in starts], [s / rate for s in starts]
