"""The distortions a copy suffers on its way back. Each is a `Distortion`:
called with (samples, rate, rng) it returns (samples, rate), and it records
what it does to time and frequency, so an evaluation can check a model's
estimate: `speed` is how many times faster the copy plays (its tempo:
item time = speed x query time + offset), `pitch` the factor on every
frequency. A resampled record at x1.08 has speed 1.08 and pitch 1.08; a
pitch shift of +1 semitone (tempo kept) speed 1 and pitch 2**(1/12); a time
stretch x1.1 (10% faster, pitch kept) speed 1.1 and pitch 1.

`DISTORTIONS` is eval/run.py's set; `COPIES` the copy-detection protocol's
(eval/copies.py), a superset."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from services.embedder.audio import resample

Apply = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, int]]


@dataclasses.dataclass(frozen=True)
class Distortion:
    apply: Apply
    speed: float = 1.0  # how many times faster the copy plays (tempo)
    pitch: float = 1.0  # factor on every frequency

    def __call__(self, x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return self.apply(x, rate, rng)


def gain(db: float, clip: bool = False) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        y = x * 10 ** (db / 20)
        return (np.clip(y, -1, 1) if clip else y).astype(np.float32), rate

    return Distortion(apply)


def round_trip(rate_to: int) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return resample(resample(x, rate, rate_to), rate_to, rate), rate

    return Distortion(apply)


def codec(fmt: str, subtype: str, quality: float) -> Distortion:
    """Encode and decode with libsndfile; `quality` is its compression
    level (0 best, 1 smallest). Written in blocks: libsndfile 1.2.2's Vorbis
    encoder overflows its stack on one long write (a minute and more)."""

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        buf = io.BytesIO()
        x = np.clip(x, -1, 1)
        with sf.SoundFile(buf, "w", rate, 1, format=fmt, subtype=subtype, compression_level=quality) as f:
            for i in range(0, len(x), 1 << 14):
                f.write(x[i : i + (1 << 14)])
        buf.seek(0)
        y, out_rate = sf.read(buf, dtype="float32")
        return y, out_rate

    return Distortion(apply)


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

    return Distortion(apply)


def chain(*steps: Distortion) -> Distortion:
    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        for step in steps:
            x, rate = step(x, rate, rng)
        return x, rate

    return Distortion(apply, float(np.prod([s.speed for s in steps])), float(np.prod([s.pitch for s in steps])))


# Time and frequency


def speed(factor: float) -> Distortion:
    """A record played `factor` times faster: resampled, so pitch and tempo
    change together (x1.08: 1/1.08 of the duration, every frequency x1.08)."""

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        # The samples taken as if recorded at rate x factor, brought back to `rate`.
        return soxr.resample(x, rate * factor, rate, quality="HQ").astype(np.float32), rate

    return Distortion(apply, factor, factor)


def _stft_size(rate: int) -> int:
    return 1 << round(np.log2(rate * 0.046))  # about 46 ms: 2048 at 44.1 and 48 kHz


def time_stretch_signal(x: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """`x` played `factor` times faster with every frequency kept: a phase
    vocoder with identity phase locking (Laroche and Dolson 1999), so
    partials keep their phase relations instead of smearing into the
    "phasy" sound of a plain vocoder. Hann windows of about 46 ms, synthesis
    hop a quarter of that; the output holds len(x) / factor samples."""
    n = _stft_size(rate)
    hop_out = n // 4
    hop_in = hop_out * factor
    x = np.asarray(x, dtype=np.float64)
    padded = np.concatenate([np.zeros(n), x, np.zeros(2 * n)])
    frames = int(np.ceil((len(x) + n) / hop_in)) + 1
    starts = np.round(np.arange(frames) * hop_in).astype(np.int64)
    starts = starts[starts + n <= len(padded)]
    window = np.hanning(n + 1)[:n]
    spectra = np.fft.rfft(padded[starts[:, None] + np.arange(n)] * window, axis=1)
    magnitude, phase = np.abs(spectra), np.angle(spectra)
    omega = 2 * np.pi * np.arange(n // 2 + 1) / n  # radians per sample of each bin
    out_phase = phase[0].copy()
    out = np.zeros(len(starts) * hop_out + n)
    bins = np.arange(n // 2 + 1)
    for k in range(len(starts)):
        if k:
            step = starts[k] - starts[k - 1]
            deviation = phase[k] - phase[k - 1] - omega * step
            deviation -= 2 * np.pi * np.round(deviation / (2 * np.pi))
            advanced = out_phase + (omega + deviation / step) * hop_out
            # Identity phase locking: each bin keeps its phase offset to the
            # peak whose region it lies in; only the peaks advance freely.
            m = magnitude[k]
            peaks = np.flatnonzero(
                (m >= np.roll(m, 1)) & (m > np.roll(m, -1)) & (m >= np.roll(m, 2)) & (m > np.roll(m, -2))
            )
            if len(peaks) == 0:
                out_phase = advanced
            else:
                bounds = (peaks[:-1] + peaks[1:]) / 2
                owner = peaks[np.searchsorted(bounds, bins)]
                out_phase = advanced[owner] + phase[k] - phase[k][owner]
        frame = np.fft.irfft(magnitude[k] * np.exp(1j * out_phase), n) * window
        out[k * hop_out : k * hop_out + n] += frame
    # Hann at a quarter hop overlaps to a constant: sum of window^2 / hop.
    out /= float(np.sum(window**2)) / hop_out
    begin = round(n / factor)
    return out[begin : begin + round(len(x) / factor)].astype(np.float32)


def stretch(factor: float) -> Distortion:
    """Time stretch, pitch kept: plays `factor` times faster."""

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return time_stretch_signal(x, rate, factor), rate

    return Distortion(apply, factor, 1.0)


def pitch_shift(semitones: float) -> Distortion:
    """Every frequency x 2**(semitones/12), tempo kept: stretched to
    `ratio` times the duration, then resampled back to the same duration."""
    ratio = 2 ** (semitones / 12)

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        y = time_stretch_signal(x, rate, 1 / ratio)
        return soxr.resample(y, rate * ratio, rate, quality="HQ").astype(np.float32), rate

    return Distortion(apply, 1.0, ratio)


# Rooms and channels


def reverb(rt60: tuple[float, float] = (0.4, 0.8), drr_db: float = 0.0, predelay_s: float = 0.01) -> Distortion:
    """A synthetic room: the impulse response is exponentially decaying
    Gaussian noise (60 dB down after RT60 seconds, drawn from `rt60` by the
    query's generator) after a short pre-delay, mixed with the dry signal at
    a direct-to-reverberant energy ratio of `drr_db`; the output keeps the
    input's length and level."""

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        t60 = float(rng.uniform(*rt60))
        t = np.arange(int(t60 * rate)) / rate
        tail = rng.standard_normal(len(t)) * np.exp(-6.908 * t / t60)  # ln(1000): -60 dB at t60
        tail = np.concatenate([np.zeros(int(predelay_s * rate)), tail])
        tail /= np.sqrt(np.sum(tail**2))  # unit energy: the wet part has about the dry part's power
        wet = signal.fftconvolve(x.astype(np.float64), tail)[: len(x)]
        dry_share = 10 ** (drr_db / 10) / (1 + 10 ** (drr_db / 10))
        y = np.sqrt(dry_share) * x + np.sqrt(1 - dry_share) * wet
        level = np.sqrt(np.mean(x.astype(np.float64) ** 2) / max(float(np.mean(y**2)), 1e-20))
        return (y * level).astype(np.float32), rate

    return Distortion(apply)


def band(low_hz: float | None, high_hz: float, rate_to: int | None = None, order: int = 8) -> Distortion:
    """A Butterworth low-pass (`low_hz` None) or band-pass, then optionally
    resampled to `rate_to` (the telephone: 300-3400 Hz at 8 kHz)."""

    def apply(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        if rate_to:
            x, rate = resample(x.astype(np.float32), rate, rate_to), rate_to
        edges = high_hz if low_hz is None else [low_hz, high_hz]
        sos = signal.butter(order, edges, "lowpass" if low_hz is None else "bandpass", fs=rate, output="sos")
        return signal.sosfilt(sos, x).astype(np.float32), rate

    return Distortion(apply)


def identity() -> Distortion:
    return Distortion(lambda x, rate, rng: (x, rate))


MP3 = codec("MP3", "MPEG_LAYER_III", 0.5)

DISTORTIONS: dict[str, Distortion] = {
    "clean": identity(),
    "gain_-12dB": gain(-12),
    "gain_+6dB_clip": gain(6, clip=True),
    "resample_16k": round_trip(16000),
    "mp3": MP3,
    "vorbis_low": codec("OGG", "VORBIS", 1.0),
    "white_10dB": noise("white", 10),
    "white_5dB": noise("white", 5),
    "pink_10dB": noise("pink", 10),
    "pink_5dB": noise("pink", 5),
    "combo_gain_16k_mp3_pink10": chain(gain(-6), round_trip(16000), MP3, noise("pink", 10)),
}

COPIES: dict[str, Distortion] = {
    **DISTORTIONS,
    "reverb": reverb(),
    "telephone": band(300, 3400, rate_to=8000, order=4),
    "lowpass_3k": band(None, 3000),
    "phone_in_room": chain(reverb(), noise("pink", 10), MP3),
    "stretch_0.90": stretch(0.9),
    "stretch_1.10": stretch(1.1),
    "pitch_-1st": pitch_shift(-1),
    "pitch_+1st": pitch_shift(1),
    **{f"speed_{f:.2f}": speed(f) for f in (0.85, 0.92, 0.97, 1.03, 1.08, 1.15)},
}


def _peak_hz(y: np.ndarray, rate: int) -> float:
    """The strongest frequency, interpolated between bins."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) + 1e-12
    i = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[i - 1 : i + 2])
    return (i + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(y)


def _envelope_hz(y: np.ndarray, rate: int) -> float:
    """The rate of the strongest amplitude modulation between 0.5 and 5 Hz."""
    step = rate // 100
    envelope = np.convolve(np.abs(y), np.ones(step) / step, mode="same")[::step]
    spectrum = np.abs(np.fft.rfft((envelope - envelope.mean()) * np.hanning(len(envelope)), 1 << 16))
    f = np.fft.rfftfreq(1 << 16, 1 / 100)
    band = (f > 0.5) & (f < 5)
    return float(f[band][np.argmax(spectrum[band])])


def check() -> int:
    """Each distortion's recorded speed and pitch against what it does to a
    440 Hz tone modulated at 2 Hz: the duration shrinks by `speed`, the
    modulation (the tempo) speeds up by `speed`, the tone moves by `pitch`.
    `python -m eval.distortions`; exits 1 on a mismatch of over 0.5%."""
    rate = 44100
    t = np.arange(10 * rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    failed = 0
    print(f"{'distortion':28s} {'speed':>6s} {'pitch':>6s} | duration  tempo  frequency (measured ratios)")
    for name, d in COPIES.items():
        y, out_rate = d(tone, rate, np.random.default_rng(0))
        duration = (len(tone) / rate) / (len(y) / out_rate)
        tempo = _envelope_hz(y, out_rate) / 2
        freq = _peak_hz(y, out_rate) / 440
        ok = all(abs(m / want - 1) <= 0.005 for m, want in ((duration, d.speed), (tempo, d.speed), (freq, d.pitch)))
        failed += not ok
        print(
            f"{name:28s} {d.speed:6.4f} {d.pitch:6.4f} | {duration:8.4f} {tempo:6.3f} {freq:10.4f}"
            f"{'' if ok else '  MISMATCH'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(check())
