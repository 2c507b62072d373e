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
- otherwise, near an open occurrence of the item (within `gap` of its
  latest evidence), it is a rival: a passage the track repeats may match
  the other repeat in one stretch. A rival keeps the occurrence open, and
  opens a new occurrence only when the next off-line match lies on its own
  line (an item played twice, or another passage of it, is another
  occurrence): a STARTED event, as is any match of an item not open. A
  confirmed rival line over the stretch the occurrence already covers is
  the repeat's ambiguity, not a new playing, and is dropped; one that
  follows an occurrence of a single match within 2 x `tolerance` corrects
  that occurrence's line (its one window matched the other repeat);
- an occurrence is closed once the analysis has moved more than `gap` past
  its latest evidence: an ENDED event with its final ranges.

Pure: no I/O, no clock, no gRPC."""

from __future__ import annotations

import dataclasses
import math
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


@dataclasses.dataclass
class _Open:
    occurrence: Occurrence
    weight: float  # the summed speed weight of its matches
    alive: float  # stream time of its latest evidence, a rival's included
    rival: Match | None = None  # the latest match of its item off its line, near it


class Tracker:
    """Open occurrences per item; `feed` each analysed stretch's matches in
    stream order, `close` at the end of the stream."""

    def __init__(self, tolerance: float = 1.0, gap: float = 10.0) -> None:
        self.tolerance, self.gap = tolerance, gap
        self._open: list[_Open] = []
        self.ended = 0  # occurrences closed so far

    @property
    def open(self) -> list[Occurrence]:
        return [o.occurrence for o in self._open]

    def feed(self, matches: list[Match], analysed_to: float) -> list[Event]:
        """The matches of a stretch analysed up to stream time `analysed_to`:
        STARTED events for new occurrences, then ENDED for those the stream
        has left behind (more than `gap` past their latest evidence).

        A match of an item that is open, near it in the stream but off its
        line, is a rival: a track that repeats a passage matches the other
        repeat now and then. It keeps the occurrence alive and opens a new
        one only when the next such match lies on its line (the item played
        again, or another passage of it)."""
        events: list[Event] = []
        for m in sorted(matches, key=lambda m: (m.stream_start, m.item_id)):
            k = self._continued(m)
            if k is not None:
                o = self._open[k]
                o.occurrence, o.weight = _extend(o.occurrence, o.weight, m)
                o.alive, o.rival = max(o.alive, m.stream_end), None
                continue
            near = self._near(m)
            first = m
            if near is not None:
                rival = near.rival
                if rival is None or abs(m.item_start - _predicts(rival, m.stream_start)) > self.tolerance:
                    near.rival, near.alive = m, max(near.alive, m.stream_end)
                    continue
                near.rival, first = None, rival
            occurrence = Occurrence(
                item_id=first.item_id,
                stream_start=first.stream_start,
                stream_end=first.stream_end,
                item_start=first.item_start,
                item_end=first.item_end,
                speed=first.speed,
                confidence=first.confidence,
            )
            opened = _Open(occurrence, _weight(first), first.stream_end)
            if first is not m:
                opened.occurrence, opened.weight = _extend(occurrence, opened.weight, m)
                opened.alive = max(opened.alive, m.stream_end)
            overlap = -math.inf if near is None else near.occurrence.stream_end - first.stream_start
            if near is not None and near.occurrence.matches == 1 and overlap > -2 * self.tolerance:
                # A single match right before (or over) a confirmed line of the
                # same item: it matched a passage the item repeats. The line is
                # corrected; its STARTED stands.
                near.occurrence, near.weight = _relined(near.occurrence, opened.occurrence), opened.weight
                near.alive = max(near.alive, opened.alive)
                continue
            if overlap > self.tolerance:  # two lines over one stretch: the repeat's ambiguity, dropped
                continue
            self._open.append(opened)
            events.append(Event(STARTED, opened.occurrence))
        return events + self._close(lambda o: analysed_to - o.alive > self.gap)

    def close(self) -> list[Event]:
        """The end of the stream: every open occurrence ends."""
        return self._close(lambda o: True)

    def _continued(self, m: Match) -> int | None:
        """The open occurrence `m` continues (the nearest line), if any."""
        best: tuple[float, int] | None = None
        for k, o in enumerate(self._open):
            if o.occurrence.item_id != m.item_id or m.stream_start > o.occurrence.stream_end + self.gap:
                continue
            off = abs(m.item_start - o.occurrence.predicts(m.stream_start))
            if off <= self.tolerance and (best is None or off < best[0]):
                best = (off, k)
        return None if best is None else best[1]

    def _near(self, m: Match) -> _Open | None:
        """The latest open occurrence of `m`'s item whose evidence reaches within `gap` of it."""
        near = [o for o in self._open if o.occurrence.item_id == m.item_id and m.stream_start <= o.alive + self.gap]
        return max(near, key=lambda o: o.alive, default=None)

    def _close(self, done: Callable[[_Open], bool]) -> list[Event]:
        ended = [o.occurrence for o in self._open if done(o)]
        self._open = [o for o in self._open if not done(o)]
        self.ended += len(ended)
        return [Event(ENDED, o) for o in sorted(ended, key=lambda o: o.stream_start)]


def _relined(old: Occurrence, new: Occurrence) -> Occurrence:
    """`new`'s line, over the stream range of both."""
    start = min(old.stream_start, new.stream_start)
    return dataclasses.replace(
        new,
        stream_start=start,
        stream_end=max(old.stream_end, new.stream_end),
        item_start=new.predicts(start),
        confidence=max(old.confidence, new.confidence),
        matches=old.matches + new.matches,
    )


def _predicts(m: Match, stream_time: float) -> float:
    return m.item_start + m.speed * (stream_time - m.stream_start)


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
