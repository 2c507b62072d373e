"""Monitoring a long recording or a live stream: every occurrence of every
item of a library, with its start, end and speed (GatewayService.Monitor).

The audio arrives as mono float32 samples (the servicer's converter turns
the client's PCM into them). Every HOP seconds of stream the last WINDOW
seconds are searched as an uploaded clip is (`search.search`: embedded as a
query, then the landmark decision of services/gateway/landmarks.py), but at
one STFT framing (EmbedOptions.single_framing: HOP is not a whole number of
STFT hops, so consecutive windows start at different framings anyway) and
with the library segments fetched for the decision kept between windows
(KeptSegments); WINDOW > HOP, so a stretch cut by one window's edge lies
whole in the next. Each confident
result's query range is moved to stream time and handed to the tracker
(services/gateway/occurrences.py), whose events are yielded as they come.
At the end of the input the tail is analysed, every open occurrence ends
and a summary follows. Only the samples of the next window are kept, so
memory is bounded by WINDOW, not by the stream."""

from __future__ import annotations

import dataclasses
import io
import math
import wave
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.text import quoted
from services.gateway import access
from services.gateway.occurrences import ENDED, STARTED, Match, Occurrence, Tracker
from services.gateway.ports import Backends, Item, VectorPort, Window
from services.gateway.ranking import Query, Threshold, rank_landmarks
from services.gateway.steps import model_status

__all__ = ["ENDED", "STARTED", "SUMMARY", "Event", "Start", "monitor"]

WINDOW = 10.0  # s of stream searched at a time
HOP = 5.0  # s between the starts of two windows
TOLERANCE = 1.0  # s: how far from an occurrence's line a match may be and still continue it
MIN_TAIL = 1.0  # s: a shorter stretch left at the end is covered by the last full window only
CANDIDATES = 10  # results asked of each window's search
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


@dataclasses.dataclass(frozen=True)
class Event:
    """STARTED or ENDED (an occurrence of `item`), or SUMMARY (the last)."""

    kind: str
    item: Item | None = None
    occurrence: Occurrence | None = None
    scanned: float = 0.0  # SUMMARY: seconds of stream analysed
    occurrences: int = 0  # SUMMARY: occurrences found


def validate(start: Start) -> None:
    if not start.library:
        raise InvalidArgument("library must be set")
    if not MIN_RATE <= start.sample_rate <= MAX_RATE:
        raise InvalidArgument(f"sample_rate must be between {MIN_RATE} and {MAX_RATE}, got {start.sample_rate}")
    if not 1 <= start.channels <= MAX_CHANNELS:
        raise InvalidArgument(f"channels must be between 1 and {MAX_CHANNELS}, got {start.channels}")
    if start.sample_type not in SAMPLE_TYPES:
        raise InvalidArgument(f"sample_type must be one of {', '.join(SAMPLE_TYPES)}")
    if not math.isfinite(start.min_score):
        raise InvalidArgument(f"min_score must be a finite number, got {start.min_score}")


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
            "with: monitoring needs a landmark fingerprint (fingerprint-v2; audiosearch reindex moves a library)"
        )
    backends = dataclasses.replace(backends, vectors=KeptSegments(backends.vectors))
    threshold = Threshold(min_score=start.min_score or model.min_confidence, min_evidence=0.0)
    top_k = min(CANDIDATES, max_top_k)
    rate, tracker = start.sample_rate, Tracker(tolerance=TOLERANCE, gap=WINDOW)
    window, hop = round(WINDOW * rate), round(HOP * rate)
    items: dict[int, Item] = {}
    buffer = np.zeros(0, dtype=np.float32)
    base = 0  # stream sample of buffer[0]
    total = 0  # samples received
    end = window  # stream sample where the next window ends
    analysed = 0  # stream sample up to which windows were analysed

    async def analyse(first: int, last: int) -> list[Event]:
        # As search.search does with an uploaded clip, at one STFT framing:
        # overlapping windows start at other framings anyway.
        clip = wav_bytes(buffer[first - base : last - base], rate)
        embedded = await backends.embedder.embed(
            clip, lib.model, 0, lib.window, lib.hop, query=True, single_framing=True
        )
        query = Query(windows=embedded.windows, duration=embedded.duration, window=embedded.window, hop=embedded.hop)
        offset, matches = first / rate, []
        for r in await rank_landmarks(backends, lib, query, top_k, [], [], threshold):
            items[r.item.id] = r.item
            matches.append(
                Match(
                    item_id=r.item.id,
                    stream_start=offset + r.query_start,
                    stream_end=offset + r.query_end,
                    item_start=r.item_start,
                    item_end=r.item_end,
                    speed=r.speed,
                    confidence=r.score,
                )
            )
        return [_event(e.kind, e.occurrence, items) for e in tracker.feed(matches, last / rate)]

    # The next chunk is read only once the windows it completes are
    # analysed: a client sending faster than real time (a file) is held
    # back by gRPC's flow control instead of filling the gateway's memory.
    async for samples in audio:
        buffer = np.concatenate([buffer, samples.astype(np.float32, copy=False)])
        total += len(samples)
        while total >= end:
            for event in await analyse(end - window, end):
                yield event
            analysed, end = end, end + hop
            keep = end - window  # the next window's first sample
            buffer, base = buffer[keep - base :], keep
    if total - analysed >= MIN_TAIL * rate:  # what the last window did not reach
        for event in await analyse(base, total):  # the stretch after the last full window's start
            yield event
    for e in tracker.close():
        yield _event(e.kind, e.occurrence, items)
    yield Event(SUMMARY, scanned=total / rate, occurrences=tracker.ended)


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


def _event(kind: str, occurrence: Occurrence, items: dict[int, Item]) -> Event:
    return Event(kind, item=items[occurrence.item_id], occurrence=occurrence)
