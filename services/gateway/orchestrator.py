"""Insert, search and delete across the embedder, the vector store and the
catalog. The insert is a small saga: reserve (PENDING) -> embed -> write
vectors -> mark READY. Each step is idempotent, so a retry after a crash
finishes the job, and search only ever shows READY items."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.common.limits import MAX_WINDOW_SECONDS
from services.common.text import quoted
from services.gateway import access, landmarks
from services.gateway.audio_store import AudioStore, Segment
from services.gateway.domain import (
    DELETING,
    PENDING,
    CatalogPort,
    EmbedderPort,
    Item,
    Library,
    ModelStatus,
    VectorPort,
    Window,
)
from services.gateway.reindex import Progress, Reindex
from services.gateway.repair import Action, Repair
from services.gateway.voting import items_per_query_window, vote

log = logging.getLogger(__name__)

# Landmark models: nearest segments per query window, and candidate items tested.
LANDMARK_HITS = 8
LANDMARK_CANDIDATES = 10


@dataclasses.dataclass(frozen=True)
class Settings:
    max_upload_bytes: int
    max_top_k: int
    auto_tags: int
    allowed_roots: tuple[str, ...]
    repair_stale_seconds: float = 900.0


@dataclasses.dataclass(frozen=True)
class Result:
    item: Item
    score: float
    evidence: float
    item_start: float
    item_end: float
    query_start: float
    query_end: float
    # Landmark models: item time = speed x query time + offset, frequencies x pitch (else 0).
    speed: float = 0.0
    pitch: float = 0.0


@dataclasses.dataclass(frozen=True)
class Ranking:
    results: list[Result]
    model: str
    min_evidence: float  # applied, else 0
    min_score: float = 0.0  # applied, else 0


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


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The caller's score threshold, or else the model's evidence threshold."""

    min_score: float
    min_evidence: float

    def passes(self, score: float, evidence: float) -> bool:
        return score >= self.min_score and evidence >= self.min_evidence


