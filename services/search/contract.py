"""What the search service needs from a vector store, and the records it
passes. Milvus (`milvus.MilvusStore`) is one adapter behind this contract;
the exact in-memory store (`memory.MemoryStore`) is the reference both are
tested against (tests/test_store_contract.py).

A library's vectors live in one collection bound to a model (name,
dimension, dense or sparse). Wherever a library name goes, the key
"<library>@<model>" names that library's staging collection for the model
(see `naming`): a library moving to another model is written there while
its own collection keeps serving, and creating the library for the new
model adopts it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from services.common.vectors import Vector


@dataclasses.dataclass(frozen=True)
class WindowVector:
    item_id: int
    window: int
    offset: float
    vector: Vector


@dataclasses.dataclass(frozen=True)
class Hit:
    item_id: int
    window: int
    offset: float
    score: float


@dataclasses.dataclass(frozen=True)
class Stats:
    library: str
    model: str
    dim: int
    vectors: int
    items: int
    sparse: bool = False


@dataclasses.dataclass(frozen=True)
class Binding:
    """The model a collection holds vectors of."""

    model: str
    dim: int
    sparse: bool


class Store(Protocol):
    """A vector store of window vectors, one collection per library. Errors
    are domain errors (services.common.errors): NOT_FOUND for a library
    without a collection, FAILED_PRECONDITION for vectors of another model,
    INVALID_ARGUMENT for malformed ones, UNAVAILABLE or RESOURCE_EXHAUSTED
    when the store itself fails."""

    def open(self) -> int:
        """Makes every collection ready to serve; returns how many there are."""
        ...

    def check(self) -> None:
        """Raises unless the store answers now (the health probe)."""
        ...

    def close(self) -> None: ...

    def flush(self) -> None:
        """Seals what was written (a store without the notion does nothing)."""
        ...

    def create(self, library: str, model: str, dim: int, sparse: bool = False) -> bool:
        """The library's collection for `model`; False when it exists already."""
        ...

    def drop(self, library: str) -> bool:
        """Drops the library's collection (and its staging ones); False when there was none."""
        ...

    def upsert(self, library: str, model: str, dim: int, vectors: Sequence[WindowVector]) -> int:
        """Writes vectors, replacing those of the same (item, window); returns how many."""
        ...

    def get(self, library: str, item_id: int, windows: Sequence[int] = ()) -> list[WindowVector]:
        """An item's windows (only `windows`, by index, when given; missing ones left out), by window."""
        ...

    def get_many(self, library: str, windows: Sequence[tuple[int, Sequence[int]]]) -> list[WindowVector]:
        """Chosen windows of several items, by item as given, then by window; missing ones left out."""
        ...

    def search(
        self,
        library: str,
        model: str,
        dim: int,
        queries: Sequence[Vector],
        top_k: int,
        item_ids: Sequence[int] = (),
        exclude: Sequence[int] = (),
        hits_per_item: int = 0,
    ) -> list[list[Hit]]:
        """The `top_k` best windows by inner product for each query, best
        first: among `item_ids` when given, never of `exclude`, and with
        `hits_per_item` 1, only each item's best window."""
        ...

    def delete(self, library: str, item_ids: Sequence[int]) -> int:
        """Deletes the items' vectors (from the staging collections too); returns how many the library held."""
        ...

    def item_ids(self, library: str) -> list[int]:
        """Every item with at least one window in the library, ascending."""
        ...

    def stats(self, library: str = "") -> list[Stats]:
        """One library's sizes, or every library's (never staging collections)."""
        ...
