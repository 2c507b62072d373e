"""Counts and states over whole libraries: what repair walks and what the
stats and metrics report."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select

from services.catalog.records import ItemState, LibraryCounts
from services.catalog.sessions import Store
from services.catalog.tables import PENDING, READY, AudioItem, Library


class Counts(Store):
    def item_states(self, library: str) -> list[ItemState]:
        with self._session() as session:
            lib = self._library(session, library)
            rows = session.exec(
                select(
                    AudioItem.id,
                    AudioItem.state,
                    AudioItem.updated_at,
                    AudioItem.created_at,
                    AudioItem.source_uri,
                    AudioItem.sha256,
                )
                .where(AudioItem.library_id == lib.id)
                .order_by(col(AudioItem.id))
            ).all()
        return [
            ItemState(id=int(i), state=state, updated_at=updated or created, source_uri=uri, sha256=sha)
            for i, state, updated, created, uri, sha in rows
        ]

    def stats(self) -> list[LibraryCounts]:
        with self._session() as session:
            rows = session.exec(
                select(
                    Library.name, AudioItem.state, func.count(col(AudioItem.id)), func.sum(AudioItem.duration_seconds)
                )
                .select_from(Library)
                .join(AudioItem, col(AudioItem.library_id) == Library.id, isouter=True)
                .group_by(Library.name, AudioItem.state)
            ).all()
        counts: dict[str, list[float]] = {}
        for name, state, n, duration in rows:
            entry = counts.setdefault(name, [0, 0, 0.0])
            if state == READY:
                entry[0], entry[2] = n, float(duration or 0.0)
            elif state == PENDING:
                entry[1] = n
        return [
            LibraryCounts(library=name, ready=int(c[0]), pending=int(c[1]), duration_seconds=c[2])
            for name, c in sorted(counts.items())
        ]
