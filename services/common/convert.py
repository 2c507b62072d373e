"""Protobuf helpers shared by servicers (no gRPC here)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp from a datetime (naive values are UTC)."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
