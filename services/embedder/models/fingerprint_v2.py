"""`fingerprint-v2`: a weights-free landmark fingerprint for copies and
excerpts, robust to gain, band-limiting, codecs, noise and reverb, and to
copies played faster or slower, pitch-shifted or time-stretched.

Peaks and pairs as in fingerprint-v1 (Wang's landmarks, Ellis' audfprint):
audio at 8 kHz, a 64 ms STFT every 32 ms, each bin whitened against its 2 s
moving average, the most prominent local maxima kept by a local density
rule, each peak paired with the most prominent later peaks in its target
zone. What is new:

1. Peak positions are refined to a fraction of a bin and of a frame
   (parabolic interpolation), and a pair is hashed on scale-friendly
   quantities: the anchor's log frequency, the log ratio of the two
   frequencies, the log time difference. A copy whose frequencies are all
   `pitch` times higher and whose time runs `speed` times faster shifts
   the first and the last by a constant and leaves the ratio alone.
2. The library stores each landmark once: items are cut into contiguous
   4 s segments, a segment's vector holds its landmark hashes as indices
   and where each sits as the value (1 + seconds / POSITION_SCALE), so the
   matcher has every landmark's time to within a millisecond, and an hour
   of audio costs about 130 landmarks a second (8 bytes each in Milvus).
3. A query is sent once per hypothesis of (speed, pitch): a grid of
   resampled copies (speed = pitch, 2% apart, 0.85 to 1.17), of pitch
   shifts (up to +-6%, tempo kept) and of time stretches (up to +-10%,
   pitch kept). Under each, the query's continuous hash coordinates are
   mapped back to the original's and both nearest quantisation cells are
   kept, so a copy whose true factors lie between grid points is not lost
   at a cell border. The library is not touched by any of this. Only each
   landmark's own cell is searched with; the neighbouring cell, and the
   landmarks of three more STFT framings of the query, go to the decision
   only (QUERY_PHASES).

The gateway (services/gateway/landmarks.py) decides: the time-consistent
landmarks along the best line item time = speed x query time + offset,
against what chance gives for that query, item and library size."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter, uniform_filter1d

from services.common.vectors import PAIR_TIME_BITS, POSITION_SCALE, Sparse
from services.embedder.models.base import Embeddings, ModelInfo
from services.embedder.models.entry import ModelEntry

RATE = 8000
N_FFT = 512
HOP = 256
FRAME = HOP / RATE  # s
PEAKS_PER_SECOND = 18
QUERY_PEAKS_PER_SECOND = 30  # more for queries: a copy's surviving peaks must be among them
FAN_OUT = 8
# Searched with: each anchor's SEARCH_FAN_OUT most prominent partners; the
# rest go to the decision only. The search's cost is its number of hashes,
# and the most prominent pairs name the candidates as well as all of them
# do (measured: the same hits at 4 as at 8 under every distortion, in half
# the search time; at 2, pink noise 5 dB fell from 0.70 to 0.60).
SEARCH_FAN_OUT = 4
MIN_DT, MAX_DT = 2, 40  # frames (64 ms .. 1.28 s)
MIN_DF, MAX_DF = 2, 48  # bins: a pair within one partial says only "a tone lasts"
NEIGHBOURHOOD = (9, 17)  # frames x bins for the local-maximum test
MIN_PROMINENCE = 6.0  # dB above the neighbourhood mean
MIN_BIN = 4  # 62 Hz: below it rumble, and a bin is too wide a step in log frequency
WHITEN_FRAMES = 63  # 2 s
ZONE_PEAKS = 40  # candidates per anchor
BLOCK_SECONDS, MARGIN_SECONDS = 60, 5  # long signals are fingerprinted in blocks
# Hash cells. The anchor frequency f on a warped scale, log2(f + F_KNEE): 2%
# steps where f >> F_KNEE (so every pitch hypothesis is a shift of under half
# a cell from the nearest grid point) and about one bin wide below it, where a
# bin is all the precision there is; as many peaks fall in a low cell as in a
# high one. The frequency difference in DF_CELL-bin steps measured on the
# anchor cell's own scale, (f2 / f1 - 1) x f(cell): unchanged by any pitch
# factor. The time difference in DT_CELL-frame steps.
F_STEP, F_KNEE = np.log2(1.02), 50.0
DF_CELL, DT_CELL = 1.5, 2.0
F_BITS, R_BITS, T_BITS = 7, 7, PAIR_TIME_BITS  # the time difference where the gateway reads it
R_ZERO = 1 << (R_BITS - 1)  # differences below 0 take the lower half
SEGMENT_SECONDS = 1.0
QUERY_CHUNK_SECONDS = 2.0
# A query is also fingerprinted at three more STFT framings (sample shifts),
# for the decision only: a third of a recording's peaks are lost to a query
# cut at another framing, even clean (measured: 65% of the library's peaks
# found in a clean 5 s query at one framing, 98% at these four). Up to
# PHASED_QUERY_SECONDS: a longer query has evidence enough, and its extra
# landmarks would triple the embedder's reply.
QUERY_PHASES = (0, 64, 128, 192)
PHASED_QUERY_SECONDS = 30.0


# Pairs of peaks as parallel arrays: anchor time, log2 anchor bin, log2
# frequency ratio, log2 time difference, and the partner's rank among its
# anchor's partners (0: the most prominent).
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A copy playing `speed` times faster than the original, every
    frequency `pitch` times higher."""

    speed: float
    pitch: float


