"""Search: a clip (or a stored item) in, ranked READY items out. Works out
the query's windows and which threshold applies, then hands over to
`ranking`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from services.common import reasons
from services.common.errors import InvalidArgument
from services.common.text import quoted
from services.gateway import access, items
from services.gateway.ports import Backends
from services.gateway.ranking import Query, Ranking, Threshold, rank, rank_landmarks
from services.gateway.steps import model_status

DEFAULT_TOP_K = 10  # what top_k 0 (unset) asks for


async def search(
    backends: Backends,
    max_top_k: int,
    library: str,
    top_k: int,
    data: bytes = b"",
    item_id: int = 0,
    tags: Sequence[str] = (),
    min_score: float = 0.0,
) -> Ranking:
    top_k = top_k or min(DEFAULT_TOP_K, max_top_k)
    if not 1 <= top_k <= max_top_k:
        raise InvalidArgument(
            f"top_k must be between 1 and {max_top_k} (0: the default, {DEFAULT_TOP_K}), got {top_k}",
            reason=reasons.TOP_K_OUT_OF_RANGE,
            field="top_k",
        )
    if not math.isfinite(min_score):
        raise InvalidArgument(
            f"min_score must be a finite number, got {min_score}", reason=reasons.INVALID_FIELD, field="min_score"
        )
    exclude: list[int] = []
    if item_id:
        if data:
            raise InvalidArgument(
                "give either an uploaded clip or item_id, not both", reason=reasons.CONFLICTING_FIELDS, field="item_id"
            )
        source = await items.get(backends, item_id)
        if library and library != source.library:
            raise InvalidArgument(
                f"item {item_id} is in library {source.library!r}, not {quoted(library)}",
                reason=reasons.ITEM_IN_OTHER_LIBRARY,
                field="library",
            )
        library = source.library
        lib = await backends.catalog.get_library(library)
        windows = await backends.vectors.get(library, item_id)
        exclude = [item_id]
        model = await model_status(backends, lib.model)
        min_evidence = model.min_evidence
        # Stored landmark segments stand for the original itself.
        windows = [dataclasses.replace(w, speed=1.0, pitch=1.0) for w in windows] if model.landmarks else windows
        query = Query(
            windows=windows,
            duration=source.duration_seconds,
            window=lib.window or model.window,
            hop=lib.hop or model.hop,
        )
        decided_by_landmarks, min_confidence = model.landmarks, model.min_confidence
    else:
        if not library:
            raise InvalidArgument("library must be set", reason=reasons.MISSING_FIELD, field="library")
        if not data:
            raise InvalidArgument(
                "the query clip is empty: upload audio or set item_id", reason=reasons.EMPTY_UPLOAD, field="chunk"
            )
        access.require(library)
        lib = await backends.catalog.get_library(library)
        embedded = await backends.embedder.embed(data, lib.model, 0, lib.window, lib.hop, query=True)
        query = Query(windows=embedded.windows, duration=embedded.duration, window=embedded.window, hop=embedded.hop)
        min_evidence = embedded.min_evidence
        decided_by_landmarks, min_confidence = embedded.landmarks, embedded.min_confidence
    if decided_by_landmarks:  # the model's confidence threshold is a score threshold
        min_score, min_evidence = min_score or min_confidence, 0.0
    if min_score:  # the caller's own score threshold replaces the model's (negative: keep everything)
        min_evidence = 0.0
    threshold = Threshold(min_score=min_score, min_evidence=min_evidence)
    applied = max(0.0, threshold.min_score)
    allowed: list[int] = []
    if tags:
        allowed = await backends.catalog.find_item_ids(library, tags)
        if not allowed:
            return Ranking(results=[], model=lib.model, min_evidence=threshold.min_evidence, min_score=applied)
    ranker = rank_landmarks if decided_by_landmarks else rank
    return Ranking(
        results=await ranker(backends, lib, query, top_k, allowed, exclude, threshold),
        model=lib.model,
        min_evidence=threshold.min_evidence,
        min_score=applied,
    )
