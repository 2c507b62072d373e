"""`fingerprint-v1`: a weights-free landmark fingerprint for near-duplicate
and excerpt search, robust to gain, band-limiting, lossy codecs and noise.

Design, in the family of Wang's Shazam landmarks and Ellis' audfprint:

1. Audio at 8 kHz, so band-limiting and codecs above 4 kHz do not matter;
   a 64 ms Hann STFT every 32 ms; log magnitude.
2. Whitening: each bin minus its moving average over 2 s. Gain and
   stationary colour (EQ, hum, steady noise) cancel; being local, an
   excerpt and the whole recording agree wherever they overlap.
3. Peaks: maxima of a 9-frame x 17-bin neighbourhood standing 6 dB above
   its mean, kept when fewer than 24 peaks within +-0.5 s are more
   prominent (a local rule). The strongest peaks are what survives noise
   and codecs.
4. Landmarks: each peak paired with the 10 most prominent peaks in its
   target zone (later, within 1.28 s and 750 Hz, at least 2 bins apart:
   a pair within one partial only says "a tone lasts", which any tonal
   sound does); (f1, f2 - f1, t2 - t1), quantised, is a 22-bit hash that
   depends on no absolute time or level.
5. A window's vector holds its landmarks as (slot, hash) keys, the slot
   being where in the window (in 1/4 s) the anchor sits, with equal
   weights, L2-normalised over landmarks. A query window lines up with
   some library window to within half a hop, so a query landmark takes
   every slot within that tolerance: a true match shares its landmarks at
   the same place, while a chance match (a shared hash at an unrelated
   time) mostly falls in another slot. The inner product of two windows is
   shared landmarks / sqrt(count x count). Library items are fingerprinted
   at 4 STFT phases (the union), so a query cut at any sample lines up
   with one of them.

Search votes across query windows for one consistent time offset (the
gateway's voting), which is what rejects chance matches. `min_evidence`, the
threshold on the summed similarity at the matched offset, is calibrated by
`make eval` on held-out recordings for a false-positive rate of at most 1%
with 5 s queries: chance evidence grows slowly with the query's length (its
1% quantile was 0.041 for 3 s queries and 0.065 for 5 s), so shorter
queries stay further below it."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter, uniform_filter1d

from services.common.vectors import Sparse
from services.embedder.audio import window_starts
from services.embedder.models.base import Embeddings, ModelInfo
from services.embedder.models.entry import ModelEntry

RATE = 8000
N_FFT = 512
HOP = 256
PEAKS_PER_SECOND = 24
FAN_OUT = 10
MAX_DT = 40  # frames (1.28 s)
MAX_DF = 48  # bins (750 Hz)
MIN_DF = 2  # bins: a pair within one partial's width says only "a tone lasts", which any tonal sound does
NEIGHBOURHOOD = (9, 17)  # frames x bins for the local-maximum test
MIN_PROMINENCE = 6.0  # dB above the neighbourhood mean
F_Q, DF_Q, DT_Q = 2, 2, 1  # quantisation of f1, f2 - f1 (bins) and t2 - t1 (frames)
WHITEN_FRAMES = 63  # 2 s
INDEX_SHIFTS = 4  # STFT phases fingerprinted for library items
ZONE_PEAKS = 40  # candidates per anchor
BLOCK_SECONDS, MARGIN_SECONDS = 60, 5  # long signals are fingerprinted in blocks
HASH_BITS = 22  # f1: 8 bits, f2 - f1: 7, t2 - t1: 7
SLOT = 0.25  # s: where in its window a landmark sits, quantised
SLOT_BITS = 6  # slots wrap after 16 s (longer windows only lose some selectivity)
JITTER = 0.05  # s: anchor times of one peak differ by up to a frame between cuts


class FingerprintModel:
    info = ModelInfo(
        name="fingerprint-v1",
        version="2",
        dim=1 << (HASH_BITS + SLOT_BITS),
        sample_rate=RATE,
        window_seconds=2.0,
        hop_seconds=0.5,
        min_seconds=0.5,
        min_evidence=0.07,
        sparse=True,
        whole_signal=True,
        purpose=(
            "Finds copies and excerpts of the same recording (re-encoded, trimmed, noisy): "
            'not "similar sounds". No weights needed.'
        ),
        score_meaning="fingerprint similarity, -1 to 1: above the threshold, the clip is taken from this recording",
    )

    def __init__(self) -> None:
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)

    def load(self) -> None:
        """Nothing to load: the fingerprint has no weights."""

    def spectrogram(self, audio: np.ndarray) -> np.ndarray:
        """Whitened log-magnitude spectrogram [frames, bins]."""
        if len(audio) < N_FFT:
            audio = np.pad(audio, (0, N_FFT - len(audio)))
        frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP]
        magnitude = np.abs(np.fft.rfft(frames * self._window, axis=1))
        log = 20 * np.log10(np.maximum(magnitude, 1e-6))
        return log - uniform_filter1d(log, size=WHITEN_FRAMES, axis=0, mode="nearest")

    def peaks(self, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame, bin, prominence) of the most prominent local maxima, time-ordered."""
        local_max = maximum_filter(spec, size=NEIGHBOURHOOD, mode="constant", cval=-np.inf)
        prominence = spec - uniform_filter(spec, size=NEIGHBOURHOOD, mode="nearest")
        mask = (spec == local_max) & (prominence > MIN_PROMINENCE)
        mask[:, :2] = False  # DC and the lowest bin carry rumble, not content
        t, f = np.nonzero(mask)  # time-ordered
        p = prominence[t, f]
        # Keep a peak if fewer than PEAKS_PER_SECOND peaks within +-0.5 s are
        # more prominent: a local rule, so an excerpt keeps the same peaks as
        # the whole recording wherever they overlap.
        half = RATE // HOP // 2
        stronger = np.zeros(len(t), dtype=np.int64)
        for k in range(1, len(t)):
            near = (t[k:] - t[:-k]) <= half
            if not near.any():
                break
            stronger[:-k] += near & (p[k:] > p[:-k])
            stronger[k:] += near & (p[:-k] > p[k:])
        keep = stronger < PEAKS_PER_SECOND
        t, f, p = t[keep], f[keep], p[keep]
        order = np.lexsort((f, t))
        return t[order], f[order], p[order]

    def landmarks(self, t: np.ndarray, f: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(anchor frame, hash) of each peak and the FAN_OUT most prominent
        peaks in its target zone (later, within MAX_DT and MAX_DF): choosing
        by prominence rather than nearness keeps a weak noise peak from
        displacing a real partner."""
        parts = []
        for k in range(1, ZONE_PEAKS + 1):  # the k-th next peak of every anchor, vectorised
            if k >= len(t):
                break
            dt, df = t[k:] - t[:-k], f[k:] - f[:-k]
            ok = (dt > 0) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF) & (np.abs(df) >= MIN_DF)
            anchors = np.nonzero(ok)[0]
            parts.append(
                np.stack([anchors, f[:-k][ok] // F_Q, (df[ok] + MAX_DF) // DF_Q, dt[ok] // DT_Q, -p[k:][ok] * 1000])
            )
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
        anchor, f1, dfq, dtq, weak = np.concatenate(parts, axis=1).astype(np.int64)
        order = np.lexsort((weak, anchor))  # per anchor, most prominent partners first
        anchor, f1, dfq, dtq = anchor[order], f1[order], dfq[order], dtq[order]
        rank = np.arange(len(anchor)) - np.searchsorted(anchor, anchor)
        keep = rank < FAN_OUT
        hashes = (f1[keep] << 14) | (dfq[keep] << 7) | dtq[keep]
        return t[anchor[keep]], hashes.astype(np.uint32)

    def signal_landmarks(self, audio: np.ndarray, shifts: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(anchor time in s, hash) of every landmark of a whole signal,
        fingerprinted at `shifts` STFT phases. Long signals are processed in
        blocks with a margin on each side (wider than every local operation),
        so memory stays bounded and block borders leave no trace."""
        block, margin = BLOCK_SECONDS * RATE, MARGIN_SECONDS * RATE
        times, hashes = [], []
        for start in range(0, max(1, len(audio)), block):
            lo = max(0, start - margin)
            piece = audio[lo : start + block + margin]
            for k in range(shifts):
                offset = k * HOP // shifts
                frames, h = self.landmarks(*self.peaks(self.spectrogram(piece[offset:])))
                at = frames * (HOP / RATE) + (lo + offset) / RATE
                keep = (at >= start / RATE) & (at < (start + block) / RATE)
                times.append(at[keep])
                hashes.append(h[keep])
        return np.concatenate(times), np.concatenate(hashes)

    @staticmethod
    def _sparse(hashes: np.ndarray, positions: np.ndarray, tolerance: float = 0.0) -> Sparse:
        """A window's landmarks as (slot, hash) keys, slot = where in the
        window the anchor sits. A query window is offset from the library
        window it lines up with by up to `tolerance`, so a query landmark
        takes every slot within that tolerance; weights count landmarks,
        not slots, so a true match scores as without slots while chance
        matches (a shared hash at an unrelated time) mostly vanish."""
        landmarks = np.unique((np.floor(positions / SLOT).astype(np.int64) << HASH_BITS) | hashes)
        weight = 1 / np.sqrt(max(1, len(landmarks)))
        lo = np.floor((positions - tolerance) / SLOT).astype(np.int64)
        hi = np.floor((positions + tolerance) / SLOT).astype(np.int64)
        spans = [np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]
        slots = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        h = np.repeat(hashes.astype(np.int64), hi - lo + 1)
        keep = slots >= 0
        keys = np.unique(((slots[keep] % (1 << SLOT_BITS)) << HASH_BITS) | h[keep])
        return Sparse(keys.astype(np.uint32), np.full(len(keys), weight, dtype=np.float32))

    def embed_signal(
        self, audio: np.ndarray, window: float, hop: float, query: bool = False, single_framing: bool = False
    ) -> tuple[list[Sparse], list[float]]:
        """Fingerprints a whole recording and cuts it into windows: peaks
        and pairs are found once, across window borders."""
        starts = window_starts(len(audio), RATE, window, hop)
        times, hashes = self.signal_landmarks(audio, 1 if query else INDEX_SHIFTS)
        order = np.argsort(times, kind="stable")
        times, hashes = times[order], hashes[order]
        vectors = []
        for start in starts:
            a, b = np.searchsorted(times, [start, start + window])
            tolerance = hop / 2 + JITTER if query else 0.0
            vectors.append(self._sparse(hashes[a:b], times[a:b] - start, tolerance))
        return vectors, starts

    def embed(self, windows: np.ndarray) -> Embeddings:
        """Each window on its own (the service uses embed_signal instead)."""
        return Embeddings([self._sparse(h, t) for t, h in (self.signal_landmarks(w) for w in windows)])


ENTRY = ModelEntry(info=FingerprintModel.info, build=lambda config: FingerprintModel(), offered_by_default=True)
