"""The catalog on SQLite, PostgreSQL and MariaDB. The server backends run
when AUDIOSEARCH_TEST_POSTGRES_URL / AUDIOSEARCH_TEST_MYSQL_URL are set
(.ci/run sets them); each test gets a fresh database of its own."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from services.catalog import tables
from services.catalog.database import make_engine, migrate
from services.catalog.records import NewItem
from services.catalog.repository import Catalog
from services.catalog.sessions import is_disk_full
from services.catalog.tables import DELETING, PENDING, READY
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

SERVERS = {"postgresql": "AUDIOSEARCH_TEST_POSTGRES_URL", "mysql": "AUDIOSEARCH_TEST_MYSQL_URL"}


def _fresh_database(kind: str) -> Iterator[str]:
    url = os.environ.get(SERVERS[kind])
    if not url:
        if os.environ.get("CI"):  # .ci/run sets both: CI must not quietly drop a backend
            pytest.fail(f"{SERVERS[kind]} is not set")
        pytest.skip(f"{SERVERS[kind]} is not set")
    name = f"audiosearch_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_url(request, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        yield from _fresh_database(request.param)


@pytest.fixture
def catalog(database_url: str) -> Iterator[Catalog]:
    engine = make_engine(database_url)
    migrate(engine)
    yield Catalog(engine)
    engine.dispose()


def sha(n: int) -> str:
    return f"{n:064x}"


def test_migrations_match_the_models_and_rerun_cleanly(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # already at head: a no-op
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    # Index/constraint naming differences are not schema drift; columns and tables are.
    real = [d for d in diffs if d[0] in ("add_table", "remove_table", "add_column", "remove_column")]
    assert real == [], real
    assert version == "0004"
    assert {"library", "audio_item", "item_tag"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_upgrade_keeps_existing_data(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:  # a library written by the 0001 schema
        conn.execute(
            text(
                "INSERT INTO library (name, model_name, model_dim, description, created_at) "
                "VALUES ('kept', 'spectral-v1', 192, '', '2026-01-01 00:00:00')"
            )
        )
    migrate(engine)
    kept = Catalog(engine).get_library("kept")
    assert (kept.model_dim, kept.window_seconds, kept.hop_seconds) == (192, 0.0, 0.0)
    Catalog(engine).create_library("new", "fingerprint-v1", 2048, window_seconds=3.0, hop_seconds=1.0)
    assert Catalog(engine).get_library("new").window_seconds == 3.0
    engine.dispose()


def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    """Catalog replicas of a rollout migrate at the same moment: the lock
    lets one build the schema, the others find it done."""
    engines = [make_engine(database_url) for _ in range(3)]
    errors: list[BaseException] = []

    def run(engine) -> None:  # type: ignore[no-untyped-def]
        try:
            migrate(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0004"]
    Catalog(engines[1]).create_library("after", "spectral-v1", 192)
    for engine in engines:
        engine.dispose()


def test_libraries(catalog: Catalog) -> None:
    lib = catalog.create_library("sfx", "spectral-v1", 192, "effects")
    assert (lib.name, lib.model_name, lib.model_dim, lib.description) == ("sfx", "spectral-v1", 192, "effects")
    with pytest.raises(AlreadyExists):
        catalog.create_library("sfx", "spectral-v1", 192)
    for bad in ("", "UPPER", "with space", "-dash", "x" * 65, "semi;colon"):
        with pytest.raises(InvalidArgument):
            catalog.create_library(bad, "spectral-v1", 192)
    catalog.create_library("amb", "panns-cnn14", 2048)
    assert [lib.name for lib in catalog.list_libraries()] == ["amb", "sfx"]
    with pytest.raises(NotFound):
        catalog.get_library("nope")


def test_reserve_dedups_by_library_and_content(catalog: Catalog) -> None:
    catalog.create_library("a", "m", 4)
    catalog.create_library("b", "m", 4)
    item, created = catalog.reserve_item(
        NewItem("a", sha(1), "one.wav", "/x/one.wav", ["Drums", "drums", " Loud  Kick "])
    )
    assert created and item.state == "pending" and item.user_tags == ["drums", "loud kick"]
    again, created = catalog.reserve_item(NewItem("a", sha(1), "renamed.wav"))
    assert not created and again.id == item.id and again.name == "one.wav"
    other, created = catalog.reserve_item(NewItem("b", sha(1), "one.wav"))
    assert created and other.id != item.id  # the same content may live in another library
    with pytest.raises(NotFound):
        catalog.reserve_item(NewItem("zzz", sha(2), "x.wav"))
    with pytest.raises(InvalidArgument):
        catalog.reserve_item(NewItem("a", "not-a-hash", "x.wav"))


def test_ready_listing_tags_and_pagination(catalog: Catalog) -> None:
    catalog.create_library("lib", "m", 4)
    ids = []
    for n in range(7):
        item, _ = catalog.reserve_item(NewItem("lib", sha(n), f"s{n}.wav", user_tags=["even" if n % 2 == 0 else "odd"]))
        ids.append(item.id)
    for n, item_id in enumerate(ids[:6]):  # the last stays pending
        ready = catalog.mark_ready(item_id, [("Music", 0.9), ("Drum", 0.4)], 1.5 + n, 44100, 2)
        assert ready.state == "ready" and ready.auto_tags == [
            ("music", pytest.approx(0.9)),
            ("drum", pytest.approx(0.4)),
        ]
        assert (ready.duration_seconds, ready.sample_rate, ready.channels) == (1.5 + n, 44100, 2)
    pages, token = [], ""
    while True:
        items, token = catalog.list_items("lib", page_size=4, page_token=token)
        pages.append([i.id for i in items])
        if not token:
            break
    assert pages == [ids[:4], ids[4:6]]  # pending items are not listed
    assert [i.id for i in catalog.list_items(tag="even")[0]] == [ids[0], ids[2], ids[4]]
    assert catalog.find_item_ids("lib", ["odd", "music"]) == ids[:6]
    assert catalog.find_item_ids("lib", ["odd"]) == [ids[1], ids[3], ids[5]]
    assert [i.id for i in catalog.get_items([ids[6], ids[2], 999], state="ready")] == [ids[2]]
    assert [i.id for i in catalog.get_items([ids[6], ids[2]])] == [ids[6], ids[2]]
    with pytest.raises(InvalidArgument):
        catalog.list_items(page_token="garbage!")
    with pytest.raises(InvalidArgument):
        catalog.list_items(page_size=5000)
    (counts,) = catalog.stats()
    assert (counts.library, counts.ready, counts.pending) == ("lib", 6, 1)
    assert counts.duration_seconds == pytest.approx(sum(1.5 + n for n in range(6)))


def test_delete_item_and_library(catalog: Catalog) -> None:
    catalog.create_library("lib", "m", 4)
    first, _ = catalog.reserve_item(NewItem("lib", sha(1), "a.wav", user_tags=["t"]))
    second, _ = catalog.reserve_item(NewItem("lib", sha(2), "b.wav", user_tags=["t"]))
    catalog.mark_ready(first.id, [("x", 0.5)])
    catalog.mark_deleting(first.id)
    with pytest.raises(FailedPrecondition):
        catalog.mark_ready(first.id)
    assert catalog.find_item_ids("lib", ["t"]) == []  # deleting and pending items are not searchable
    catalog.delete_item(first.id)
    with pytest.raises(NotFound):
        catalog.get_item(first.id)
    assert catalog.delete_library("lib") == 1
    with pytest.raises(NotFound):
        catalog.get_item(second.id)
    with pytest.raises(NotFound):
        catalog.delete_library("lib")
    assert catalog.stats() == []
    with catalog.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM item_tag")).scalar() == 0


def test_conditional_transitions_for_concurrent_writers(catalog: Catalog) -> None:
    """The guards that keep concurrent inserts, deletes and repair from
    undoing each other: a delete only of a row still in the expected state,
    and "abandoned" only for a PENDING row nobody touched since the cutoff."""
    catalog.create_library("lib", "m", 4)
    item, _ = catalog.reserve_item(NewItem("lib", sha(1), "a.wav"))
    catalog.mark_ready(item.id)
    assert catalog.delete_item(item.id, only_if_state=PENDING) is False  # finished by someone else: kept
    assert catalog.get_item(item.id).state == READY

    pending, _ = catalog.reserve_item(NewItem("lib", sha(2), "b.wav"))
    past = pending.created_at - timedelta(seconds=1)
    assert catalog.mark_deleting(pending.id, pending_before=past) is None  # touched after the cutoff
    assert catalog.mark_deleting(item.id, pending_before=datetime.now(UTC).replace(tzinfo=None)) is None  # READY
    marked = catalog.mark_deleting(pending.id, pending_before=datetime.now(UTC).replace(tzinfo=None) + timedelta(1))
    assert marked is not None and marked.state == DELETING
    assert catalog.delete_item(pending.id, only_if_state=PENDING) is False
    assert catalog.delete_item(pending.id, only_if_state=DELETING) is True
    with pytest.raises(NotFound):
        catalog.get_item(pending.id)
    # A retry of an abandoned insert touches it, which keeps repair off it.
    again, _ = catalog.reserve_item(NewItem("lib", sha(3), "c.wav"))
    touched, created = catalog.reserve_item(NewItem("lib", sha(3), "c.wav"))
    assert not created and touched.id == again.id
    states = {s.id: s for s in catalog.item_states("lib")}
    assert states[again.id].state == PENDING and states[item.id].state == READY


def test_timestamps_are_utc(catalog: Catalog) -> None:
    from datetime import UTC, datetime

    lib = catalog.create_library("t", "m", 4)
    assert abs((datetime.now(UTC).replace(tzinfo=None) - lib.created_at).total_seconds()) < 60


async def test_catalog_grpc_service_maps_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from audiosearch.catalog.v1 import catalog_pb2 as pb
    from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc

    from services.catalog import __main__ as catalog_main
    from services.catalog.config import CatalogConfig
    from services.common import config as cfg
    from services.common import server

    config = cfg.load(CatalogConfig, environ={}, data_dir=tmp_path, listen="127.0.0.1:0")
    running = await server.start(await catalog_main.build(config), config)
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            stub = pb_grpc.CatalogServiceStub(channel)
            lib = (await stub.CreateLibrary(pb.CreateLibraryRequest(name="x", model_name="m", model_dim=3))).library
            assert lib.name == "x" and lib.create_time.seconds > 0
            for call, code in [
                (stub.GetLibrary(pb.GetLibraryRequest(name="nope")), grpc.StatusCode.NOT_FOUND),
                (
                    stub.CreateLibrary(pb.CreateLibraryRequest(name="x", model_name="m", model_dim=3)),
                    grpc.StatusCode.ALREADY_EXISTS,
                ),
                (stub.GetItem(pb.GetItemRequest(id=5)), grpc.StatusCode.NOT_FOUND),
                (stub.ListItems(pb.ListItemsRequest(page_token="@@")), grpc.StatusCode.INVALID_ARGUMENT),
                (  # a time past year 9999
                    stub.MarkItemDeleting(
                        pb.MarkItemDeletingRequest(id=1, only_if_pending_before=Timestamp(seconds=2**40))
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                assert info.value.code() == code
            reserved = await stub.ReserveItem(pb.ReserveItemRequest(library="x", sha256=sha(9), name="a.wav"))
            assert reserved.created and reserved.item.state == pb.ITEM_STATE_PENDING
    finally:
        await running.stop()
    assert tables.READY == "ready"


# --------------------------------------------------------------------------
# Hostile text: refused with the character named, never echoed whole


def test_stored_text_refuses_format_characters(catalog: Catalog) -> None:
    catalog.create_library("lib", "m", 4)
    rlo = "\u202e"  # "song\u202e3pm.exe" shows as "songexe.mp3"
    refused = [
        (lambda: catalog.reserve_item(NewItem("lib", sha(1), f"song{rlo}3pm.exe")), "item name holds U+202E"),
        (lambda: catalog.reserve_item(NewItem("lib", sha(1), "a.wav", f"file:///a{rlo}.wav")), "source_uri holds"),
        (lambda: catalog.reserve_item(NewItem("lib", sha(1), "a.wav", user_tags=["ok", "a\u2069"])), "U+2069"),
        (lambda: catalog.create_library("d", "m", 4, description="x\u2060y"), "description holds U+2060"),
        (lambda: catalog.create_library("e", "m\u200e", 4), "model name holds U+200E"),
        (lambda: catalog.list_items(tag="\u2029"), "U+2029"),
        (lambda: catalog.find_item_ids("lib", ["\x1f"]), "U+001F"),  # split() used to make it a space
    ]
    for call, message in refused:
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            call()
    assert catalog.item_states("lib") == [] and [lib.name for lib in catalog.list_libraries()] == ["lib"]


def test_ordinary_unicode_is_stored_verbatim(catalog: Catalog) -> None:
    """Scripts, accents and emoji (4-byte UTF-8: MySQL's utf8mb4) are not
    format characters: every backend stores and returns them as sent."""
    # Persian and emoji sequences are spelled with zero-width (non-)joiners.
    names = [
        "café — naïve.wav",
        "日本語の音.flac",
        "صوت المطر.ogg",
        "🎵 drum loop.mp3",
        "می\u200cخواهم.wav",  # noqa: RUF001 - Persian letters, not look-alikes
        "👩\u200d🎤.wav",
    ]
    catalog.create_library("lib", "m", 4, description="tabs\tand\nnewlines stay; so does ünïcödé 🎧")
    assert catalog.get_library("lib").description == "tabs\tand\nnewlines stay; so does ünïcödé 🎧"
    for n, name in enumerate(names):
        item, _ = catalog.reserve_item(NewItem("lib", sha(n), name, f"upload:{name}", [name.split(".")[0]]))
        stored = catalog.get_item(item.id)
        assert (stored.name, stored.source_uri, stored.user_tags) == (name, f"upload:{name}", [name.split(".")[0]])


def test_messages_quote_a_bounded_prefix(catalog: Catalog) -> None:
    for call in (
        lambda: catalog.create_library("n" * 10_000, "m", 4),
        lambda: catalog.get_library("n" * 10_000),
        lambda: catalog.list_items(tag="t" * 10_000),
        lambda: catalog.reserve_item(NewItem("nope" * 2500, sha(1), "a.wav")),
    ):
        with pytest.raises((InvalidArgument, NotFound)) as info:
            call()
        assert "(10000 characters)" in info.value.message and len(info.value.message) < 300


# --------------------------------------------------------------------------
# A full disk: RESOURCE_EXHAUSTED (free space, then retry), not UNAVAILABLE


def test_disk_full_errors_of_every_backend_are_recognised() -> None:
    import sqlite3

    import psycopg
    import pymysql

    full = [
        sqlite3.OperationalError("database or disk is full"),
        psycopg.errors.DiskFull("could not extend file: No space left on device"),
        pymysql.err.OperationalError(1114, "The table 'audio_item' is full"),
        pymysql.err.OperationalError(1021, "Disk full (/tmp/#sql_1.MAI); waiting for someone to free some space..."),
        pymysql.err.InternalError(3, "Error writing file './test/audio_item.ibd' (Errcode: 28 \"No space left\")"),
    ]
    other = [
        sqlite3.OperationalError("database is locked"),
        psycopg.OperationalError("connection to server at 127.0.0.1 failed: Connection refused"),
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
        pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"),
    ]
    for orig in full:
        assert is_disk_full(OperationalError("INSERT ...", {}, orig)), orig
    for orig in other:
        assert not is_disk_full(OperationalError("INSERT ...", {}, orig)), orig


def _fill(catalog: Catalog, start: int) -> int:
    """Reserves items until the database refuses one; the number reserved."""
    for n in range(start, start + 100_000):
        try:
            catalog.reserve_item(NewItem("lib", sha(n), "x" * 500, "y" * 4000, [f"t{n}-{i}" for i in range(60)]))
        except ResourceExhausted as exc:
            assert exc.message == "the catalog's disk is full: free space, then retry"
            return n - start
    raise AssertionError("the database never filled")


def test_a_full_sqlite_database_is_resource_exhausted_and_recovers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite's own SQLITE_FULL, from a page limit (max_page_count)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine)
    catalog = Catalog(engine)
    catalog.create_library("lib", "m", 4)
    limit = {"pages": 0}

    @event.listens_for(engine, "connect")
    def _limit(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        if limit["pages"]:
            dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    with engine.connect() as conn:
        limit["pages"] = conn.execute(text("PRAGMA page_count")).scalar() + 20
    engine.dispose()  # new connections, with the limit
    kept = _fill(catalog, 0)
    assert kept > 0
    assert len(catalog.item_states("lib")) == kept  # reads go on; the refused write left nothing
    limit["pages"] = 0
    engine.dispose()  # space freed
    catalog.reserve_item(NewItem("lib", sha(10**6), "after.wav"))
    assert len(catalog.item_states("lib")) == kept + 1
    engine.dispose()


@pytest.fixture
def small_disk(tmp_path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs, where mounting one is allowed (root), else a skip."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], capture_output=True, text=True, check=False
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_is_resource_exhausted_over_grpc_and_recovers(small_disk) -> None:  # type: ignore[no-untyped-def]
    """A real full disk under the catalog service: writes answer
    RESOURCE_EXHAUSTED, reads go on, and writes work again once space is free."""
    from audiosearch.catalog.v1 import catalog_pb2 as pb
    from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc

    from services.catalog import __main__ as catalog_main
    from services.catalog.config import CatalogConfig
    from services.common import config as cfg
    from services.common import server

    config = cfg.load(CatalogConfig, environ={}, data_dir=small_disk, listen="127.0.0.1:0")
    running = await server.start(await catalog_main.build(config), config)
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            stub = pb_grpc.CatalogServiceStub(channel)
            await stub.CreateLibrary(pb.CreateLibraryRequest(name="lib", model_name="m", model_dim=3))
            first = await stub.ReserveItem(pb.ReserveItemRequest(library="lib", sha256=sha(0), name="a.wav"))
            filler = small_disk / "filler"
            with contextlib.suppress(OSError), open(filler, "wb") as f:  # until ENOSPC: the disk is full
                while True:
                    f.write(bytes(4096))
                    f.flush()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                for n in range(1, 1000):  # the first writes may still fit in pages SQLite has
                    await stub.ReserveItem(
                        pb.ReserveItemRequest(library="lib", sha256=sha(n), name="x" * 500, source_uri="y" * 4000)
                    )
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
            assert info.value.details() == "the catalog's disk is full: free space, then retry"
            assert (await stub.GetItem(pb.GetItemRequest(id=first.item.id))).item.name == "a.wav"
            filler.unlink()
            again = await stub.ReserveItem(pb.ReserveItemRequest(library="lib", sha256=sha(10**6), name="b.wav"))
            assert again.created
    finally:
        await running.stop()


# --------------------------------------------------------------------------
# UpdateItem: rename and re-tag after insert


def test_update_item_renames_and_retags_a_ready_item(catalog: Catalog) -> None:
    catalog.create_library("lib", "m", 4)
    item, _ = catalog.reserve_item(NewItem("lib", sha(1), "one.wav", "", ["drums", "kick"]))
    with pytest.raises(FailedPrecondition, match="still being inserted"):
        catalog.update_item(item.id, "x.wav")
    catalog.mark_ready(item.id, [("speech", 0.9)])
    updated = catalog.update_item(item.id, "Renamed.wav", add_tags=[" Loud  Snare ", "drums"], remove_tags=["KICK"])
    assert updated.name == "Renamed.wav"
    assert updated.user_tags == ["drums", "loud snare"] and updated.auto_tags == [("speech", 0.9)]
    assert catalog.get_item(item.id) == updated
    same = catalog.update_item(item.id, remove_tags=["absent", "speech"])  # auto tags stay; None keeps the name
    assert same.name == "Renamed.wav" and same.user_tags == ["drums", "loud snare"] and same.auto_tags
    assert catalog.find_item_ids("lib", ["loud snare"]) == [item.id]
    assert catalog.find_item_ids("lib", ["kick"]) == []


def test_update_item_refuses_what_insert_refuses(catalog: Catalog) -> None:
    catalog.create_library("lib", "m", 4)
    item, _ = catalog.reserve_item(NewItem("lib", sha(1), "one.wav", "", ["a"]))
    catalog.mark_ready(item.id)
    for name, add, remove, message in [
        ("", [], [], "item name must be 1-512"),
        ("x" * 513, [], [], "item name must be 1-512"),
        ("bad\x00name", [], [], "item name"),
        (None, ["   "], [], "invalid tag"),
        (None, ["tab\x07"], [], "tag"),
        (None, ["b"], ["B"], "both added and removed"),
        (None, [f"t{i}" for i in range(64)], [], "at most 64 tags"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            catalog.update_item(item.id, name, add, remove)
    assert catalog.get_item(item.id).user_tags == ["a"] and catalog.get_item(item.id).name == "one.wav"
    full = catalog.update_item(item.id, add_tags=[f"t{i}" for i in range(63)])
    assert len(full.user_tags) == 64
    with pytest.raises(NotFound):
        catalog.update_item(999, "x.wav")
    catalog.mark_deleting(item.id)
    with pytest.raises(FailedPrecondition, match="being deleted"):
        catalog.update_item(item.id, add_tags=["z"])


async def test_update_item_over_grpc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from audiosearch.catalog.v1 import catalog_pb2 as pb
    from audiosearch.catalog.v1 import catalog_pb2_grpc as pb_grpc

    from services.catalog import __main__ as catalog_main
    from services.catalog.config import CatalogConfig
    from services.common import config as cfg
    from services.common import server

    config = cfg.load(CatalogConfig, environ={}, data_dir=tmp_path, listen="127.0.0.1:0")
    running = await server.start(await catalog_main.build(config), config)
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            stub = pb_grpc.CatalogServiceStub(channel)
            await stub.CreateLibrary(pb.CreateLibraryRequest(name="x", model_name="m", model_dim=3))
            item = (await stub.ReserveItem(pb.ReserveItemRequest(library="x", sha256=sha(9), name="a.wav"))).item
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.UpdateItem(pb.UpdateItemRequest(id=item.id, add_tags=["t"]))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            await stub.MarkItemReady(pb.MarkItemReadyRequest(id=item.id))
            tagged = (await stub.UpdateItem(pb.UpdateItemRequest(id=item.id, add_tags=["T"]))).item
            assert tagged.name == "a.wav" and list(tagged.user_tags) == ["t"]  # name unset: kept
            for request, code in [
                (pb.UpdateItemRequest(id=item.id, name=""), grpc.StatusCode.INVALID_ARGUMENT),  # set, but empty
                (pb.UpdateItemRequest(id=item.id, add_tags=[""]), grpc.StatusCode.INVALID_ARGUMENT),
                (pb.UpdateItemRequest(id=12345, name="b.wav"), grpc.StatusCode.NOT_FOUND),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.UpdateItem(request)
                assert info.value.code() == code
            renamed = (await stub.UpdateItem(pb.UpdateItemRequest(id=item.id, name="b.wav", remove_tags=["t"]))).item
            assert renamed.name == "b.wav" and list(renamed.user_tags) == []
    finally:
        await running.stop()
