"""What every catalog operation shares: one session per transaction, with
the database's own errors turned into the catalog's, and the library
lookup most operations start from."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from services.catalog.tables import Library
from services.common.errors import NotFound, ResourceExhausted, Unavailable, disk_full
from services.common.text import quoted

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


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC on every backend


class Store:
    """The engine, and the helpers the catalog's parts build on."""

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

    def _library(self, session: Session, name: str) -> Library:
        lib = session.exec(select(Library).where(Library.name == name)).first()
        if lib is None:
            raise NotFound(f"library {quoted(name)} does not exist")
        return lib
