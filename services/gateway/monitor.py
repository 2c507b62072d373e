"""Monitoring a long recording or a live stream: every occurrence of every
item of a library, with its start, end and speed (GatewayService.Monitor).

The audio arrives as mono float32 samples (the servicer's converter turns
the client's PCM into them). Every HOP seconds of stream (LIVE_HOP for a
live stream) the latest WINDOW seconds are decided on as an uploaded clip
is (the landmark decision of services/gateway/landmarks.py), from
landmarks fingerprinted and searched once per piece of the stream
(services/gateway/stream_query.py, at one STFT framing) and with the
library segments fetched for the decision kept between decisions
(KeptSegments); WINDOW > HOP, so a stretch cut by one decision's edge lies
whole in the next. Each confident result's query range is moved to stream
time and handed to the tracker (services/gateway/occurrences.py), whose
events are yielded as they come. At the end of the input the last
landmarks are decided on, every open occurrence ends and a summary
follows. Only the samples of the next piece are kept, so
memory is bounded by WINDOW, not by the stream."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.text import quoted
from services.gateway import access
from services.gateway.occurrences import ENDED, STARTED, Match, Occurrence, Tracker
from services.gateway.ports import Backends, Item, VectorPort, Window
from services.gateway.ranking import Threshold, audio_seconds, decide_landmarks
from services.gateway.steps import model_status
from services.gateway.stream_query import LEAD, REACH, Piece, Pieces, pieces

__all__ = ["ENDED", "STARTED", "SUMMARY", "Event", "Start", "monitor"]

WINDOW = 10.0  # s of stream a decision takes at a time
HOP = 5.0  # s between two decisions
LIVE_HOP = 1.0  # s between two decisions on a live stream (Start.live): earlier STARTED events
TOLERANCE = 1.0  # s: how far from an occurrence's line a match may be and still continue it
# s without evidence after which an occurrence ends: live, a window (what
# is playing stops showing soon after it stops); in a recording, three, so
# a quiet passage of up to 30 s inside one playing does not cut it in two
# (measured: 2 of 44 segments of a 1 h broadcast split at 10 s, by quiet
# stretches of 12.7 and 28.6 s).
FILE_GAP = 3 * WINDOW
MIN_TAIL = 1.0  # s: a shorter stretch left at the end is covered by the last full window only
CANDIDATES = 10  # results asked of each window's search
LIBRARY_REFRESH = 300.0  # s of stream between two reads of the library's size
KEPT_SEGMENTS = 20000  # library segments kept between windows (about 100 landmarks each)
MIN_RATE, MAX_RATE = 1000, 384000
MAX_CHANNELS = 64
SAMPLE_TYPES = ("s16le", "f32le")
SUMMARY = "summary"


@dataclasses.dataclass(frozen=True)
class Start:
    """What to monitor, and the format the client's audio is in."""

    library: str
    sample_rate: int
    channels: int
    sample_type: str  # one of SAMPLE_TYPES ("": not given)
    min_score: float = 0.0  # as search's: 0 applies the model's threshold
    live: bool = False  # the audio comes at its own pace: decide every LIVE_HOP s, not HOP


@dataclasses.dataclass(frozen=True)
class Event:
    """STARTED or ENDED (an occurrence of `item`), or SUMMARY (the last)."""

    kind: str
    item: Item | None = None
    occurrence: Occurrence | None = None
    scanned: float = 0.0  # SUMMARY: seconds of stream analysed
    occurrences: int = 0  # SUMMARY: occurrences found
    at: float = 0.0  # seconds of stream received when the event was decided


