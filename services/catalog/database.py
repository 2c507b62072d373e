"""Engine creation and schema migrations (Alembic, run at start-up)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")  # needed for ON DELETE CASCADE
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    # Servers drop idle connections; pre-ping replaces them transparently.
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


# Several catalog replicas may start at once (a Kubernetes rollout): the
# first to take this lock migrates, the others then find the schema current.
LOCK_NAME = "audiosearch_catalog_migrations"
LOCK_KEY = 0x61756469  # PostgreSQL advisory locks are keyed by a number ("audi")
LOCK_WAIT_SECONDS = 300


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """SQLite's lock: a file beside the database (alembic's migration
    context is process-global, so even threads must take turns)."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrades the schema to `revision`; a no-op when already there."""
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        with _file_lock(engine):
            _migrate(engine, revision)
    elif backend in ("mysql", "mariadb"):
        with _named_lock(engine):
            _migrate(engine, revision)
    else:
        _migrate(engine, revision)


@contextlib.contextmanager
def _named_lock(engine: Engine) -> Iterator[None]:
    """MySQL's lock, on a connection of its own and released only after the
    migration's transaction committed: released inside it, a waiting replica
    would read the old alembic_version and run the same migration again."""
    with engine.connect() as connection:
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": LOCK_NAME, "wait": LOCK_WAIT_SECONDS}
        ).scalar()
        if got != 1:
            raise RuntimeError(f"another catalog held the migration lock for {LOCK_WAIT_SECONDS} s")
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})


def _migrate(engine: Engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        if engine.url.get_backend_name() == "postgresql":  # released when this transaction ends
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        command.upgrade(config, revision)
