"""Sparse vectors, shared by every service that passes them along (no gRPC)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# A landmark model's sparse value is 1 + (seconds from the window's start) /
# POSITION_SCALE: about 1 (an inner product still counts shared hashes, off by
# at most 6% for a 60 s window) and, in float32, exact to 0.1 ms.
POSITION_SCALE = 1024.0

# A landmark model's hash keeps the time from the anchor to its partner in
# its low PAIR_TIME_BITS bits, in PAIR_TIME_STEP s steps of the original's
# time: where a match's evidence ends is its last partner, not its last anchor.
PAIR_TIME_BITS = 5
PAIR_TIME_STEP = 0.064


def pair_seconds(keys: np.ndarray) -> np.ndarray:
    """The anchor-to-partner time of landmark hashes (the middle of their step)."""
    return ((keys & ((1 << PAIR_TIME_BITS) - 1)) + 0.5) * PAIR_TIME_STEP


@dataclasses.dataclass(frozen=True)
class Sparse:
    """Non-zero entries of a sparse vector, indices ascending."""

    indices: np.ndarray  # uint32
    values: np.ndarray  # float32

    def as_dict(self) -> dict[int, float]:
        return {int(i): float(v) for i, v in zip(self.indices, self.values, strict=True)}

    @classmethod
    def from_dict(cls, entries: dict[int, float]) -> Sparse:
        keys = sorted(entries)
        return cls(np.asarray(keys, dtype=np.uint32), np.asarray([entries[k] for k in keys], dtype=np.float32))

    @classmethod
    def from_pb(cls, message: Any) -> Sparse:
        return cls(np.asarray(message.indices, dtype=np.uint32), np.asarray(message.values, dtype=np.float32))

    def to_pb(self, message_type: Any) -> Any:
        return message_type(indices=self.indices.tolist(), values=self.values.tolist())


Vector = np.ndarray | Sparse
