"""The gateway's own view of libraries, items and vectors, the ports
(protocols) through which it reaches the other services and its kept
uploads, and `Backends`, the record of them every use case works over.
Adapters in `clients` implement the service ports over gRPC and
`audio_store.AudioStore` the audio port; nothing here knows about either."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from services.common.vectors import Vector


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str
    dim: int
    available: bool
    reason: str
    loading: bool = False
    window: float = 0.0
    hop: float = 0.0
    min_evidence: float = 0.0
    sparse: bool = False
    # A landmark fingerprint: decided by services/gateway/landmarks.py, below min_confidence is "no match".
    landmarks: bool = False
    min_confidence: float = 0.0
    # What the model finds and what its score means (the embedder's words).
    purpose: str = ""
    score_meaning: str = ""


@dataclasses.dataclass(frozen=True)
class Window:
    index: int
    offset: float
    vector: Vector
    # Landmark queries: the (speed, pitch) hypothesis the window stands for (else 0).
    speed: float = 0.0
    pitch: float = 0.0
    # Landmark queries: landmarks for the match decision only, not searched with.
    decide_only: bool = False


@dataclasses.dataclass(frozen=True)
class Embedded:
    model: str
    dim: int
    window: float
    hop: float
    min_evidence: float
    duration: float
    sample_rate: int
    channels: int
    sha256: str
    windows: list[Window]
    tags: list[tuple[str, float]]
    landmarks: bool = False
    min_confidence: float = 0.0


@dataclasses.dataclass(frozen=True)
class Library:
    name: str
    model: str
    dim: int
    description: str
    created_at: datetime
    # 0 for libraries created before windows were configurable: model defaults.
    window: float = 0.0
    hop: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelChange:
    """A library's move to another model: the model and the window and hop
    its items are re-embedded with."""

    model: str
    dim: int
    window: float
    hop: float


PENDING, READY, DELETING = "pending", "ready", "deleting"


@dataclasses.dataclass(frozen=True)
class Item:
    id: int
    library: str
    name: str
    source_uri: str
    sha256: str
    duration_seconds: float
    sample_rate: int
    channels: int
    user_tags: list[str]
    auto_tags: list[tuple[str, float]]
    created_at: datetime
    state: str  # PENDING, READY or DELETING

    @property
    def ready(self) -> bool:
        return self.state == READY


@dataclasses.dataclass(frozen=True)
class ItemState:
    id: int
    state: str  # PENDING, READY or DELETING
    updated_at: datetime  # naive UTC
    source_uri: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class Hit:
    item_id: int
    window: int
    offset: float
    score: float


@dataclasses.dataclass(frozen=True)
class CollectionStats:
    library: str
    vectors: int
    items: int


@dataclasses.dataclass(frozen=True)
class LibraryCounts:
    library: str
    ready: int
    pending: int
    duration_seconds: float


@dataclasses.dataclass(frozen=True)
class Segment:
    wav: bytes
    start: float
    end: float


class EmbedderPort(Protocol):
    async def models(self) -> tuple[list[ModelStatus], str]: ...
    async def embed(
        self,
        data: bytes,
        model: str,
        top_tags: int,
        window: float,
        hop: float,
        query: bool = False,
        single_framing: bool = False,  # a landmark query at one STFT framing (EmbedOptions.single_framing)
    ) -> Embedded: ...


class VectorPort(Protocol):
    async def create(self, library: str, model: str, dim: int, sparse: bool) -> None: ...
    async def drop(self, library: str) -> None: ...
    async def upsert(self, library: str, model: str, dim: int, item_id: int, windows: Sequence[Window]) -> None: ...
    async def get(self, library: str, item_id: int, windows: Sequence[int] = ()) -> list[Window]:
        """An item's windows (only `windows`, by index, when given), in order."""
        ...

    async def get_many(self, library: str, windows: dict[int, Sequence[int]]) -> dict[int, list[Window]]:
        """Chosen windows of several items in one read: item id -> its
        windows that exist, in order."""
        ...

    async def search(
        self,
        library: str,
        model: str,
        dim: int,
        queries: Sequence[Vector],
        top_k: int,
        item_ids: Sequence[int],
        exclude: Sequence[int],
        distinct_items: bool = True,
    ) -> list[list[Hit]]:
        """Per query, the best windows of each of the `top_k` nearest items
        (with `distinct_items` false: the `top_k` nearest windows, whichever
        items they belong to)."""
        ...

    async def delete(self, library: str, item_ids: Sequence[int]) -> None: ...
    async def stats(self) -> list[CollectionStats]: ...
    async def item_ids(self, library: str) -> set[int]: ...


class CatalogPort(Protocol):
    async def create_library(
        self, name: str, model: str, dim: int, description: str, window: float, hop: float
    ) -> Library: ...
    async def get_library(self, name: str) -> Library: ...
    async def list_libraries(self) -> list[Library]: ...
    async def delete_library(self, name: str) -> int: ...
    async def reserve_item(
        self, library: str, sha256: str, name: str, source_uri: str, tags: Sequence[str], idempotency_key: str = ""
    ) -> tuple[Item, bool]: ...
    async def mark_ready(self, item_id: int, embedded: Embedded) -> Item: ...
    async def mark_deleting(self, item_id: int, pending_before: datetime | None = None) -> bool:
        """-> DELETING; with `pending_before`, only a PENDING item untouched since then."""
        ...

    async def get_item(self, item_id: int) -> Item: ...
    async def update_item(
        self, item_id: int, name: str | None, add_tags: Sequence[str], remove_tags: Sequence[str]
    ) -> Item:
        """Renames a READY item (`name` None: keeps it) and adds and removes
        user tags; FailedPrecondition for an item not READY."""
        ...

    async def get_ready_items(self, ids: Sequence[int]) -> list[Item]: ...
    async def list_items(self, library: str, page_size: int, page_token: str, tag: str) -> tuple[list[Item], str]: ...
    async def find_item_ids(self, library: str, tags: Sequence[str]) -> list[int]: ...
    async def delete_item(self, item_id: int, only_if_state: str = "") -> bool: ...
    async def stats(self) -> list[LibraryCounts]: ...
    async def item_states(self, library: str) -> list[ItemState]: ...
    async def mark_pending(self, item_id: int) -> None: ...
    async def start_model_change(self, name: str, change: ModelChange) -> tuple[bool, ModelChange | None]:
        """Records that library `name` moves to `change` (it keeps its model
        meanwhile): (resumed: this change was pending already, the other
        change it replaced)."""
        ...

    async def finish_model_change(self, name: str, model: str) -> Library:
        """Switches the library to its pending change to `model`, in one step."""
        ...

    async def cancel_model_change(self, name: str) -> ModelChange | None:
        """Drops the library's pending change; returns it (None: none was pending)."""
        ...


class AudioPort(Protocol):
    """The kept uploads: written before an item's vectors, removed with them."""

    root: Path | None  # None: uploads are not kept

    async def put(self, library: str, item_id: int, data: bytes) -> None: ...
    async def read(self, library: str, item_id: int) -> bytes | None:
        """The kept upload, or None (not kept, or gone)."""
        ...

    async def delete(self, library: str, item_id: int) -> None: ...
    async def drop(self, library: str) -> None: ...
    async def segment(self, library: str, item_id: int, duration: float, start: float, end: float) -> Segment: ...


@dataclasses.dataclass(frozen=True)
class Backends:
    embedder: EmbedderPort
    vectors: VectorPort
    catalog: CatalogPort
    audio: AudioPort
