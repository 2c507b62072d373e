"""The catalog's one mapping between protobuf messages and its records
(services/catalog/records.py), both ways, field by field by name."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from audiosearch.catalog.v1 import catalog_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from services.catalog.records import ItemRecord, ItemState, LibraryCounts, LibraryRecord, ModelChange, NewItem
from services.catalog.tables import DELETING, PENDING, READY
from services.common.convert import timestamp
from services.common.errors import InvalidArgument

STATES = {PENDING: pb.ITEM_STATE_PENDING, READY: pb.ITEM_STATE_READY, DELETING: pb.ITEM_STATE_DELETING}
STATE_NAMES = {v: k for k, v in STATES.items()}


def state_name(state: int) -> str:
    """The record's state of a proto state ("" for unspecified: any state)."""
    return STATE_NAMES.get(state, "")


def library_pb(lib: LibraryRecord) -> pb.Library:
    return pb.Library(
        id=lib.id,
        name=lib.name,
        model_name=lib.model_name,
        model_dim=lib.model_dim,
        description=lib.description,
        create_time=timestamp(lib.created_at),
        window_seconds=lib.window_seconds,
        hop_seconds=lib.hop_seconds,
    )


def item_pb(item: ItemRecord) -> pb.Item:
    return pb.Item(
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
        state=STATES[item.state],
    )


def new_item(request: pb.ReserveItemRequest) -> NewItem:
    return NewItem(
        library=request.library,
        sha256=request.sha256,
        name=request.name,
        source_uri=request.source_uri,
        user_tags=list(request.user_tags),
        idempotency_key=request.idempotency_key,
    )


def item_update(request: pb.UpdateItemRequest) -> tuple[int, str | None, list[str], list[str]]:
    """(id, new name or None when not given, tags to add, tags to remove)."""
    name = request.name if request.HasField("name") else None
    return request.id, name, list(request.add_tags), list(request.remove_tags)


def auto_tags(tags: Sequence[pb.Tag]) -> list[tuple[str, float]]:
    return [(t.label, t.score) for t in tags]


def change_pb(change: ModelChange) -> pb.ModelChange:
    return pb.ModelChange(
        model_name=change.model_name,
        model_dim=change.model_dim,
        window_seconds=change.window_seconds,
        hop_seconds=change.hop_seconds,
    )


def model_change(change: pb.ModelChange) -> ModelChange:
    return ModelChange(
        model_name=change.model_name,
        model_dim=change.model_dim,
        window_seconds=change.window_seconds,
        hop_seconds=change.hop_seconds,
    )


def counts_pb(counts: LibraryCounts) -> pb.LibraryCounts:
    return pb.LibraryCounts(
        library=counts.library,
        ready_items=counts.ready,
        pending_items=counts.pending,
        total_duration_seconds=counts.duration_seconds,
    )


def state_pb(state: ItemState) -> pb.ItemStateEntry:
    return pb.ItemStateEntry(
        id=state.id,
        state=STATES[state.state],
        update_time=timestamp(state.updated_at),
        source_uri=state.source_uri,
        sha256=state.sha256,
    )


def pending_before(value: Timestamp) -> datetime:
    try:
        return value.ToDatetime()
    except ValueError as exc:  # outside years 1-9999
        raise InvalidArgument(f"only_if_pending_before: {exc}") from None
