"""Following the matches of a monitored stream into occurrences.

The stream is analysed in overlapping stretches (services/gateway/monitor.py);
each gives the confident matches it holds: an item, the stretch of the
stream the evidence covers, the part of the item it maps to and the speed.
One playing of an item spans several stretches, and its matches all lie on
one line, item time = speed x stream time + intercept. The tracker keeps the
open occurrences of every item:

- a match continues an open occurrence of the same item when it lies on
  that occurrence's line (its item start within `tolerance` of where the
  line puts it) and starts no later than `gap` after the occurrence's end;
- otherwise it opens a new occurrence (an item played twice, or another
  passage of it, is another occurrence): a STARTED event;
- an occurrence no match continued is closed once the analysis has moved
  more than `gap` past its end: an ENDED event with its final ranges.

Pure: no I/O, no clock, no gRPC."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

STARTED, ENDED = "started", "ended"


@dataclasses.dataclass(frozen=True)
class Match:
    """A confident match in one analysed stretch, in stream and item seconds."""

    item_id: int
    stream_start: float
    stream_end: float
    item_start: float
    item_end: float
    speed: float  # item seconds per stream second
    confidence: float


@dataclasses.dataclass(frozen=True)
class Occurrence:
    """One playing of an item, as far as the matches so far show it."""

    item_id: int
    stream_start: float
    stream_end: float
    item_start: float
    item_end: float
    speed: float  # the matches' speeds, weighted by confidence x stream span
    confidence: float  # the highest of its matches
    matches: int = 1

    @property
    def played(self) -> float:
        """Seconds of the stream the occurrence covers."""
        return self.stream_end - self.stream_start

    def predicts(self, stream_time: float) -> float:
        """The item time its line gives at `stream_time`."""
        return self.item_start + self.speed * (stream_time - self.stream_start)


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str  # STARTED or ENDED
    occurrence: Occurrence


def _weight(m: Match) -> float:
    return m.confidence * max(m.stream_end - m.stream_start, 1e-3)


class Tracker:
    """Open occurrences per item; `feed` each analysed stretch's matches in
    stream order, `close` at the end of the stream."""

    def __init__(self, tolerance: float = 1.0, gap: float = 10.0) -> None:
        self.tolerance, self.gap = tolerance, gap
        self._open: list[tuple[Occurrence, float]] = []  # each with its summed speed weight
        self.ended = 0  # occurrences closed so far

    @property
    def open(self) -> list[Occurrence]:
        return [o for o, _ in self._open]

    def feed(self, matches: list[Match], analysed_to: float) -> list[Event]:
        """The matches of a stretch analysed up to stream time `analysed_to`:
        STARTED events for new occurrences, then ENDED for those the stream
        has left behind (more than `gap` past their end)."""
        events: list[Event] = []
        for m in sorted(matches, key=lambda m: (m.stream_start, m.item_id)):
            k = self._continued(m)
            if k is None:
                occurrence = Occurrence(
                    item_id=m.item_id,
                    stream_start=m.stream_start,
                    stream_end=m.stream_end,
                    item_start=m.item_start,
                    item_end=m.item_end,
                    speed=m.speed,
                    confidence=m.confidence,
                )
                self._open.append((occurrence, _weight(m)))
                events.append(Event(STARTED, occurrence))
            else:
                self._open[k] = _extend(*self._open[k], m)
        return events + self._close(lambda o: analysed_to - o.stream_end > self.gap)

    def close(self) -> list[Event]:
        """The end of the stream: every open occurrence ends."""
        return self._close(lambda o: True)

    def _continued(self, m: Match) -> int | None:
        """The open occurrence `m` continues (the nearest line), if any."""
        best: tuple[float, int] | None = None
        for k, (o, _) in enumerate(self._open):
            if o.item_id != m.item_id or m.stream_start > o.stream_end + self.gap:
                continue
            off = abs(m.item_start - o.predicts(m.stream_start))
            if off <= self.tolerance and (best is None or off < best[0]):
                best = (off, k)
        return None if best is None else best[1]

    def _close(self, done: Callable[[Occurrence], bool]) -> list[Event]:
        ended = [o for o, _ in self._open if done(o)]
        self._open = [(o, w) for o, w in self._open if not done(o)]
        self.ended += len(ended)
        return [Event(ENDED, o) for o in sorted(ended, key=lambda o: o.stream_start)]


def _extend(o: Occurrence, weight: float, m: Match) -> tuple[Occurrence, float]:
    """`o` continued by `m`: the union of the ranges, the weighted speed."""
    w = _weight(m)
    total = weight + w
    extended = dataclasses.replace(
        o,
        stream_start=min(o.stream_start, m.stream_start),
        stream_end=max(o.stream_end, m.stream_end),
        item_start=min(o.item_start, m.item_start),
        item_end=max(o.item_end, m.item_end),
        speed=(o.speed * weight + m.speed * w) / total,
        confidence=max(o.confidence, m.confidence),
        matches=o.matches + 1,
    )
    return extended, total
