"""The catalog's records: plain Python types that its repository returns and
takes, free of SQL and protobuf."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime


@dataclasses.dataclass(frozen=True)
class LibraryRecord:
    id: int
    name: str
    model_name: str
    model_dim: int
    description: str
    created_at: datetime
    window_seconds: float = 0.0
    hop_seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelChange:
    """The model a library is moving to, and the window and hop its items
    are being re-embedded with."""

    model_name: str
    model_dim: int
    window_seconds: float
    hop_seconds: float

    def same(self, other: ModelChange | None) -> bool:
        """The same change (MySQL's FLOAT keeps the window and hop in single
        precision, so they compare with a tolerance)."""
        return (
            other is not None
            and (self.model_name, self.model_dim) == (other.model_name, other.model_dim)
            and math.isclose(self.window_seconds, other.window_seconds, rel_tol=1e-6, abs_tol=1e-6)
            and math.isclose(self.hop_seconds, other.hop_seconds, rel_tol=1e-6, abs_tol=1e-6)
        )


@dataclasses.dataclass(frozen=True)
class ItemRecord:
    id: int
    library: str
    name: str
    source_uri: str
    sha256: str
    duration_seconds: float
    sample_rate: int
    channels: int
    state: str
    created_at: datetime
    user_tags: list[str]
    auto_tags: list[tuple[str, float]]


@dataclasses.dataclass(frozen=True)
class NewItem:
    library: str
    sha256: str
    name: str
    source_uri: str = ""
    user_tags: Sequence[str] = ()
    idempotency_key: str = ""


@dataclasses.dataclass(frozen=True)
class ItemState:
    id: int
    state: str
    updated_at: datetime
    source_uri: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class LibraryCounts:
    library: str
    ready: int
    pending: int
    duration_seconds: float
