"""What the gateway holds: per visible library its items (from the
catalog) and its vectors (from the search service), and the models."""

from __future__ import annotations

import dataclasses

from services.gateway.libraries import list_libraries
from services.gateway.ports import Backends, Library, ModelStatus


@dataclasses.dataclass(frozen=True)
class LibraryStats:
    library: Library
    ready: int
    pending: int
    duration_seconds: float
    indexed_items: int
    vectors: int


@dataclasses.dataclass(frozen=True)
class Stats:
    libraries: list[LibraryStats]
    models: list[ModelStatus]
    default_model: str


async def stats(backends: Backends) -> Stats:
    libraries = await list_libraries(backends)
    counts = {c.library: c for c in await backends.catalog.stats()}
    collections = {c.library: c for c in await backends.vectors.stats()}
    models, default = await backends.embedder.models()
    out = []
    for lib in libraries:
        c, v = counts.get(lib.name), collections.get(lib.name)
        out.append(
            LibraryStats(
                library=lib,
                ready=c.ready if c else 0,
                pending=c.pending if c else 0,
                duration_seconds=c.duration_seconds if c else 0.0,
                indexed_items=v.items if v else 0,
                vectors=v.vectors if v else 0,
            )
        )
    return Stats(libraries=out, models=models, default_model=default)
