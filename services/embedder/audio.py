"""Decoding uploaded bytes into mono float32 samples at a model's rate.

Uploads are hostile until decoded: every limit below is checked from the
header first and again while streaming, so a file whose header lies (or
declares no length, like a streamed FLAC) still cannot make the decoder
produce more than the limits allow. A tiny FLAC of hours of silence is
refused after at most `max_seconds` of it has been decoded, never after
decoding it all."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

from services.common import reasons
from services.common.errors import InvalidArgument, ResourceExhausted

SUPPORTED = "WAV, FLAC, OGG (Vorbis/Opus) or MP3"

BLOCK = 1 << 16  # samples (frames x channels) decoded at a time
UNKNOWN_LENGTH = (1 << 63) - 1  # libsndfile's frame count for a stream of unknown length
# Samples a resampler may emit beyond length x ratio (rounding at the edges).
RESAMPLER_SLACK = 64
# Float formats can hold any value; decoded PCM lies in [-1, 1]. Samples far
# beyond full scale are corrupt data, and would overflow the models' float32
# spectra into NaN vectors.
MAX_AMPLITUDE = 1000.0

# libsndfile's wording where it misleads for in-memory uploads.
_REASONS = {
    "File does not exist or is not a regular file (possibly a pipe?).": "Format not recognised.",
    "(Garbled error message from libsndfile)": "unreadable data.",
    "Internal error : SF_INFO struct incomplete.": "the header declares no valid sample rate, channel count or format.",
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one upload may ask of the decoder (AUDIOSEARCH_* settings of the
    embedder; `max_seconds` is passed on its own, see `decode`)."""

    max_bytes: int = 512 * 1024 * 1024  # AUDIOSEARCH_MAX_UPLOAD_BYTES
    min_seconds: float = 0.01  # AUDIOSEARCH_MIN_AUDIO_SECONDS
    min_sample_rate: int = 1000  # AUDIOSEARCH_MIN_SAMPLE_RATE
    max_sample_rate: int = 384_000  # AUDIOSEARCH_MAX_SAMPLE_RATE
    max_channels: int = 64  # AUDIOSEARCH_MAX_CHANNELS
    # Samples (frames x channels) decoded from one upload: bounds the work a
    # high-rate, many-channel file (or a decompression bomb) can cause.
    max_samples: int = 1_000_000_000  # AUDIOSEARCH_MAX_DECODED_SAMPLES


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Audio mixed down to mono and resampled to the model's rate."""

    samples: np.ndarray  # float32, mono, at `sample_rate`
    sample_rate: int
    source_rate: int
    channels: int
    duration: float  # seconds, of the source
    sha256: str