def hypotheses() -> list[Hypothesis]:
    """Resampled (speed = pitch) on the anchor frequency's own grid, then
    pitch shifts with tempo kept, then time stretches with pitch kept."""
    grid = [Hypothesis(1.02**k, 1.02**k) for k in range(-8, 9)]
    grid += [Hypothesis(1.0, 1.02**k) for k in (-3, -2, -1, 1, 2, 3)]
    grid += [Hypothesis(s, 1.0) for s in (0.9, 0.95, 1.05, 1.1)]
    return grid


class FingerprintV2Model:
    info = ModelInfo(
        name="fingerprint-v2",
        version="1",
        dim=1 << (F_BITS + R_BITS + T_BITS),
        sample_rate=RATE,
        window_seconds=SEGMENT_SECONDS,
        hop_seconds=SEGMENT_SECONDS,
        min_seconds=0.5,
        sparse=True,
        whole_signal=True,
        landmarks=True,
        min_confidence=0.99,
        purpose=(
            "Finds copies and excerpts of the same recording, even sped up, slowed down or pitch-shifted: "
            'not "similar sounds". No weights needed.'
        ),
        score_meaning=(
            "confidence, 0 to 1, that this recording contains the clip "
            "(1 minus the chance of a match this good by accident)"
        ),
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

    def peaks(
        self, spec: np.ndarray, density: int = PEAKS_PER_SECOND
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(frame, bin, refined frame, refined bin, prominence) of the most
        prominent local maxima, time-ordered."""
        local_max = maximum_filter(spec, size=NEIGHBOURHOOD, mode="constant", cval=-np.inf)
        prominence = spec - uniform_filter(spec, size=NEIGHBOURHOOD, mode="nearest")
        mask = (spec == local_max) & (prominence > MIN_PROMINENCE)
        mask[:, :MIN_BIN] = False
        mask[:, -1] = False
        mask[0], mask[-1] = False, False  # refinement needs both neighbours
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
        keep = stronger < density
        t, f, p = t[keep], f[keep], p[keep]
        order = np.lexsort((f, t))
        t, f, p = t[order], f[order], p[order]
        return (
            t,
            f,
            t + _vertex(spec[t - 1, f], spec[t, f], spec[t + 1, f]),
            f + _vertex(spec[t, f - 1], spec[t, f], spec[t, f + 1]),
            p,
        )

    def pairs(self, spec: np.ndarray, density: int = PEAKS_PER_SECOND) -> Pairs:
        """Pairs (anchor time in frames, log2 anchor bin, log2 frequency ratio,
        log2 time difference in frames, partner rank) of each peak and the FAN_OUT most
        prominent peaks in its target zone: choosing by prominence rather
        than nearness keeps a weak noise peak from displacing a real partner."""
        t, f, tr, fr, p = self.peaks(spec, density)
        parts = []
        for k in range(1, ZONE_PEAKS + 1):  # the k-th next peak of every anchor, vectorised
            if k >= len(t):
                break
            dt, df = t[k:] - t[:-k], f[k:] - f[:-k]
            ok = (dt >= MIN_DT) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF) & (np.abs(df) >= MIN_DF)
            anchors = np.nonzero(ok)[0]
            parts.append(np.stack([anchors, anchors + k, -p[k:][ok]]))
        if not parts:
            empty = np.zeros(0)
            return empty, empty, empty, empty, empty
        anchor, partner, weak = np.concatenate(parts, axis=1)
        anchor, partner = anchor.astype(np.int64), partner.astype(np.int64)
        order = np.lexsort((weak, anchor))  # per anchor, most prominent partners first
        anchor, partner = anchor[order], partner[order]
        rank = np.arange(len(anchor)) - np.searchsorted(anchor, anchor)
        kept = rank < FAN_OUT
        anchor, partner, rank = anchor[kept], partner[kept], rank[kept]
        dt = np.maximum(tr[partner] - tr[anchor], 0.5)
        return tr[anchor], np.log2(fr[anchor]), np.log2(fr[partner] / fr[anchor]), np.log2(dt), rank.astype(np.float64)

    def signal_pairs(self, audio: np.ndarray, density: int = PEAKS_PER_SECOND) -> Pairs:
        """`pairs` of a whole signal, anchor times in seconds. Long signals
        are processed in blocks with a margin on each side (wider than every
        local operation), so memory stays bounded and borders leave no trace."""
        block, margin = BLOCK_SECONDS * RATE, MARGIN_SECONDS * RATE
        out: list[list[np.ndarray]] = [[], [], [], [], []]
        for start in range(0, max(1, len(audio)), block):
            lo = max(0, start - margin)
            frames, lf, lr, ldt, rank = self.pairs(self.spectrogram(audio[lo : start + block + margin]), density)
            at = frames * FRAME + lo / RATE
            keep = (at >= start / RATE) & (at < (start + block) / RATE)
            for part, values in zip(out, (at, lf, lr, ldt, rank), strict=True):
                part.append(values[keep])
        return tuple(np.concatenate(part) for part in out)  # type: ignore[return-value]

    def embed_signal(
        self, audio: np.ndarray, window: float, hop: float, query: bool = False, single_framing: bool = False
    ) -> tuple[Embeddings, list[float]]:
        """Library items: contiguous segments of `window` s, each landmark
        once. Queries: one chunk per QUERY_CHUNK_SECONDS (at most), each
        sent once per hypothesis, with the hypothesis on the window;
        `single_framing`: at STFT framing 0 only (no extra QUERY_PHASES)."""
        if query:
            return self._query(audio, single_framing)
        times, lf, lr, ldt, _ = self.signal_pairs(audio, PEAKS_PER_SECOND)
        order = np.argsort(times, kind="stable")
        times, lf, lr, ldt = times[order], lf[order], lr[order], ldt[order]
        duration = len(audio) / RATE
        # Contiguous segments: every landmark in exactly one.
        starts = [k * window for k in range(max(1, int(np.ceil(duration / window - 1e-9))))]
        keys = _cells(lf, lr, ldt)
        vectors = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else np.inf
            a, b = np.searchsorted(times, [start, end])
            vectors.append(_segment(keys[a:b], times[a:b] - start))
        return Embeddings(vectors), starts

    def _query(self, audio: np.ndarray, single_framing: bool = False) -> tuple[Embeddings, list[float]]:
        """A query: one chunk per QUERY_CHUNK_SECONDS (at most), each under
        every hypothesis. Its landmarks at STFT framing 0 are searched; those
        found at the other QUERY_PHASES go along for the decision only."""

        def framed(shift: int) -> Pairs:
            times, lf, lr, ldt, rank = self.signal_pairs(audio[shift:], QUERY_PEAKS_PER_SECOND)
            order = np.argsort(times, kind="stable")
            return times[order] + shift / RATE, lf[order], lr[order], ldt[order], rank[order]

        duration = len(audio) / RATE
        phased = duration <= PHASED_QUERY_SECONDS and not single_framing
        shifts = QUERY_PHASES if phased else QUERY_PHASES[:1]
        searched, *others = (framed(shift) for shift in shifts)
        decided = _joined(others)
        chunks = max(1, int(np.ceil(duration / QUERY_CHUNK_SECONDS - 1e-9)))
        length = duration / chunks
        starts, vectors, hyps, decide_only = [], [], [], []
        for c in range(chunks):
            start = c * length
            end = start + length if c + 1 < chunks else np.inf
            a, b = np.searchsorted(searched[0], [start, end])
            p, q = np.searchsorted(decided[0], [start, end])
            for h in hypotheses():
                # Searched: framing 0, each anchor's SEARCH_FAN_OUT first
                # pairs in their own cells. For the decision only: the other
                # pairs, every pair's neighbouring cell, and both cells of
                # the other framings.
                own, neighbour, at = _soft_cells(searched, a, b, start, h)
                top = searched[4][a:b] < SEARCH_FAN_OUT
                parts = [
                    (False, own[top], at[top]),
                    (True, np.concatenate([own[~top], neighbour]), np.concatenate([at[~top], at])),
                ]
                if q > p:
                    own, neighbour, at = _soft_cells(decided, p, q, start, h)
                    parts.append((True, np.concatenate([own, neighbour]), np.tile(at, 2)))
                for only, keys, positions in parts:
                    if only and not len(keys):
                        continue
                    vectors.append(_segment(keys, positions))
                    starts.append(start)
                    hyps.append((h.speed, h.pitch))
                    decide_only.append(only)
        return Embeddings(vectors, hypotheses=hyps, decide_only=decide_only), starts

    def embed(self, windows: np.ndarray) -> Embeddings:
        """Each window on its own as a library segment (the service uses embed_signal instead)."""
        return Embeddings([self.embed_signal(w, SEGMENT_SECONDS, SEGMENT_SECONDS)[0].vectors[0] for w in windows])


def _joined(
    phases: list[Pairs],
) -> Pairs:
    """Several framings' Pairs, time-ordered together."""
    if not phases:
        empty = np.zeros(0)
        return empty, empty, empty, empty, empty
    times, lf, lr, ldt, rank = (np.concatenate([p[k] for p in phases]) for k in range(5))
    order = np.argsort(times, kind="stable")
    return times[order], lf[order], lr[order], ldt[order], rank[order]


def _vertex(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset of a parabola's vertex through three samples, in [-0.5, 0.5]."""
    curvature = left - 2 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def _f_cell(lf: np.ndarray) -> np.ndarray:
    """Continuous anchor-frequency cell of log2(f)."""
    return (np.log2(2.0**lf + F_KNEE) - np.log2(MIN_BIN + F_KNEE)) / F_STEP


def _r_cell(f_cell: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Continuous difference cell of a log2 ratio, on the scale of the anchor cell `f_cell` (an integer)."""
    centre = 2.0 ** ((f_cell + 0.5) * F_STEP + np.log2(MIN_BIN + F_KNEE)) - F_KNEE
    return (2.0**lr - 1) * centre / DF_CELL + R_ZERO


def _t_cell(ldt: np.ndarray) -> np.ndarray:
    return 2.0**ldt / DT_CELL


def _pack(f: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    f = np.clip(f, 0, (1 << F_BITS) - 1)
    r = np.clip(r, 0, (1 << R_BITS) - 1)
    t = np.clip(t, 0, (1 << T_BITS) - 1)
    return ((f << (R_BITS + T_BITS)) | (r << T_BITS) | t).astype(np.uint32)


def _cells(lf: np.ndarray, lr: np.ndarray, ldt: np.ndarray) -> np.ndarray:
    """The hash of each pair: its cell in (anchor frequency, difference, time difference)."""
    f = np.floor(_f_cell(lf)).astype(np.int64)
    r = np.floor(_r_cell(f, lr)).astype(np.int64)
    return _pack(f, r, np.floor(_t_cell(ldt)).astype(np.int64))


def _soft_cells(pairs: Pairs, a: int, b: int, start: float, h: Hypothesis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query pairs a..b (times, log2 f, log2 ratio, log2 dt) mapped back to
    the original's coordinates under `h` (frequencies / pitch, time
    differences x speed), hashed in the two nearest anchor-frequency cells:
    (own cell, the neighbour on the side it is closer to, positions from
    `start`). The original's value is within half a cell of the mapped one
    whichever grid point is nearest the true factor, so one of the two is
    its cell."""
    times, lf, lr, ldt = (x[a:b] for x in pairs[:4])
    f = _f_cell(lf - np.log2(h.pitch))
    f0 = np.floor(f).astype(np.int64)
    f1 = f0 + np.where(f - f0 >= 0.5, 1, -1)
    t = np.floor(_t_cell(ldt + np.log2(h.speed))).astype(np.int64)
    own, neighbour = (_pack(c, np.floor(_r_cell(c, lr)).astype(np.int64), t) for c in (f0, f1))
    return own, neighbour, times - start


def _segment(keys: np.ndarray, positions: np.ndarray) -> Sparse:
    """A segment's landmarks as (hash, 1 + position / POSITION_SCALE); a
    hash met twice in one segment keeps its first position."""
    unique, first = np.unique(keys, return_index=True)
    return Sparse(unique.astype(np.uint32), (1 + positions[first] / POSITION_SCALE).astype(np.float32))


ENTRY = ModelEntry(info=FingerprintV2Model.info, build=lambda config: FingerprintV2Model(), offered_by_default=True)
