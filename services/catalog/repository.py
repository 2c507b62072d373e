"""Catalog operations on plain Python types. Every write is one transaction,
so a failure leaves nothing half-written."""

from __future__ import annotations

import base64
import dataclasses
import math
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, func
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Session, col, delete, select, update

from services.catalog.tables import DELETING, PENDING, READY, AudioItem, ItemTag, Library
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    disk_full,
)
from services.common.text import check_text, quoted

LIBRARY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
MAX_PAGE = 1000
MAX_TAGS = 64  # user tags per item
MAX_SOURCE_URI = 4096
MAX_ID = 2**63 - 1
MAX_NAME = 512  # item names
MAX_MODEL_NAME = 64
MAX_DESCRIPTION = 1024
TEXT_WHITESPACE = "\t\n\r"  # the controls a description may hold (and a tag, where they become spaces)


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


def validate_library_name(name: str) -> str:
    if not LIBRARY_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid library name {quoted(name)}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def normalise_tag(tag: str) -> str:
    # Checked before normalising: split() would quietly turn some controls
    # and separators (U+001F, U+2028) into spaces.
    check_text(f"tag {quoted(tag)}", tag, allowed=TEXT_WHITESPACE)
    tag = " ".join(tag.strip().lower().split())
    if not tag or len(tag) > 255:
        raise InvalidArgument(f"invalid tag {quoted(tag)}: 1-255 characters once spaces are trimmed")
    return tag


# Errors by which each backend says its disk (or a table's space) is full.
SQLITE_FULL = sqlite3.SQLITE_FULL  # "database or disk is full"
POSTGRES_DISK_FULL = "53100"  # SQLSTATE of psycopg.errors.DiskFull
MYSQL_DISK_FULL = {3, 1021, 1114}  # EE_WRITE (errno 28), ER_DISK_FULL, ER_RECORD_FILE_FULL ("table is full")
DISK_FULL_TEXT = ("database or disk is full", "disk full")  # SQLite's and MySQL's words; the OS's: disk_full


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's, or the driver's own) says the
    disk is full: retrying will not help until someone frees space."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL:
        return True
    if getattr(orig, "sqlstate", None) == POSTGRES_DISK_FULL:
        return True
    args = getattr(orig, "args", ())
    if args and type(args[0]) is int and args[0] in MYSQL_DISK_FULL:  # PyMySQL: (code, message)
        return True
    return disk_full(orig) or any(text in str(orig).lower() for text in DISK_FULL_TEXT)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC on every backend


def _library_record(lib: Library) -> LibraryRecord:
    assert lib.id is not None
    return LibraryRecord(
        lib.id,
        lib.name,
        lib.model_name,
        lib.model_dim,
        lib.description,
        lib.created_at,
        lib.window_seconds,
        lib.hop_seconds,
    )


def _pending_change(lib: Library) -> ModelChange | None:
    if lib.next_model_name is None:
        return None
    return ModelChange(
        lib.next_model_name, lib.next_model_dim or 0, lib.next_window_seconds or 0.0, lib.next_hop_seconds or 0.0
    )