class Decoder:
    """One upload, decoded as a stream of mono blocks at the model's rate:
    any sample rate and channel count are read block by block, mixed down
    and resampled as they go, so an hour of 48 kHz stereo never exists as
    floats, and a consumer that frames windows as they come never holds the
    whole signal either.

    The constructor checks what it can without decoding; `blocks()` raises
    InvalidArgument for data that is not audio (or not sane audio) and
    ResourceExhausted for audio beyond the limits, as it finds them. After
    `blocks()` is exhausted, `source_rate`, `channels` and `duration` say
    what was decoded."""

    def __init__(self, data: bytes, max_seconds: float, target_rate: int, limits: Limits = DEFAULT_LIMITS) -> None:
        if not data:
            raise InvalidArgument(
                f"the upload is empty: send the bytes of a {SUPPORTED} file", reason=reasons.EMPTY_UPLOAD
            )
        if len(data) > limits.max_bytes:
            raise ResourceExhausted(
                f"the upload is {len(data)} bytes; the limit is {limits.max_bytes} (AUDIOSEARCH_MAX_UPLOAD_BYTES)",
                reason=reasons.UPLOAD_TOO_LARGE,
            )
        self.data, self.max_seconds, self.target_rate, self.limits = data, max_seconds, target_rate, limits
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.source_rate = self.channels = 0
        self.duration = 0.0
        # Output samples to expect, when the header declares a length.
        self.expected: int | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        limits, max_seconds, target_rate = self.limits, self.max_seconds, self.target_rate
        try:
            with sf.SoundFile(io.BytesIO(self.data)) as f:
                rate, channels = f.samplerate, f.channels
                _check_format(rate, channels, limits)
                self.source_rate, self.channels = rate, channels
                max_frames = limits.max_samples // channels
                if max_seconds * rate < max_frames:  # (an infinite limit leaves the sample budget)
                    max_frames = math.floor(max_seconds * rate)
                if 0 <= f.frames < UNKNOWN_LENGTH:  # a declared length: refuse before decoding anything
                    _check_length(f.frames, rate, channels, max_seconds, limits, declared=True)
                    self.expected = math.ceil(f.frames * target_rate / rate) + RESAMPLER_SLACK
                stream = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, dtype="float32")
                buffer = np.empty((max(1, BLOCK // channels), channels), dtype=np.float32)
                read = 0
                while True:
                    block = buffer[: _read_into(f, buffer)]
                    if not len(block):
                        break
                    read += len(block)
                    if read > max_frames:  # a header that lied, or declared no length
                        _check_length(read, rate, channels, max_seconds, limits, declared=False)
                    _check_values(block)
                    mono = block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)
                    # `buffer` is reused: hand out copies (resampling makes its own).
                    yield np.array(mono) if stream is None else stream.resample_chunk(mono)
                if stream is not None:
                    yield stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        except sf.LibsndfileError as exc:
            raise _not_audio(_REASONS.get(exc.error_string, exc.error_string)) from None
        except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OverflowError) as exc:
            raise _not_audio(f"{exc}") from None
        if read == 0:
            raise InvalidArgument(
                "the audio file holds no samples (a header without audio data)", reason=reasons.CORRUPT_AUDIO
            )
        duration = read / rate
        if duration < limits.min_seconds:
            raise InvalidArgument(
                f"the audio is {_seconds(duration)} long ({read} sample{'s' if read != 1 else ''} at {rate} Hz); "
                f"at least {limits.min_seconds:g} s is needed (AUDIOSEARCH_MIN_AUDIO_SECONDS)",
                reason=reasons.AUDIO_TOO_SHORT,
            )
        self.duration = duration


def decode(data: bytes, max_seconds: float, target_rate: int, limits: Limits = DEFAULT_LIMITS) -> Decoded:
    """The whole upload as one mono signal at `target_rate` (see Decoder)."""
    decoder = Decoder(data, max_seconds, target_rate, limits)
    samples = collect(decoder)
    return Decoded(samples, target_rate, decoder.source_rate, decoder.channels, decoder.duration, decoder.sha256)


def collect(decoder: Decoder) -> np.ndarray:
    """All of `decoder`'s blocks as one signal."""
    out = _Samples()
    for i, block in enumerate(decoder.blocks()):
        if i == 0 and decoder.expected is not None:  # known once the header is read
            out.reserve(decoder.expected)
        out.append(block)
    return out.result()


class _Samples:
    """The decoded signal, gathered block by block. With a declared length
    the blocks are copied into one array reserved up front, so the signal
    exists once (an hour at 32 kHz is 460 MB; gathering blocks and joining
    them held it twice); without one, blocks are joined at the end."""

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None
        self.size = 0
        self.parts: list[np.ndarray] = []

    def reserve(self, samples: int) -> None:
        # Address space only until written; a header declaring far more than
        # the file holds costs no memory, and one that cannot be reserved at
        # all (a huge declared length under strict overcommit) is gathered in blocks.
        try:
            self.buffer = np.empty(samples, dtype=np.float32)
        except MemoryError:
            self.buffer = None

    def append(self, block: np.ndarray) -> None:
        if self.buffer is not None and self.size + len(block) > len(self.buffer):
            # More than declared (a header that lied): keep what fits, go on in blocks.
            self.parts.append(self.buffer[: self.size])
            self.buffer = None
        if self.buffer is None:
            self.parts.append(np.array(block, dtype=np.float32))
        else:
            self.buffer[self.size : self.size + len(block)] = block
            self.size += len(block)

    def result(self) -> np.ndarray:
        if self.buffer is not None:
            return self.buffer[: self.size]
        return np.concatenate(self.parts).astype(np.float32, copy=False) if self.parts else np.zeros(0, np.float32)


def _read_into(f: sf.SoundFile, out: np.ndarray) -> int:
    """Reads up to len(out) frames into `out` (float32, C-contiguous,
    frames x channels) and returns how many were read; 0 at the end.

    Not `SoundFile.blocks()`, which trusts the header's length and yields
    stale buffer contents where a truncated file ends early, nor
    `SoundFile.read()`, which seeks around every read to track its position,
    and so fails on FLAC streams that declare no length. libsndfile's own
    `sf_readf_float` does neither (soundfile's cffi handles, pinned
    soundfile==0.14.0)."""
    data = sf._ffi.cast("float *", out.__array_interface__["data"][0])
    frames = sf._snd.sf_readf_float(f._file, data, len(out))
    error = sf._snd.sf_error(f._file)
    if error:
        raise sf.LibsndfileError(error)
    return int(frames)


def _not_audio(why: str) -> InvalidArgument:
    why = why.strip().rstrip(".")
    message = f"could not decode the upload as audio ({why}); send a {SUPPORTED} file"
    return InvalidArgument(message, reason=reasons.NOT_AUDIO)


def _check_format(rate: int, channels: int, limits: Limits) -> None:
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise InvalidArgument(
            f"the file declares a sample rate of {rate} Hz; supported rates are {limits.min_sample_rate}-"
            f"{limits.max_sample_rate} Hz (AUDIOSEARCH_MIN_SAMPLE_RATE, AUDIOSEARCH_MAX_SAMPLE_RATE)",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
        )
    if not 1 <= channels <= limits.max_channels:
        raise InvalidArgument(
            f"the file declares {channels} channels; at most {limits.max_channels} are supported "
            "(AUDIOSEARCH_MAX_CHANNELS)",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
        )


def _check_length(frames: int, rate: int, channels: int, max_seconds: float, limits: Limits, declared: bool) -> None:
    """ResourceExhausted when `frames` exceed the duration or the sample
    budget: `declared` from the header, before decoding; else found while
    decoding, which stops there."""
    if frames / rate > max_seconds:
        if declared:
            raise ResourceExhausted(
                f"the file declares {_seconds(frames / rate)} of audio; the limit is {_seconds(max_seconds)} "
                "(AUDIOSEARCH_MAX_AUDIO_SECONDS)",
                reason=reasons.AUDIO_TOO_LONG,
            )
        raise ResourceExhausted(
            f"the audio is longer than the limit of {_seconds(max_seconds)} (AUDIOSEARCH_MAX_AUDIO_SECONDS); "
            "decoding stopped there",
            reason=reasons.AUDIO_TOO_LONG,
        )
    if frames * channels > limits.max_samples:
        shape = f"{channels} channels at {rate} Hz"
        if declared:
            raise ResourceExhausted(
                f"the file declares {frames * channels} samples ({shape}); the limit is {limits.max_samples} "
                "samples per upload (AUDIOSEARCH_MAX_DECODED_SAMPLES)",
                reason=reasons.TOO_MANY_SAMPLES,
            )
        raise ResourceExhausted(
            f"the audio holds more than the limit of {limits.max_samples} samples per upload ({shape}; "
            "AUDIOSEARCH_MAX_DECODED_SAMPLES); decoding stopped there",
            reason=reasons.TOO_MANY_SAMPLES,
        )


def _check_values(block: np.ndarray) -> None:
    peak = float(np.max(np.abs(block)))
    if not math.isfinite(peak):
        raise InvalidArgument(
            "the audio holds NaN or infinite samples (corrupt floating-point data)", reason=reasons.CORRUPT_AUDIO
        )
    if peak > MAX_AMPLITUDE:
        raise InvalidArgument(
            f"the audio holds samples of magnitude {peak:.3g}; floating-point audio must stay within "
            f"±{MAX_AMPLITUDE:g} (full scale is ±1): the data is corrupt",
            reason=reasons.CORRUPT_AUDIO,
        )


def _seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds:.0f} s ({seconds / 3600:.1f} h)"
    if seconds >= 1:
        return f"{seconds:.0f} s"
    return f"{seconds:.2g} s"


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """High-quality sample-rate conversion (libsoxr)."""
    if source_rate == target_rate:
        return samples
    return soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def frame(
    samples: np.ndarray, rate: int, window_s: float, hop_s: float, min_s: float
) -> tuple[list[np.ndarray], list[float]]:
    """Slices audio into overlapping windows of `window_s` (see Framer).
    Returns (windows, offsets in seconds)."""
    framer = Framer(rate, window_s, hop_s, min_s)
    out = framer.push(samples) + framer.finish()
    return [w for _, w in out], [offset for offset, _ in out]


