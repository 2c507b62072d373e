"""Audio items: reserving one for an insert, its state changes, reading and
listing them, deleting one. Every write is one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select, update

from services.catalog.paging import MAX_PAGE, decode_token, encode_token
from services.catalog.records import ItemRecord, NewItem
from services.catalog.rules import IDEMPOTENCY_KEY, MAX_SOURCE_URI, MAX_TAGS, SHA256, check_name, normalise_tag
from services.catalog.sessions import Store, now
from services.catalog.tables import DELETING, PENDING, READY, AudioItem, ItemTag, Library
from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.text import check_text, quoted


class Items(Store):
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
                # Once each: two concurrent updates on SQLite (no row locks) may both add a tag.
                user_tags=list(dict.fromkeys(t.label for t in tags.get(i.id or 0, []) if t.kind == "user")),
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
                        f"(item {keyed.id}); use a new key for a new upload",
                        reason=reasons.INVALID_FIELD,
                        field="idempotency_key",
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
        check_name(new.name)
        if len(new.source_uri) > MAX_SOURCE_URI:
            raise InvalidArgument(
                f"source_uri must be at most {MAX_SOURCE_URI} characters, got {len(new.source_uri)}",
                reason=reasons.INVALID_FIELD,
                field="source_uri",
            )
        check_text("source_uri", new.source_uri)
        if len(new.user_tags) > MAX_TAGS:
            raise InvalidArgument(
                f"at most {MAX_TAGS} tags per item, got {len(new.user_tags)}", reason=reasons.BAD_TAG, field="tags"
            )
        if new.idempotency_key and not IDEMPOTENCY_KEY.fullmatch(new.idempotency_key):
            raise InvalidArgument(
                "idempotency_key must be 1-128 printable ASCII characters without spaces",
                reason=reasons.INVALID_FIELD,
                field="idempotency_key",
            )
        tags = sorted({normalise_tag(t) for t in new.user_tags})
        with self._session() as session:
            lib = self._library(session, new.library)
            existing = self._existing(session, lib.id or 0, new)
            if existing is not None:
                if existing.state == PENDING:
                    existing.updated_at = now()
                    session.add(existing)
                    session.commit()
                return self._records(session, [existing])[0], False
            reserved_at = now()
            item = AudioItem(
                library_id=lib.id or 0,
                name=new.name,
                source_uri=new.source_uri,
                sha256=new.sha256,
                state=PENDING,
                created_at=reserved_at,
                updated_at=reserved_at,
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
                raise FailedPrecondition(f"audio item {item_id} is being deleted", reason=reasons.ITEM_BEING_DELETED)
            item.duration_seconds, item.sample_rate, item.channels = duration_seconds, sample_rate, channels
            session.exec(delete(ItemTag).where(ItemTag.item_id == item_id, ItemTag.kind == "auto"))  # type: ignore[call-overload]
            seen = set()
            for label, score in auto_tags:
                label = normalise_tag(label)
                if label not in seen:
                    seen.add(label)
                    session.add(ItemTag(item_id=item_id, label=label, kind="auto", score=float(score)))
            item.state, item.updated_at = READY, now()
            session.add(item)
            session.commit()
            return self._records(session, [item])[0]

    def _set_state(self, item_id: int, state: str) -> ItemRecord:
        with self._session() as session:
            item = self._item(session, item_id)
            if state == PENDING and item.state == DELETING:
                raise FailedPrecondition(f"audio item {item_id} is being deleted", reason=reasons.ITEM_BEING_DELETED)
            item.state, item.updated_at = state, now()
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
                .values(state=DELETING, updated_at=now())
            ).rowcount
            session.commit()
            if not marked:
                return None
            return self._records(session, [self._item(session, item_id)])[0]

    def mark_pending(self, item_id: int) -> ItemRecord:
        """READY -> PENDING, for an item whose vectors are gone: hidden from
        search until an insert of the same content completes it again."""
        return self._set_state(item_id, PENDING)

    def update_item(
        self, item_id: int, name: str | None = None, add_tags: Sequence[str] = (), remove_tags: Sequence[str] = ()
    ) -> ItemRecord:
        """Renames a READY item (`name` None: keeps it) and adds and removes
        user tags, in one transaction, under the rules of `reserve_item`.
        Automatic tags stay; adding a tag the item has or removing one it
        lacks changes nothing."""
        if name is not None:
            check_name(name)
        if len(add_tags) > MAX_TAGS or len(remove_tags) > MAX_TAGS:
            raise InvalidArgument(
                f"at most {MAX_TAGS} tags per item, got {max(len(add_tags), len(remove_tags))}",
                reason=reasons.BAD_TAG,
                field="add_tags" if len(add_tags) > MAX_TAGS else "remove_tags",
            )
        adding = {normalise_tag(t) for t in add_tags}
        removing = {normalise_tag(t) for t in remove_tags}
        both = adding & removing
        if both:
            raise InvalidArgument(
                f"tag {quoted(min(both))} is both added and removed",
                reason=reasons.CONFLICTING_FIELDS,
                field="remove_tags",
            )
        with self._session() as session:
            item = session.exec(select(AudioItem).where(AudioItem.id == item_id).with_for_update()).first()
            if item is None:
                raise NotFound(f"audio item {item_id} does not exist")
            if item.state != READY:
                what = "being deleted" if item.state == DELETING else "still being inserted"
                raise FailedPrecondition(f"audio item {item_id} is {what}; only a ready item can be changed")
            user = session.exec(select(ItemTag).where(ItemTag.item_id == item_id, ItemTag.kind == "user")).all()
            have = {t.label for t in user}
            if len((have - removing) | adding) > MAX_TAGS:
                raise InvalidArgument(
                    f"at most {MAX_TAGS} tags per item, the change would leave more",
                    reason=reasons.BAD_TAG,
                    field="add_tags",
                )
            for tag in user:
                if tag.label in removing:
                    session.delete(tag)
            session.add_all(ItemTag(item_id=item_id, label=t, kind="user", score=1.0) for t in sorted(adding - have))
            if name is not None:
                item.name = name
                session.add(item)
            session.commit()
            return self._records(session, [item])[0]

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
            raise InvalidArgument(
                f"page_size must be between 1 and {MAX_PAGE}", reason=reasons.INVALID_FIELD, field="page_size"
            )
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
            raise InvalidArgument(
                f"at most {MAX_TAGS} tags per search, got {len(tags)}", reason=reasons.BAD_TAG, field="tags"
            )
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
