"""Every mapping between the gateway's records and protobuf: its own API's
messages (for the servicer) and those of the embedder, search and catalog
services (for the clients). Keyword arguments only, so that a field added
on either side cannot shift the others."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

import numpy as np
from audiosearch.catalog.v1 import catalog_pb2 as cat
from audiosearch.embedder.v1 import embedder_pb2 as emb
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.search.v1 import search_pb2 as srch

from services.common import reasons
from services.common.convert import timestamp, vector_fields, vector_from_message
from services.common.errors import InvalidArgument
from services.common.vectors import Vector
from services.gateway.monitor import ENDED, STARTED, SUMMARY, Event, Start
from services.gateway.ports import (
    DELETING,
    PENDING,
    READY,
    CollectionStats,
    Embedded,
    Hit,
    Item,
    ItemState,
    Library,
    LibraryCounts,
    ModelChange,
    ModelStatus,
    Segment,
    Window,
)
from services.gateway.ranking import Ranking
from services.gateway.reindex_progress import OUTCOMES, Progress
from services.gateway.repair import KINDS, Action
from services.gateway.stats import Stats

# The gateway's own API

REPAIR_KINDS = {kind: pb.RepairKind.Value("REPAIR_KIND_" + kind.upper()) for kind in KINDS}
REINDEX_OUTCOMES = {kind: pb.ReindexOutcome.Value("REINDEX_OUTCOME_" + kind.upper()) for kind in OUTCOMES}


def library_pb(lib: Library) -> pb.Library:
    return pb.Library(
        name=lib.name,
        model=lib.model,
        dim=lib.dim,
        description=lib.description,
        create_time=timestamp(lib.created_at),
        window_seconds=lib.window,
        hop_seconds=lib.hop,
    )


def item_pb(item: Item) -> pb.AudioItem:
    return pb.AudioItem(
        id=item.id,
        library=item.library,
        name=item.name,
        source_uri=item.source_uri,
        sha256=item.sha256,
        duration_seconds=item.duration_seconds,
        sample_rate=item.sample_rate,
        channels=item.channels,
        user_tags=item.user_tags,
        auto_tags=[pb.Tag(label=label, score=score) for label, score in item.auto_tags],
        create_time=timestamp(item.created_at),
    )


def item_update(r: pb.UpdateAudioRequest) -> tuple[int, str | None, list[str], list[str]]:
    """(id, new name or None when not set, tags to add, tags to remove)."""
    return r.id, r.name if r.HasField("name") else None, list(r.add_tags), list(r.remove_tags)


def search_response(ranking: Ranking) -> pb.SearchAudioResponse:
    return pb.SearchAudioResponse(
        results=[
            pb.SearchResult(
                item=item_pb(r.item),
                score=r.score,
                item_range=pb.TimeRange(start_seconds=r.item_start, end_seconds=r.item_end),
                query_range=pb.TimeRange(start_seconds=r.query_start, end_seconds=r.query_end),
                evidence=r.evidence,
                speed=r.speed,
                pitch=r.pitch,
            )
            for r in ranking.results
        ],
        model=ranking.model,
        min_evidence=ranking.min_evidence,
        min_score=ranking.min_score,
    )


MONITOR_KINDS = {
    STARTED: pb.MONITOR_EVENT_KIND_STARTED,
    ENDED: pb.MONITOR_EVENT_KIND_ENDED,
    SUMMARY: pb.MONITOR_EVENT_KIND_SUMMARY,
}
SAMPLE_TYPES = {pb.SAMPLE_TYPE_S16LE: "s16le", pb.SAMPLE_TYPE_F32LE: "f32le"}
PCM_DTYPES = {"s16le": ("<i2", 1 / 32768), "f32le": ("<f4", 1.0)}  # numpy type, scale to +-1


async def monitor_request(messages: AsyncIterable[pb.MonitorRequest]) -> tuple[Start, AsyncIterator[np.ndarray]]:
    """A Monitor call's start message, and its audio as mono float32 samples
    (read lazily, a message at a time, as the use case asks for them)."""
    stream = aiter(messages)
    first = await anext(stream, None)
    if first is None or first.WhichOneof("request") != "start":
        raise InvalidArgument(
            "the first message of the stream must carry `start` (the library and audio format)",
            reason=reasons.BAD_STREAM,
            field="start",
        )
    s = first.start
    start = Start(
        library=s.library,
        sample_rate=s.sample_rate,
        channels=s.channels,
        sample_type=SAMPLE_TYPES.get(s.sample_type, ""),
        min_score=s.min_score,
        live=s.live,
    )
    return start, _pcm(stream, start)


async def _pcm(stream: AsyncIterator[pb.MonitorRequest], start: Start) -> AsyncIterator[np.ndarray]:
    """Raw interleaved PCM in chunks of any size -> mono float32 samples; a
    frame split between messages is joined, and the whole must end on a
    frame boundary. Only read once the use case has checked `start`."""
    dtype, scale = PCM_DTYPES[start.sample_type]
    frame = np.dtype(dtype).itemsize * start.channels
    rest = b""
    async for message in stream:
        if message.WhichOneof("request") == "start":
            raise InvalidArgument(
                "only the first message of the stream may carry `start`", reason=reasons.BAD_STREAM, field="start"
            )
        data = rest + message.chunk
        whole = len(data) - len(data) % frame
        rest = data[whole:]
        if whole:
            samples = np.frombuffer(data[:whole], dtype=dtype).reshape(-1, start.channels)
            mono = samples.astype(np.float32).mean(axis=1) * np.float32(scale)
            yield np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
    if rest:
        raise InvalidArgument(
            f"the audio ends inside a frame: {len(rest)} bytes left over "
            f"(a frame is {frame} bytes: {start.channels} channels of {start.sample_type})"
        )


def monitor_event(e: Event) -> pb.MonitorEvent:
    if e.occurrence is None or e.item is None:  # the summary
        return pb.MonitorEvent(
            kind=MONITOR_KINDS[e.kind], scanned_seconds=e.scanned, occurrences=e.occurrences, decided_at_seconds=e.at
        )
    o = e.occurrence
    return pb.MonitorEvent(
        kind=MONITOR_KINDS[e.kind],
        item=item_pb(e.item),
        stream_range=pb.TimeRange(start_seconds=o.stream_start, end_seconds=o.stream_end),
        item_range=pb.TimeRange(start_seconds=o.item_start, end_seconds=o.item_end),
        played_seconds=o.played,
        speed=o.speed,
        confidence=o.confidence,
        decided_at_seconds=e.at,
    )


def segment_message(segment: Segment | None, chunk: bytes) -> pb.GetAudioSegmentResponse:
    """A message of a streamed segment; the first (`segment` set) also describes it."""
    if segment is None:
        return pb.GetAudioSegmentResponse(chunk=chunk)
    return pb.GetAudioSegmentResponse(
        chunk=chunk,
        content_type="audio/wav",
        start_seconds=segment.start,
        end_seconds=segment.end,
        total_bytes=len(segment.wav),
    )


def stats_response(stats: Stats) -> pb.StatsResponse:
    return pb.StatsResponse(
        libraries=[
            pb.LibraryStats(
                name=s.library.name,
                model=s.library.model,
                items=s.ready,
                pending_items=s.pending,
                total_duration_seconds=s.duration_seconds,
                indexed_items=s.indexed_items,
                vectors=s.vectors,
            )
            for s in stats.libraries
        ],
        models=[
            pb.ModelStatus(
                name=m.name,
                version=m.version,
                dim=m.dim,
                available=m.available,
                unavailable_reason=m.reason,
                purpose=m.purpose,
                score_meaning=m.score_meaning,
            )
            for m in stats.models
        ],
        default_model=stats.default_model,
    )


def repair_response(actions: Sequence[Action], dry_run: bool) -> pb.RepairResponse:
    return pb.RepairResponse(
        actions=[
            pb.RepairAction(kind=REPAIR_KINDS[a.kind], library=a.library, item_id=a.item_id, detail=a.detail)
            for a in actions
        ],
        dry_run=dry_run,
    )


def reindex_response(p: Progress) -> pb.ReindexLibraryResponse:
    response = pb.ReindexLibraryResponse(
        total_items=p.total,
        reindexed_items=p.reindexed,
        skipped_items=p.skipped,
        failed_items=p.failed,
        elapsed_seconds=p.elapsed,
        outcome=REINDEX_OUTCOMES.get(p.outcome, pb.REINDEX_OUTCOME_UNSPECIFIED),
        previous_model=p.previous_model,
        detail=p.detail,
    )
    if p.failure is not None:
        f = p.failure
        response.failure.CopyFrom(pb.ReindexFailure(item_id=f.item_id, name=f.name, reason=f.reason))
    if p.library is not None:
        response.library.CopyFrom(library_pb(p.library))
    return response


# The embedder


def model_status(m: emb.ModelInfo) -> ModelStatus:
    return ModelStatus(
        name=m.name,
        version=m.version,
        dim=m.dim,
        available=m.available,
        reason=m.unavailable_reason,
        loading=m.loading,
        window=m.window_seconds,
        hop=m.hop_seconds,
        min_evidence=m.min_evidence,
        sparse=m.sparse,
        landmarks=m.landmarks,
        min_confidence=m.min_confidence,
        purpose=m.purpose,
        score_meaning=m.score_meaning,
    )


def embedded(r: emb.EmbedResponse) -> Embedded:
    return Embedded(
        model=r.model.name,
        dim=r.model.dim,
        window=r.model.window_seconds,
        hop=r.model.hop_seconds,
        min_evidence=r.model.min_evidence,
        duration=r.audio.duration_seconds,
        sample_rate=r.audio.sample_rate,
        channels=r.audio.channels,
        sha256=r.audio.sha256,
        windows=[
            Window(
                index=w.index,
                offset=w.offset_seconds,
                vector=vector_from_message(w),
                speed=w.speed,
                pitch=w.pitch,
                decide_only=w.decide_only,
            )
            for w in r.windows
        ],
        tags=[(t.label, t.score) for t in r.tags],
        landmarks=r.model.landmarks,
        min_confidence=r.model.min_confidence,
    )


# The search service


def window_vector(item_id: int, w: Window) -> srch.WindowVector:
    return srch.WindowVector(
        item_id=item_id, window_index=w.index, offset_seconds=w.offset, **vector_fields(w.vector, srch.SparseVector)
    )


def query_vector(vector: Vector) -> srch.QueryVector:
    return srch.QueryVector(**vector_fields(vector, srch.SparseVector))


def stored_window(v: srch.WindowVector) -> Window:
    return Window(index=v.window_index, offset=v.offset_seconds, vector=vector_from_message(v))


def hit(h: srch.Hit) -> Hit:
    return Hit(item_id=h.item_id, window=h.window_index, offset=h.offset_seconds, score=h.score)


def collection_stats(c: srch.CollectionStats) -> CollectionStats:
    return CollectionStats(library=c.library, vectors=c.vectors, items=c.items)


# The catalog

STATES = {cat.ITEM_STATE_PENDING: PENDING, cat.ITEM_STATE_READY: READY, cat.ITEM_STATE_DELETING: DELETING}
STATE_CODES = {v: k for k, v in STATES.items()}


def library(lib: cat.Library) -> Library:
    return Library(
        name=lib.name,
        model=lib.model_name,
        dim=lib.model_dim,
        description=lib.description,
        created_at=lib.create_time.ToDatetime(),
        window=lib.window_seconds,
        hop=lib.hop_seconds,
    )


def item(i: cat.Item) -> Item:
    return Item(
        id=i.id,
        library=i.library,
        name=i.name,
        source_uri=i.source_uri,
        sha256=i.sha256,
        duration_seconds=i.duration_seconds,
        sample_rate=i.sample_rate,
        channels=i.channels,
        user_tags=list(i.user_tags),
        auto_tags=[(t.label, t.score) for t in i.auto_tags],
        created_at=i.create_time.ToDatetime(),
        state=STATES.get(i.state, PENDING),
    )


def item_state(i: cat.ItemStateEntry) -> ItemState:
    return ItemState(
        id=i.id, state=STATES[i.state], updated_at=i.update_time.ToDatetime(), source_uri=i.source_uri, sha256=i.sha256
    )


def library_counts(c: cat.LibraryCounts) -> LibraryCounts:
    return LibraryCounts(
        library=c.library, ready=c.ready_items, pending=c.pending_items, duration_seconds=c.total_duration_seconds
    )


def model_change(c: cat.ModelChange) -> ModelChange:
    return ModelChange(model=c.model_name, dim=c.model_dim, window=c.window_seconds, hop=c.hop_seconds)


def model_change_pb(change: ModelChange) -> cat.ModelChange:
    return cat.ModelChange(
        model_name=change.model, model_dim=change.dim, window_seconds=change.window, hop_seconds=change.hop
    )


def ready_request(item_id: int, e: Embedded) -> cat.MarkItemReadyRequest:
    """What the catalog keeps of an embedded item when it marks it READY."""
    return cat.MarkItemReadyRequest(
        id=item_id,
        auto_tags=[cat.Tag(label=label, score=score) for label, score in e.tags],
        duration_seconds=e.duration,
        sample_rate=e.sample_rate,
        channels=e.channels,
    )