class Framer:
    """Windows of `window_s` every `hop_s`, cut from a signal that arrives in
    blocks, as soon as each is complete; only about one window of the
    signal is kept meanwhile. Audio shorter than a window stays one window
    of its own length (zero-padded to `min_s`), so padding never dilutes a
    short sound. The tail is covered by a last window aligned to the end,
    so no sound is left out. The same windows as `window_starts` gives."""

    def __init__(self, rate: int, window_s: float, hop_s: float, min_s: float) -> None:
        self.rate, self.size, self.hop = rate, round(window_s * rate), round(hop_s * rate)
        self.minimum = round(min_s * rate)
        self.kept = np.zeros(0, dtype=np.float32)  # the signal from sample `self.start` on
        self.start = 0
        self.pending: list[np.ndarray] = []  # blocks not yet joined onto `kept`
        self.total = 0  # samples pushed
        self.next = 0  # start of the next full window
        self.last = -1  # start of the last window given out

    def push(self, block: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(offset in seconds, window) for every window `block` completes."""
        self.pending.append(block)
        self.total += len(block)
        if self.next + self.size > self.total:
            return []
        self._join()
        out = []
        while self.next + self.size <= self.total:
            i = self.next - self.start
            out.append((self.next / self.rate, self.kept[i : i + self.size]))
            self.last, self.next = self.next, self.next + self.hop
        # Keep what the next window, or a tail window aligned to the end, may need.
        keep = max(self.start, min(self.next, self.total - self.size))
        self.kept, self.start = self.kept[keep - self.start :], keep
        return out

    def finish(self) -> list[tuple[float, np.ndarray]]:
        """The last window: the whole of a signal shorter than a window, or
        one aligned to the end when the hops left a tail uncovered."""
        self._join()
        if self.total <= self.size and self.last < 0:
            samples = self.kept
            if len(samples) < self.minimum:
                samples = np.pad(samples, (0, self.minimum - len(samples)))
            return [(0.0, samples)]
        if self.last + self.size < self.total:
            i = self.total - self.size - self.start
            return [((self.total - self.size) / self.rate, self.kept[i : i + self.size])]
        return []

    def _join(self) -> None:
        if self.pending:
            self.kept = np.concatenate([self.kept, *self.pending]).astype(np.float32, copy=False)
            self.pending = []


def window_starts(n_samples: int, rate: int, window_s: float, hop_s: float) -> list[float]:
    """Window start times (s): every hop, plus one aligned to the end."""
    size, hop = round(window_s * rate), round(hop_s * rate)
    if n_samples <= size:
        return [0.0]
    starts = list(range(0, n_samples - size + 1, hop))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return [s / rate for s in starts]