class Gateway:
    def __init__(
        self,
        embedder: EmbedderPort,
        vectors: VectorPort,
        catalog: CatalogPort,
        settings: Settings,
        audio: AudioStore | None = None,
    ) -> None:
        self.embedder, self.vectors, self.catalog, self.settings = embedder, vectors, catalog, settings
        self.audio = audio or AudioStore(None)

    # Libraries

    async def model_status(self, name: str) -> ModelStatus:
        models, default = await self.embedder.models()
        name = name or default
        status = next((m for m in models if m.name == name), None)
        if status is None:
            raise InvalidArgument(f"unknown model {quoted(name)}; available: {', '.join(m.name for m in models)}")
        return status

    async def create_library(
        self, name: str, model: str = "", description: str = "", window: float = 0.0, hop: float = 0.0
    ) -> Library:
        access.require(name, write=True)
        status = await self.model_status(model)
        if status.loading:
            raise Unavailable(
                f"model {status.name} is still loading (first start downloads its weights); retry shortly, "
                "or choose another model (e.g. fingerprint-v1)"
            )
        if not status.available:
            raise FailedPrecondition(f"model {status.name} is unavailable: {status.reason}")
        window = window or status.window
        hop = hop or min(status.hop, window)
        if not 0 < window <= MAX_WINDOW_SECONDS:
            raise InvalidArgument(f"window must be more than 0 and at most {MAX_WINDOW_SECONDS} s, got {window}")
        if not 0 < hop <= window:
            raise InvalidArgument(f"hop ({hop} s) must be positive and at most the window ({window} s)")
        library = await self.catalog.create_library(name, status.name, status.dim, description, window, hop)
        try:
            # The name was free in the catalog, so a collection under it is a
            # leftover of a delete that crashed half-way: start clean.
            await self.vectors.drop(name)
            await self.audio.drop(name)
            await self.vectors.create(name, status.name, status.dim, status.sparse)
        except BaseException:
            await self.catalog.delete_library(name)  # undo, so the name is free for a retry
            raise
        return library

    async def list_libraries(self) -> list[Library]:
        libraries = await self.catalog.list_libraries()
        visible = access.visible(lib.name for lib in libraries)
        return [lib for lib in libraries if lib.name in visible]

    async def list_items(self, library: str, page_size: int, page_token: str, tag: str) -> tuple[list[Item], str]:
        if library:
            access.require(library)
        else:
            access.require_admin("list the items of every library (set a library)")
        return await self.catalog.list_items(library, page_size, page_token, tag)

    async def delete_library(self, name: str) -> int:
        access.require(name, write=True)
        # Catalog first: from then on nothing of the library is visible, and
        # a crash before the drop leaves only a collection that repair (or
        # creating the name again) removes.
        deleted = await self.catalog.delete_library(name)
        await self.audio.drop(name)  # before the collection: repair finds a leftover collection, not files
        await self.vectors.drop(name)
        return deleted

    # Items

    async def insert(
        self,
        library: str,
        data: bytes,
        name: str,
        source_uri: str = "",
        tags: Sequence[str] = (),
        idempotency_key: str = "",
    ) -> tuple[Item, bool]:
        if not library:
            raise InvalidArgument("library must be set")
        access.require(library, write=True)
        if not data:
            raise InvalidArgument("the upload is empty: send the bytes of an audio file")
        if not name:
            raise InvalidArgument("name must be set (e.g. the file name)")
        lib = await self.catalog.get_library(library)
        sha256 = hashlib.sha256(data).hexdigest()
        item, created = await self.catalog.reserve_item(library, sha256, name, source_uri, tags, idempotency_key)
        if item.state == DELETING:
            # The same content is being deleted (or a delete crashed half-way):
            # finish that delete, then start afresh.
            await self.remove(item.library, item.id)
            item, created = await self.catalog.reserve_item(library, sha256, name, source_uri, tags, idempotency_key)
        if item.ready:
            return item, False
        # New, or left PENDING by an earlier attempt: (re)do the remaining steps.
        try:
            embedded = await self.embedder.embed(data, lib.model, self.settings.auto_tags, lib.window, lib.hop)
            if embedded.model != lib.model or embedded.dim != lib.dim:
                raise FailedPrecondition(f"embedder returned {embedded.model} vectors for a {lib.model} library")
            await self.audio.put(library, item.id, data)  # before READY: a ready item can be played
            # Acknowledged only once durable (the search service's promise),
            # so a READY item keeps its vectors through a crash of the store.
            await self.vectors.upsert(library, lib.model, lib.dim, item.id, embedded.windows)
        except ServiceError as exc:
            if created and isinstance(exc, (InvalidArgument, ResourceExhausted, FailedPrecondition)):
                await self._forget(library, item.id)
            raise
        try:
            item = await self.catalog.mark_ready(item.id, embedded)
        except (NotFound, FailedPrecondition):
            # Removed or being deleted meanwhile (repair took it for abandoned,
            # or a delete came): take the vectors back so nothing is orphaned;
            # a retry starts afresh.
            await self.vectors.delete(library, [item.id])
            await self.audio.delete(library, item.id)
            raise Unavailable(f"the insert of {quoted(name)} was interrupted by a delete; retry it") from None
        # Not in the library before this call (new, or left PENDING by an
        # attempt that failed): this call added it, as the client sees it.
        return item, True

    async def _forget(self, library: str, item_id: int) -> None:
        """Leaves no trace of an insert that failed for a reason a retry
        will not fix by itself (bad input, a full disk, a busy embedder).
        Only while still PENDING: a concurrent upload of the same content
        may have finished the item meanwhile, and that one stays. Best
        effort: what it cannot remove (the catalog's disk is full too),
        a retry resumes or repair removes once stale."""
        try:
            if await self.catalog.delete_item(item_id, only_if_state=PENDING):
                await self.audio.delete(library, item_id)
                await self.vectors.delete(library, [item_id])
        except ServiceError as exc:
            log.warning("could not clear the failed insert of item %d: %s", item_id, exc.message)

    async def insert_path(
        self, library: str, path: str, name: str = "", tags: Sequence[str] = (), idempotency_key: str = ""
    ) -> tuple[Item, bool]:
        if not library:
            raise InvalidArgument("library must be set")
        access.require(library, write=True)
        data = self.read_allowed_file(path)
        return await self.insert(library, data, name or Path(path).name, path, tags, idempotency_key)

    def read_allowed_file(self, path: str) -> bytes:
        file = self._allowed_file(path)
        size = file.stat().st_size
        if size > self.settings.max_upload_bytes:
            raise ResourceExhausted(f"{quoted(path)} is {size} bytes; the limit is {self.settings.max_upload_bytes}")
        return file.read_bytes()

    def _allowed_file(self, path: str) -> Path:
        if not self.settings.allowed_roots:
            raise PermissionDenied("inserting by server path is disabled; set AUDIOSEARCH_ALLOWED_ROOTS on the gateway")
        if not path or not os.path.isabs(path):
            raise InvalidArgument(f"path must be absolute, got {quoted(path)}")
        if "\x00" in path:
            raise InvalidArgument("path must not contain NUL characters")
        resolved = Path(os.path.realpath(path))  # follows symlinks: a link cannot escape a root
        roots = [Path(os.path.realpath(r)) for r in self.settings.allowed_roots]
        if not any(resolved == root or root in resolved.parents for root in roots):
            raise PermissionDenied(f"{quoted(path)} is outside the allowed roots ({', '.join(map(str, roots))})")
        try:
            is_file = resolved.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise InvalidArgument(f"unusable path {quoted(path)}: {exc.strerror}") from None
        if not is_file:
            raise NotFound(f"no file at {quoted(path)}")
        return resolved

    async def get(self, item_id: int) -> Item:
        item = await self.catalog.get_item(item_id)
        access.require_item(item_id, item.library)
        if not item.ready:
            raise NotFound(f"audio item {item_id} is not ready (still being inserted or deleted)")
        return item

    async def delete(self, item_id: int) -> None:
        item = await self.catalog.get_item(item_id)
        access.require_item(item_id, item.library, write=True)
        await self.catalog.mark_deleting(item_id)  # hidden from search from here on
        await self.remove(item.library, item.id)

    async def remove(self, library: str, item_id: int) -> None:
        """Vectors, audio, then the row (of an item already DELETING).
        Idempotent: a retry, a concurrent delete or repair may get here too."""
        await self.vectors.delete(library, [item_id])
        await self.audio.delete(library, item_id)
        await self.catalog.delete_item(item_id, only_if_state=DELETING)

    async def segment(self, item_id: int, start: float, end: float) -> tuple[Item, Segment]:
        """A stretch of a ready item's audio, as WAV, for playback."""
        item = await self.get(item_id)
        return item, await self.audio.segment(item.library, item.id, item.duration_seconds, start, end)

    # Search

    def _check_top_k(self, top_k: int) -> None:
        if not 1 <= top_k <= self.settings.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.settings.max_top_k}, got {top_k}")

    async def search(
        self,
        library: str,
        top_k: int,
        data: bytes = b"",
        item_id: int = 0,
        tags: Sequence[str] = (),
        min_score: float = 0.0,
    ) -> Ranking:
        self._check_top_k(top_k)
        if not math.isfinite(min_score):
            raise InvalidArgument(f"min_score must be a finite number, got {min_score}")
        exclude: list[int] = []
        if item_id:
            if data:
                raise InvalidArgument("give either an uploaded clip or item_id, not both")
            source = await self.get(item_id)
            if library and library != source.library:
                raise InvalidArgument(f"item {item_id} is in library {source.library!r}, not {quoted(library)}")
            library = source.library
            lib = await self.catalog.get_library(library)
            windows = await self.vectors.get(library, item_id)
            exclude = [item_id]
            duration = source.duration_seconds
            model = await self.model_status(lib.model)
            window, hop, min_evidence = lib.window or model.window, lib.hop or model.hop, model.min_evidence
            # Stored landmark segments stand for the original itself.
            windows = [dataclasses.replace(w, speed=1.0, pitch=1.0) for w in windows] if model.landmarks else windows
            decided_by_landmarks, min_confidence = model.landmarks, model.min_confidence
        else:
            if not library:
                raise InvalidArgument("library must be set")
            if not data:
                raise InvalidArgument("the query clip is empty: upload audio or set item_id")
            access.require(library)
            lib = await self.catalog.get_library(library)
            embedded = await self.embedder.embed(data, lib.model, 0, lib.window, lib.hop, query=True)
            windows, duration = embedded.windows, embedded.duration
            window, hop, min_evidence = embedded.window, embedded.hop, embedded.min_evidence
            decided_by_landmarks, min_confidence = embedded.landmarks, embedded.min_confidence
        if decided_by_landmarks:  # the model's confidence threshold is a score threshold
            min_score, min_evidence = min_score or min_confidence, 0.0
        if min_score:  # the caller's own score threshold replaces the model's (negative: keep everything)
            min_evidence = 0.0
        threshold = Threshold(min_score, min_evidence)
        applied = max(0.0, threshold.min_score)
        allowed: list[int] = []
        if tags:
            allowed = await self.catalog.find_item_ids(library, tags)
            if not allowed:
                return Ranking([], lib.model, threshold.min_evidence, applied)
        rank = self._rank_landmarks if decided_by_landmarks else self._rank
        return Ranking(
            await rank(lib, windows, duration, window, hop, top_k, allowed, exclude, threshold),
            lib.model,
            threshold.min_evidence,
            applied,
        )

    async def _rank(
        self,
        lib: Library,
        windows: Sequence[Window],
        duration: float,
        window: float,
        hop: float,
        top_k: int,
        allowed: Sequence[int],
        exclude: Sequence[int],
        threshold: Threshold,
    ) -> list[Result]:
        per_query = items_per_query_window(top_k)
        queries = [w.vector for w in windows]
        hits = await self.vectors.search(lib.name, lib.model, lib.dim, queries, per_query, allowed, exclude)
        matches = vote(hits, [w.offset for w in windows], window, hop, duration)
        ranked = sorted(matches.values(), key=lambda m: -m.score)
        ranked = [m for m in ranked if threshold.passes(m.score, m.evidence)]
        # Over-fetch a little: some candidates may be pending or deleting.
        candidates = ranked[: top_k * 2]
        items = await self._ready([m.item_id for m in candidates])
        results = []
        for m in candidates:
            item = items.get(m.item_id)
            if item is not None:
                end = min(m.item_end, item.duration_seconds) if item.duration_seconds else m.item_end
                results.append(Result(item, m.score, m.evidence, m.item_start, end, m.query_start, m.query_end))
        return results[:top_k]

    async def _ready(self, ids: Sequence[int]) -> dict[int, Item]:
        return {item.id: item for item in await self.catalog.get_ready_items(ids)}

    async def _rank_landmarks(
        self,
        lib: Library,
        windows: Sequence[Window],
        duration: float,
        window: float,
        hop: float,
        top_k: int,
        allowed: Sequence[int],
        exclude: Sequence[int],
        threshold: Threshold,
    ) -> list[Result]:
        """A landmark model's ranking (services/gateway/landmarks.py): the
        segments sharing most hashes with each query window name the
        candidates, their hit segments are fetched, and each candidate's
        best time-consistent line is tested against chance (with the
        query's decide-only landmarks too, which are not searched with)."""
        searched = [w for w in windows if not w.decide_only]
        # The nearest segments, not grouped by item: Milvus Lite's grouped
        # search took 0.22-0.39 s for a 5 s query where the plain one took
        # 0.09 s (1.03 h library), and the accuracy figures in
        # docs/fingerprint.md were measured with plain top-k segments.
        hits = await self.vectors.search(
            lib.name, lib.model, lib.dim, [w.vector for w in searched], LANDMARK_HITS, allowed, exclude, False
        )
        chosen = landmarks.candidates(
            [[(h.item_id, h.window, h.score) for h in per] for per in hits],
            [(w.speed, w.pitch) for w in searched],
            max(LANDMARK_CANDIDATES, top_k),
        )
        fetched = await self.vectors.get_many(lib.name, {i: c.windows for i, c in chosen.items()})
        items = {i: [(w.offset, w.vector) for w in got] for i, got in fetched.items()}
        counts = {c.library: c for c in await self.catalog.stats()}
        library_seconds = counts[lib.name].duration_seconds if lib.name in counts else 0.0
        query = [landmarks.QueryWindow(w.offset, w.vector, w.speed, w.pitch) for w in windows]  # type: ignore[arg-type]
        tested = {i: c.hypotheses for i, c in chosen.items()}
        decisions = landmarks.decide(query, items, duration, library_seconds, window, tested)
        passed = [d for d in decisions if d.confidence >= threshold.min_score]
        ready = await self._ready([d.item_id for d in passed[: top_k * 2]])
        results = []
        for d in passed:
            item = ready.get(d.item_id)
            if item is None:
                continue
            start = max(0.0, d.speed * d.query_start + d.offset)
            end = d.speed * d.query_end + d.offset
            if item.duration_seconds:
                end = min(end, item.duration_seconds)
            results.append(
                Result(item, d.confidence, d.landmarks, start, end, d.query_start, d.query_end, d.speed, d.pitch)
            )
        return results[:top_k]

    # Repair

    async def repair(self, stale_after: float = 0.0, dry_run: bool = False) -> list[Action]:
        access.require_admin("run repair")
        if stale_after < 0:
            raise InvalidArgument("stale_after_seconds must not be negative")
        return await Repair(self, stale_after or self.settings.repair_stale_seconds, dry_run).run()

    # Moving a library to another model

    def reindex(self, library: str, model: str, window: float = 0.0, hop: float = 0.0) -> AsyncIterator[Progress]:
        """Re-embeds a library with another model and switches it over, as
        a stream of progress (services/gateway/reindex.py)."""
        return Reindex(self, library, model, window, hop).run()

    # Stats

    async def stats(self) -> Stats:
        libraries = await self.list_libraries()
        counts = {c.library: c for c in await self.catalog.stats()}
        collections = {c.library: c for c in await self.vectors.stats()}
        models, default = await self.embedder.models()
        out = []
        for lib in libraries:
            c, v = counts.get(lib.name), collections.get(lib.name)
            out.append(
                LibraryStats(
                    lib,
                    c.ready if c else 0,
                    c.pending if c else 0,
                    c.duration_seconds if c else 0.0,
                    v.items if v else 0,
                    v.vectors if v else 0,
                )
            )
        return Stats(out, models, default)