def validate(start: Start) -> None:
    if not start.library:
        raise InvalidArgument("library must be set", reason=reasons.MISSING_FIELD, field="library")
    if not MIN_RATE <= start.sample_rate <= MAX_RATE:
        raise InvalidArgument(
            f"sample_rate must be between {MIN_RATE} and {MAX_RATE}, got {start.sample_rate}",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
            field="sample_rate",
        )
    if not 1 <= start.channels <= MAX_CHANNELS:
        raise InvalidArgument(
            f"channels must be between 1 and {MAX_CHANNELS}, got {start.channels}",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
            field="channels",
        )
    if start.sample_type not in SAMPLE_TYPES:
        raise InvalidArgument(
            f"sample_type must be one of {', '.join(SAMPLE_TYPES)}",
            reason=reasons.UNSUPPORTED_AUDIO_FORMAT,
            field="sample_type",
        )
    if not math.isfinite(start.min_score):
        raise InvalidArgument(
            f"min_score must be a finite number, got {start.min_score}", reason=reasons.INVALID_FIELD, field="min_score"
        )


async def monitor(
    backends: Backends, max_top_k: int, start: Start, audio: AsyncIterator[np.ndarray]
) -> AsyncIterator[Event]:
    """Events as the stream's occurrences start and end, then a summary.
    `audio` yields mono float32 samples at `start.sample_rate`."""
    validate(start)
    access.require(start.library)
    lib = await backends.catalog.get_library(start.library)  # NotFound for an unknown library
    model = await model_status(backends, lib.model)
    if not model.landmarks:
        raise FailedPrecondition(
            f"library {quoted(lib.name)} uses {lib.model}, which gives no offset or speed to follow a stream "
            "with: monitoring needs a landmark fingerprint (fingerprint-v2; audiosearch reindex moves a library)",
            reason=reasons.MODEL_NOT_SUPPORTED,
        )
    backends = dataclasses.replace(backends, vectors=KeptSegments(backends.vectors))
    threshold = Threshold(
        min_score=start.min_score or confidence_needed(model.min_confidence, start.live), min_evidence=0.0
    )
    top_k = min(CANDIDATES, max_top_k)
    rate, tracker = start.sample_rate, Tracker(tolerance=TOLERANCE, gap=WINDOW if start.live else FILE_GAP)
    hop = LIVE_HOP if start.live else HOP
    kept = Pieces(WINDOW)
    library = LibrarySize(backends, lib.name)
    items: dict[int, Item] = {}
    buffer = np.zeros(0, dtype=np.float32)
    base = 0  # stream sample of buffer[0]
    total = 0  # samples received
    cut = 0.0  # stream seconds: the landmarks anchored before it are in a piece, done or under way
    pending: asyncio.Task[list[Piece]] | None = None  # the latest piece, being fingerprinted and searched
    pending_at = 0.0  # the stream seconds received when it was cut

    def begin(end: float, received: float) -> asyncio.Task[list[Piece]]:
        # The piece [cut, end) from one fingerprint of the audio from LEAD
        # before it; live, the landmarks after it so far go along for its
        # decision only (they come again, complete, in the next piece).
        nonlocal cut, buffer, base
        first = max(0.0, cut - LEAD)
        clip = buffer[round(first * rate) - base : round(received * rate) - base]
        bounds = [cut, end, received] if start.live and received > end else [cut, end]
        task = asyncio.create_task(pieces(backends, lib, clip, rate, first, bounds))
        cut = end
        keep = max(0, round((cut - LEAD) * rate))  # the next piece's first sample
        buffer, base = buffer[keep - base :], keep
        return task

    async def decide(task: asyncio.Task[list[Piece]], received: float) -> list[Event]:
        new, *tail = await task
        kept.add(new)
        origin, query, searched, hits = kept.stretch(lib.window, tail[0] if tail else None)
        decided = await decide_landmarks(
            backends, lib, query, searched, hits, top_k, threshold, await library.seconds(new.end)
        )
        matches = []
        for r in decided:
            items[r.item.id] = r.item
            matches.append(
                Match(
                    item_id=r.item.id,
                    stream_start=origin + r.query_start,
                    stream_end=origin + r.query_end,
                    item_start=r.item_start,
                    item_end=r.item_end,
                    speed=r.speed,
                    confidence=r.score,
                )
            )
        return [_event(e.kind, e.occurrence, items, received) for e in tracker.feed(matches, received)]

    # Two pieces are under way at a time: one is decided on (here) while
    # the next is fingerprinted and searched (by the embedder and the
    # vector store). The next chunk is read only once the pieces it
    # completes are started: a client sending faster than real time (a
    # file) is held back by gRPC's flow control instead of filling the
    # gateway's memory.
    try:
        async for samples in audio:
            buffer = np.concatenate([buffer, samples.astype(np.float32, copy=False)])
            total += len(samples)
            while total / rate - REACH - cut >= hop:
                # The audio this piece is cut from ends REACH after it, even
                # when more has come (a backlog): live, the landmarks of that
                # REACH go along for its decision only, so a clip stays
                # LEAD + hop + REACH long whatever the backlog.
                received = cut + hop + REACH
                task = begin(cut + hop, received)
                if pending is not None:
                    for event in await decide(pending, pending_at):
                        yield event
                pending, pending_at = task, received
        if total / rate > cut:  # the last landmarks, with no more audio to wait for
            task = begin(total / rate, total / rate)
            if pending is not None:
                for event in await decide(pending, pending_at):
                    yield event
            pending, pending_at = task, total / rate
        if pending is not None:
            task, pending = pending, None
            for event in await decide(task, pending_at):
                yield event
    finally:
        if pending is not None:
            pending.cancel()
    for e in tracker.close():
        yield _event(e.kind, e.occurrence, items, total / rate)
    yield Event(SUMMARY, scanned=total / rate, occurrences=tracker.ended, at=total / rate)


