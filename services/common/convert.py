"""Protobuf helpers shared by servicers (no gRPC here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.vectors import Sparse, Vector


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp from a datetime (naive values are UTC)."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def vector_from_message(message: Any) -> Vector:
    """The vector a message carries: its `sparse` field when set, else its
    dense `vector` field (Window, WindowVector and QueryVector alike)."""
    if message.HasField("sparse"):
        return Sparse.from_pb(message.sparse)
    return np.asarray(message.vector, dtype=np.float32)


def vector_fields(vector: Vector, sparse_type: Any) -> dict[str, Any]:
    """Keyword arguments that put `vector` into such a message."""
    if isinstance(vector, Sparse):
        return {"sparse": vector.to_pb(sparse_type)}
    return {"vector": vector.tolist()}
