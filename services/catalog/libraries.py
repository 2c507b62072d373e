"""Libraries: creating, reading and deleting them, and moving one to
another model. Every write is one transaction."""

from __future__ import annotations

import math

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select, update

from services.catalog.records import LibraryRecord, ModelChange
from services.catalog.rules import MAX_DESCRIPTION, MAX_MODEL_NAME, TEXT_WHITESPACE, validate_library_name
from services.catalog.sessions import Store, now
from services.catalog.tables import AudioItem, ItemTag, Library
from services.common import reasons
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.text import check_text, quoted


def library_record(lib: Library) -> LibraryRecord:
    assert lib.id is not None
    return LibraryRecord(
        id=lib.id,
        name=lib.name,
        model_name=lib.model_name,
        model_dim=lib.model_dim,
        description=lib.description,
        created_at=lib.created_at,
        window_seconds=lib.window_seconds,
        hop_seconds=lib.hop_seconds,
    )


def pending_change(lib: Library) -> ModelChange | None:
    if lib.next_model_name is None:
        return None
    return ModelChange(
        model_name=lib.next_model_name,
        model_dim=lib.next_model_dim or 0,
        window_seconds=lib.next_window_seconds or 0.0,
        hop_seconds=lib.next_hop_seconds or 0.0,
    )


class Libraries(Store):
    def create_library(
        self,
        name: str,
        model_name: str,
        model_dim: int,
        description: str = "",
        window_seconds: float = 0.0,
        hop_seconds: float = 0.0,
    ) -> LibraryRecord:
        validate_library_name(name)
        if not model_name or len(model_name) > MAX_MODEL_NAME or model_dim <= 0:
            raise InvalidArgument(
                f"a library needs a model name of 1-{MAX_MODEL_NAME} characters and a positive dimension"
            )
        check_text("model name", model_name)
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument(
                f"description is longer than {MAX_DESCRIPTION} characters",
                reason=reasons.INVALID_FIELD,
                field="description",
            )
        check_text("description", description, allowed=TEXT_WHITESPACE, field="description")
        if window_seconds < 0 or hop_seconds < 0:
            raise InvalidArgument("window and hop must not be negative")
        with self._session() as session:
            lib = Library(
                name=name,
                model_name=model_name,
                model_dim=model_dim,
                description=description,
                created_at=now(),
                window_seconds=window_seconds,
                hop_seconds=hop_seconds,
            )
            session.add(lib)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise AlreadyExists(f"library {quoted(name)} already exists") from None
            return library_record(lib)

    def get_library(self, name: str) -> LibraryRecord:
        with self._session() as session:
            return library_record(self._library(session, name))

    def list_libraries(self) -> list[LibraryRecord]:
        with self._session() as session:
            return [library_record(lib) for lib in session.exec(select(Library).order_by(Library.name))]

    def delete_library(self, name: str) -> int:
        with self._session() as session:
            lib = self._library(session, name)
            items = session.exec(
                select(func.count()).select_from(AudioItem).where(AudioItem.library_id == lib.id)
            ).one()
            item_ids = select(AudioItem.id).where(AudioItem.library_id == lib.id)
            session.exec(delete(ItemTag).where(col(ItemTag.item_id).in_(item_ids)))  # type: ignore[call-overload]
            session.exec(delete(AudioItem).where(AudioItem.library_id == lib.id))  # type: ignore[call-overload]
            session.delete(lib)
            session.commit()
            return int(items)

    # Moving a library to another model

    def start_model_change(self, name: str, change: ModelChange) -> tuple[bool, ModelChange | None]:
        """Records that library `name` is moving to `change`; it keeps its
        model until `finish_model_change`. Returns (resumed: this very
        change was pending already, the other change it replaced)."""
        model = change.model_name
        if not model or len(model) > MAX_MODEL_NAME or change.model_dim <= 0:
            raise InvalidArgument(
                f"a model change needs a model name of 1-{MAX_MODEL_NAME} characters and a positive dimension"
            )
        check_text("model name", model)
        if not (
            math.isfinite(change.window_seconds)
            and math.isfinite(change.hop_seconds)
            and change.window_seconds >= 0
            and change.hop_seconds >= 0
        ):
            raise InvalidArgument("window and hop must be finite and not negative")
        with self._session() as session:
            lib = session.exec(select(Library).where(Library.name == name).with_for_update()).first()
            if lib is None:
                raise NotFound(f"library {quoted(name)} does not exist")
            if lib.model_name == model:
                raise FailedPrecondition(f"library {quoted(name)} already uses {model}", reason=reasons.REINDEX_REFUSED)
            pending = pending_change(lib)
            if change.same(pending):
                return True, None
            lib.next_model_name, lib.next_model_dim = model, change.model_dim
            lib.next_window_seconds, lib.next_hop_seconds = change.window_seconds, change.hop_seconds
            session.add(lib)
            session.commit()
            return False, pending

    def finish_model_change(self, name: str, model_name: str) -> LibraryRecord:
        """Switches library `name` to its pending change to `model_name`, in
        one UPDATE (atomic on every backend, whatever runs beside it). A
        library already switched to it is returned unchanged (a retry)."""
        with self._session() as session:
            lib_id = self._library(session, name).id
            # Listed in this order on purpose: MySQL evaluates the assignments
            # of an UPDATE left to right, each seeing the ones before it, so
            # the copies must come before the NULLs.
            switched = session.exec(
                update(Library)  # type: ignore[call-overload]
                .where(col(Library.id) == lib_id, col(Library.next_model_name) == model_name)
                .ordered_values(
                    (Library.model_name, Library.next_model_name),
                    (Library.model_dim, Library.next_model_dim),
                    (Library.window_seconds, Library.next_window_seconds),
                    (Library.hop_seconds, Library.next_hop_seconds),
                    (Library.next_model_name, None),
                    (Library.next_model_dim, None),
                    (Library.next_window_seconds, None),
                    (Library.next_hop_seconds, None),
                )
            ).rowcount
            session.commit()
            lib = self._library(session, name)
            session.refresh(lib)
            if not switched and not (lib.model_name == model_name and lib.next_model_name is None):
                pending = f"a change to {lib.next_model_name} is" if lib.next_model_name else "no change is"
                raise FailedPrecondition(
                    f"library {quoted(name)} is not moving to {quoted(model_name)}: {pending} pending",
                    reason=reasons.REINDEX_REFUSED,
                )
            return library_record(lib)

    def cancel_model_change(self, name: str) -> ModelChange | None:
        """Drops the pending change of library `name`; returns it (None: there was none)."""
        with self._session() as session:
            lib = session.exec(select(Library).where(Library.name == name).with_for_update()).first()
            if lib is None:
                raise NotFound(f"library {quoted(name)} does not exist")
            pending = pending_change(lib)
            if pending is not None:
                lib.next_model_name = lib.next_model_dim = None
                lib.next_window_seconds = lib.next_hop_seconds = None
                session.add(lib)
                session.commit()
            return pending