def encode_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def decode_token(token: str) -> int:
    try:
        kind, value = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        after = int(value)
        if kind != "after" or not 0 <= after <= MAX_ID:
            raise ValueError(kind)
        return after
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("invalid page_token: pass back next_page_token from a previous response") from None


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except DBAPIError as exc:
            if is_disk_full(exc):  # PyMySQL raises some of these as InternalError
                raise ResourceExhausted("the catalog's disk is full: free space, then retry") from None
            if isinstance(exc, OperationalError):
                raise Unavailable(f"catalog database unavailable: {exc.orig}") from None
            raise

    # Libraries

    def _library(self, session: Session, name: str) -> Library:
        lib = session.exec(select(Library).where(Library.name == name)).first()
        if lib is None:
            raise NotFound(f"library {quoted(name)} does not exist")
        return lib

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
            raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION} characters")
        check_text("description", description, allowed=TEXT_WHITESPACE)
        if window_seconds < 0 or hop_seconds < 0:
            raise InvalidArgument("window and hop must not be negative")
        with self._session() as session:
            lib = Library(
                name=name,
                model_name=model_name,
                model_dim=model_dim,
                description=description,
                created_at=_now(),
                window_seconds=window_seconds,
                hop_seconds=hop_seconds,
            )
            session.add(lib)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise AlreadyExists(f"library {quoted(name)} already exists") from None
            return _library_record(lib)

    def get_library(self, name: str) -> LibraryRecord:
        with self._session() as session:
            return _library_record(self._library(session, name))

    def list_libraries(self) -> list[LibraryRecord]:
        with self._session() as session:
            return [_library_record(lib) for lib in session.exec(select(Library).order_by(Library.name))]

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
                raise FailedPrecondition(f"library {quoted(name)} already uses {model}")
            pending = _pending_change(lib)
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
                    f"library {quoted(name)} is not moving to {quoted(model_name)}: {pending} pending"
                )
            return _library_record(lib)

    def cancel_model_change(self, name: str) -> ModelChange | None:
        """Drops the pending change of library `name`; returns it (None: there was none)."""
        with self._session() as session:
            lib = session.exec(select(Library).where(Library.name == name).with_for_update()).first()
            if lib is None:
                raise NotFound(f"library {quoted(name)} does not exist")
            pending = _pending_change(lib)
            if pending is not None:
                lib.next_model_name = lib.next_model_dim = None
                lib.next_window_seconds = lib.next_hop_seconds = None
                session.add(lib)
                session.commit()
            return pending

    # Items

    def _records(self, session: Session, items: Sequence[AudioItem]) -> list[ItemRecord]:
        if not items:
            return []
        ids = [i.id for i in items]
        tags: dict[int, list[ItemTag]] = {}
        for tag in session.exec(select(ItemTag).where(col(ItemTag.item_id).in_(ids)).order_by(ItemTag.id)):
            tags.setdefault(tag.item_id, []).append(tag)
        lib_ids = {i.library_id for i in items}
        names = dict(session.exec(select(Library.id, Library.name).where(col(Library.id).in_(lib_ids))).all())
        return [
            ItemRecord(
                id=i.id or 0,
                library=names.get(i.library_id, ""),
                name=i.name,
                source_uri=i.source_uri,
                sha256=i.sha256,
                duration_seconds=i.duration_seconds,
                sample_rate=i.sample_rate,
                channels=i.channels,
                state=i.state,
                created_at=i.created_at,
                user_tags=[t.label for t in tags.get(i.id or 0, []) if t.kind == "user"],
                auto_tags=[(t.label, t.score) for t in tags.get(i.id or 0, []) if t.kind == "auto"],
            )
            for i in items
        ]

    def _item(self, session: Session, item_id: int) -> AudioItem:
        item = session.get(AudioItem, item_id)
        if item is None:
            raise NotFound(f"audio item {item_id} does not exist")
        return item

    def _existing(self, session: Session, library_id: int, new: NewItem) -> AudioItem | None:
        """The item a retry of `new` must return: same client key, or same content."""
        if new.idempotency_key:
            keyed = session.exec(
                select(AudioItem).where(
                    AudioItem.library_id == library_id, AudioItem.idempotency_key == new.idempotency_key
                )
            ).first()
            if keyed is not None:
                if keyed.sha256 != new.sha256:
                    raise InvalidArgument(
                        f"idempotency key {quoted(new.idempotency_key)} was already used for different content "
                        f"(item {keyed.id}); use a new key for a new upload"
                    )
                return keyed
        return session.exec(
            select(AudioItem).where(AudioItem.library_id == library_id, AudioItem.sha256 == new.sha256)
        ).first()

    def reserve_item(self, new: NewItem) -> tuple[ItemRecord, bool]:
        """A PENDING item for (library, sha256) or the client's key, or the
        existing one. Reserving an existing PENDING item again (a retry)
        marks it as recently touched, so repair leaves it alone."""
        if not SHA256.match(new.sha256):
            raise InvalidArgument("sha256 must be 64 lower-case hex characters")
        if not new.name or len(new.name) > MAX_NAME:
            raise InvalidArgument(f"item name must be 1-{MAX_NAME} characters, got {len(new.name)}")
        check_text("item name", new.name)
        if len(new.source_uri) > MAX_SOURCE_URI:
            raise InvalidArgument(f"source_uri must be at most {MAX_SOURCE_URI} characters, got {len(new.source_uri)}")
        check_text("source_uri", new.source_uri)
        if len(new.user_tags) > MAX_TAGS:
            raise InvalidArgument(f"at most {MAX_TAGS} tags per item, got {len(new.user_tags)}")
        if new.idempotency_key and not IDEMPOTENCY_KEY.fullmatch(new.idempotency_key):
            raise InvalidArgument("idempotency_key must be 1-128 printable ASCII characters without spaces")
        tags = sorted({normalise_tag(t) for t in new.user_tags})
        with self._session() as session:
            lib = self._library(session, new.library)
            existing = self._existing(session, lib.id or 0, new)
            if existing is not None:
                if existing.state == PENDING:
                    existing.updated_at = _now()
                    session.add(existing)
                    session.commit()
                return self._records(session, [existing])[0], False
            now = _now()
            item = AudioItem(
                library_id=lib.id or 0,
                name=new.name,
                source_uri=new.source_uri,
                sha256=new.sha256,
                state=PENDING,
                created_at=now,
                updated_at=now,
                idempotency_key=new.idempotency_key or None,
            )
            session.add(item)
            try:
                session.flush()
                session.add_all(ItemTag(item_id=item.id or 0, label=t, kind="user", score=1.0) for t in tags)
                session.commit()
            except IntegrityError:
                # A concurrent insert of the same content or key won the race.
                session.rollback()
                existing = self._existing(session, lib.id or 0, new)
                if existing is None:
                    raise Unavailable("a concurrent insert of the same item conflicted; retry") from None
                return self._records(session, [existing])[0], False
            return self._records(session, [item])[0], True

    def mark_ready(
        self,
        item_id: int,
        auto_tags: Sequence[tuple[str, float]] = (),
        duration_seconds: float = 0.0,
        sample_rate: int = 0,
        channels: int = 0,
    ) -> ItemRecord:
        """PENDING -> READY, with what decoding learned about the audio."""
        with self._session() as session:
            item = self._item(session, item_id)
            if item.state == DELETING:
                raise FailedPrecondition(f"audio item {item_id} is being deleted")
            item.duration_seconds, item.sample_rate, item.channels = duration_seconds, sample_rate, channels
            session.exec(delete(ItemTag).where(ItemTag.item_id == item_id, ItemTag.kind == "auto"))  # type: ignore[call-overload]
            seen = set()
            for label, score in auto_tags:
                label = normalise_tag(label)
                if label not in seen:
                    seen.add(label)
                    session.add(ItemTag(item_id=item_id, label=label, kind="auto", score=float(score)))
            item.state, item.updated_at = READY, _now()
            session.add(item)
            session.commit()
            return self._records(session, [item])[0]

    def _set_state(self, item_id: int, state: str) -> ItemRecord:
        with self._session() as session:
            item = self._item(session, item_id)
            if state == PENDING and item.state == DELETING:
                raise FailedPrecondition(f"audio item {item_id} is being deleted")
            item.state, item.updated_at = state, _now()
            session.add(item)
            session.commit()
            return self._records(session, [item])[0]

    def mark_deleting(self, item_id: int, pending_before: datetime | None = None) -> ItemRecord | None:
        """-> DELETING. With `pending_before`, only a PENDING item untouched
        since then (an abandoned insert), in one atomic update; None when
        the item did not qualify (a retry resumed it meanwhile)."""
        if pending_before is None:
            return self._set_state(item_id, DELETING)
        with self._session() as session:
            marked = session.exec(
                update(AudioItem)  # type: ignore[call-overload]
                .where(
                    col(AudioItem.id) == item_id,
                    col(AudioItem.state) == PENDING,
                    col(AudioItem.updated_at) < pending_before,
                )
                .values(state=DELETING, updated_at=_now())
            ).rowcount
            session.commit()
            if not marked:
                return None
            return self._records(session, [self._item(session, item_id)])[0]

    def mark_pending(self, item_id: int) -> ItemRecord:
        """READY -> PENDING, for an item whose vectors are gone: hidden from
        search until an insert of the same content completes it again."""
        return self._set_state(item_id, PENDING)

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
        return [ItemState(int(i), state, updated or created, uri, sha) for i, state, updated, created, uri, sha in rows]

    def get_item(self, item_id: int) -> ItemRecord:
        with self._session() as session:
            return self._records(session, [self._item(session, item_id)])[0]

    def get_items(self, ids: Sequence[int], state: str = "") -> list[ItemRecord]:
        if not ids:
            return []
        with self._session() as session:
            query = select(AudioItem).where(col(AudioItem.id).in_(list(ids)))
            if state:
                query = query.where(AudioItem.state == state)
            by_id = {r.id: r for r in self._records(session, session.exec(query).all())}
            return [by_id[i] for i in ids if i in by_id]

    def list_items(
        self, library: str = "", page_size: int = 0, page_token: str = "", tag: str = ""
    ) -> tuple[list[ItemRecord], str]:
        page_size = page_size or 100
        if not 1 <= page_size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}")
        after = decode_token(page_token) if page_token else 0
        with self._session() as session:
            query = select(AudioItem).where(AudioItem.state == READY, col(AudioItem.id) > after)
            if library:
                query = query.where(AudioItem.library_id == self._library(session, library).id)
            if tag:
                tagged = select(ItemTag.item_id).where(ItemTag.label == normalise_tag(tag))
                query = query.where(col(AudioItem.id).in_(tagged))
            items = session.exec(query.order_by(col(AudioItem.id)).limit(page_size + 1)).all()
            more = len(items) > page_size
            items = items[:page_size]
            token = encode_token(items[-1].id or 0) if more else ""
            return self._records(session, items), token

    def find_item_ids(self, library: str, tags: Sequence[str]) -> list[int]:
        if len(tags) > MAX_TAGS:  # each is an SQL parameter: backends cap their number
            raise InvalidArgument(f"at most {MAX_TAGS} tags per search, got {len(tags)}")
        labels = sorted({normalise_tag(t) for t in tags})
        with self._session() as session:
            lib = self._library(session, library)
            tagged = select(ItemTag.item_id).where(col(ItemTag.label).in_(labels))
            query = select(AudioItem.id).where(
                AudioItem.library_id == lib.id, AudioItem.state == READY, col(AudioItem.id).in_(tagged)
            )
            return [int(i) for i in session.exec(query.order_by(col(AudioItem.id))).all()]

    def delete_item(self, item_id: int, only_if_state: str = "") -> bool:
        """Deletes an item and its tags; with `only_if_state`, only while the
        item is in that state (the row is locked for the check), else False."""
        with self._session() as session:
            query = select(AudioItem).where(AudioItem.id == item_id)
            if only_if_state:
                query = query.where(AudioItem.state == only_if_state).with_for_update()
            item = session.exec(query).first()
            if item is None:
                if only_if_state:
                    return False
                raise NotFound(f"audio item {item_id} does not exist")
            session.exec(delete(ItemTag).where(ItemTag.item_id == item_id))  # type: ignore[call-overload]
            session.delete(item)
            session.commit()
            return True

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
        return [LibraryCounts(name, int(c[0]), int(c[1]), c[2]) for name, c in sorted(counts.items())]
