"""A monitored stream's query, fingerprinted and searched once per piece.

Monitoring decides on overlapping stretches of the stream (WINDOW s, one
every HOP s, services/gateway/monitor.py). Fingerprinting and searching
each stretch whole would do every second of the stream WINDOW / HOP times
over; instead the stream is cut into consecutive *pieces*, each
fingerprinted once (with LEAD s of the audio before it, so the spectrum's
whitening and the peak-density rule see what they would in one long
recording) and keeping only the landmarks anchored in it, up to REACH s
before the end of the audio received (a later anchor may still lose
partners, which come up to 1.28 s after it, and peaks whose whitening
needs audio not yet there). Each piece's searched windows are searched
once; a stretch's decision takes the windows and the hits of the pieces
it spans. The bound: WINDOW / HOP pieces are kept, each a few hundred
sparse vectors."""

from __future__ import annotations

import dataclasses
import io
import itertools
import wave
from collections import deque
from collections.abc import Sequence

import numpy as np

from services.common.vectors import POSITION_SCALE, Sparse
from services.gateway import landmarks
from services.gateway.ports import Backends, Hit, Library, Window
from services.gateway.ranking import Query, landmark_hits

LEAD = 2.0  # s of audio before a piece fingerprinted with it (whitening +-1 s, peak density +-0.5 s)
REACH = 1.5  # s: landmarks anchored this close to the end of the audio so far wait for the next piece
PIECE_HITS = 16  # nearest segments per searched vector: one vector holds a whole piece (per hypothesis)


@dataclasses.dataclass(frozen=True)
class Piece:
    """The landmarks anchored in [start, end) of the stream (offsets in
    stream seconds), and the hits of its searched windows."""

    start: float
    end: float
    windows: list[Window]
    searched: list[Window]
    hits: list[list[Hit]]


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono float32 samples as a 16-bit WAV file: what a clip upload is."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def shifted(windows: Sequence[Window], clip_start: float, lo: float, hi: float) -> list[Window]:
    """`windows` of a clip starting at `clip_start` (stream seconds), in
    stream time, with only the landmarks anchored in [lo, hi)."""
    out = []
    for w in windows:
        offset = clip_start + w.offset
        vector = landmarks.anchored_within(w.vector, offset, lo, hi)  # type: ignore[arg-type]
        if len(vector.indices):
            out.append(dataclasses.replace(w, offset=offset, vector=vector))
    return out


async def pieces(
    backends: Backends,
    lib: Library,
    clip: np.ndarray,
    rate: int,
    clip_start: float,
    bounds: Sequence[float],
) -> list[Piece]:
    """Consecutive pieces of the stream between `bounds` (stream seconds),
    from one fingerprint of `clip` (mono float32 at `rate`, from
    `clip_start`), at one STFT framing, their searched windows searched
    in one call."""
    embedded = await backends.embedder.embed(
        wav_bytes(clip, rate), lib.model, 0, lib.window, lib.hop, query=True, single_framing=True
    )
    parts = [shifted(embedded.windows, clip_start, a, b) for a, b in itertools.pairwise(bounds)]
    searched = [merged([w for w in ws if not w.decide_only]) for ws in parts]
    flat = [w for ws in searched for w in ws]
    hits = await landmark_hits(backends, lib, flat, per_window=PIECE_HITS) if flat else []
    out, at = [], 0
    for (a, b), ws, ss in zip(itertools.pairwise(bounds), parts, searched, strict=True):
        out.append(Piece(a, b, ws, ss, list(hits[at : at + len(ss)])))
        at += len(ss)
    return out


def merged(windows: Sequence[Window]) -> list[Window]:
    """One window per hypothesis holding the landmarks of all of them
    (positions from the first one's offset; a hash met twice keeps its
    first): the vector store's cost is mostly per query vector, and a
    piece's chunks of one hypothesis name the same candidates."""
    groups: dict[tuple[float, float], list[Window]] = {}
    for w in windows:
        groups.setdefault((w.speed, w.pitch), []).append(w)
    out = []
    for group in groups.values():
        first = group[0]
        if len(group) == 1:
            out.append(first)
            continue
        keys = np.concatenate([w.vector.indices for w in group])  # type: ignore[union-attr]
        values = np.concatenate(
            [w.vector.values + np.float32((w.offset - first.offset) / POSITION_SCALE) for w in group]  # type: ignore[union-attr]
        )
        unique, at = np.unique(keys, return_index=True)
        out.append(dataclasses.replace(first, vector=Sparse(unique, values[at])))
    return out


class Pieces:
    """The pieces of the latest stretch of at most `window` s."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._pieces: deque[Piece] = deque()

    def add(self, p: Piece) -> None:
        self._pieces.append(p)
        while p.end - self._pieces[0].start > self._window + 1e-6:
            self._pieces.popleft()

    def stretch(
        self, segment_seconds: float, tail: Piece | None = None
    ) -> tuple[float, Query, list[Window], list[list[Hit]]]:
        """The stretch, and `tail` after it (a piece not kept), as one
        query: its origin (stream seconds), the query (times from the
        origin), its searched windows and their hits, for
        ranking.decide_landmarks."""
        chosen = [*self._pieces, *([tail] if tail else [])]
        origin = chosen[0].start

        def moved(windows: Sequence[Window]) -> list[Window]:
            return [dataclasses.replace(w, offset=w.offset - origin) for w in windows]

        windows = [w for p in chosen for w in moved(p.windows)]
        searched = [w for p in chosen for w in p.searched]  # for their hypotheses only: not moved
        hits = [h for p in chosen for h in p.hits]
        query = Query(windows, chosen[-1].end - origin, segment_seconds, segment_seconds)
        return origin, query, searched, hits
