"""A protobuf message as the JSON every client of ours prints: the HTTP
API and the CLI's --json alike (field names as in the proto, fields at
their default value included, 64-bit integers as strings as proto3's JSON
mapping says)."""

from __future__ import annotations

from typing import Any

from audiosearch.gateway.v1 import gateway_pb2 as pb
from google.protobuf import json_format
from google.protobuf.message import Message


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def monitor_event_dict(e: pb.MonitorEvent) -> dict[str, Any]:
    """A Monitor event as `audiosearch monitor --json` and the HTTP monitor
    routes give it (docs/monitoring.md): seconds as numbers, "started" and
    "match" (an ENDED occurrence) with the item and both ranges, and the
    "summary" last."""
    if e.kind == pb.MONITOR_EVENT_KIND_SUMMARY:
        return {"event": "summary", "scanned_seconds": round(e.scanned_seconds, 2), "occurrences": e.occurrences}
    return {
        "event": "started" if e.kind == pb.MONITOR_EVENT_KIND_STARTED else "match",
        "id": e.item.id,
        "name": e.item.name,
        "stream_start": round(e.stream_range.start_seconds, 2),
        "stream_end": round(e.stream_range.end_seconds, 2),
        "item_start": round(e.item_range.start_seconds, 2),
        "item_end": round(e.item_range.end_seconds, 2),
        "played_seconds": round(e.played_seconds, 2),
        "speed": round(e.speed, 4),
        "confidence": round(e.confidence, 6),
        "decided_at": round(e.decided_at_seconds, 2),
    }