class KeptSegments:
    """The vector store, with the library segments fetched for the match
    decision kept (the latest KEPT_SEGMENTS): consecutive windows of a
    stream overlap, and fetch mostly the segments of the items playing."""

    def __init__(self, vectors: VectorPort, limit: int = KEPT_SEGMENTS) -> None:
        self._vectors, self._limit = vectors, limit
        self._kept: OrderedDict[tuple[int, int], Window | None] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vectors, name)

    async def get_many(self, library: str, windows: dict[int, Sequence[int]]) -> dict[int, list[Window]]:
        missing = {i: [k for k in ks if (i, k) not in self._kept] for i, ks in windows.items()}
        missing = {i: ks for i, ks in missing.items() if ks}
        if missing:
            got = await self._vectors.get_many(library, missing)
            for i, ks in missing.items():
                found = {w.index: w for w in got.get(i, [])}
                for k in ks:
                    self._kept[(i, k)] = found.get(k)
        out: dict[int, list[Window]] = {}
        for i, ks in windows.items():
            for k in ks:
                self._kept.move_to_end((i, k))
            kept = (self._kept[(i, k)] for k in sorted(set(ks)))
            out[i] = [w for w in kept if w is not None]
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)
        return out


def _event(kind: str, occurrence: Occurrence, items: dict[int, Item], at: float) -> Event:
    return Event(kind, item=items[occurrence.item_id], occurrence=occurrence, at=at)


def confidence_needed(model_confidence: float, live: bool) -> float:
    """The model's confidence threshold, for a decision every HOP s. Live,
    decisions come HOP / LIVE_HOP times as often over the same audio, so
    each gets that much less of the false-alarm budget (1 - confidence),
    and a stream's chance of a false report per second stays the file
    scan's."""
    return 1 - (1 - model_confidence) * (LIVE_HOP / HOP if live else 1.0)


class LibrarySize:
    """The library's seconds of audio for the decision, read again every
    LIBRARY_REFRESH s of stream: a stream may run for days while items come in."""

    def __init__(self, backends: Backends, library: str) -> None:
        self._backends, self._library = backends, library
        self._seconds, self._read_at = 0.0, -math.inf

    async def seconds(self, stream_time: float) -> float:
        if stream_time - self._read_at >= LIBRARY_REFRESH:
            self._seconds, self._read_at = await audio_seconds(self._backends, self._library), stream_time
        return self._seconds
