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


BLOCK = 1 << 16  # frames decoded at a time


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Audio mixed down to mono and resampled to the model's rate."""

    samples: np.ndarray  # float32, mono, at `sample_rate`
    sample_rate: int
    source_rate: int
    channels: int
    duration: float  # seconds, of the source
    sha256: str


def decode(data: bytes, max_seconds: float, target_rate: int) -> Decoded:
    """Decodes any sample rate and channel count block by block, mixing down
    and resampling as it goes, so only the mono signal at the model's rate
    is ever held whole: an hour of 48 kHz stereo never exists as floats."""
    if not data:
        raise InvalidArgument("the upload is empty: send the bytes of a " + SUPPORTED + " file")
    digest = hashlib.sha256(data).hexdigest()
    parts: list[np.ndarray] = []
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = f.samplerate, f.channels
            if rate <= 0 or channels <= 0:
                raise InvalidArgument(f"the file declares {rate} Hz and {channels} channels")
            limit = int(max_seconds * rate)
            if f.frames > limit:
                raise ResourceExhausted(_too_long(f.frames / rate, max_seconds))
            stream = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, dtype="float32")
            read = 0
            for block in f.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
                read += len(block)
                if read > limit:  # a header that lied about its length
                    raise ResourceExhausted(_too_long(read / rate, max_seconds))
                mono = block.mean(axis=1, dtype=np.float32)
                if not np.isfinite(mono).all():
                    raise InvalidArgument("the audio holds NaN or infinite samples")
                parts.append(mono if stream is None else stream.resample_chunk(mono))
            if stream is not None:
                parts.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InvalidArgument(f"could not decode the upload as audio ({exc}); send a {SUPPORTED} file") from None
    if read == 0:
        raise InvalidArgument("the audio file holds no samples")
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    return Decoded(samples, target_rate, rate, channels, read / rate, digest)


def _too_long(seconds: float, limit: float) -> str:
    return f"audio is at least {seconds:.0f} s long; the limit is {limit:.0f} s (AUDIOSEARCH_MAX_AUDIO_SECONDS)"


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
    size = round(window_s * rate)
    if len(samples) <= size:
        minimum = round(min_s * rate)
        if len(samples) < minimum:
            samples = np.pad(samples, (0, minimum - len(samples)))
        return [samples], [0.0]
    starts = window_starts(len(samples), rate, window_s, hop_s)
    return [samples[round(s * rate) : round(s * rate) + size] for s in starts], starts


def window_starts(n_samples: int, rate: int, window_s: float, hop_s: float) -> list[float]:
    """Window start times (s): every hop, plus one aligned to the end."""
    size, hop = round(window_s * rate), round(hop_s * rate)
    if n_samples <= size:
        return [0.0]
    starts = list(range(0, n_samples - size + 1, hop))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return [s / rate for s in starts]
