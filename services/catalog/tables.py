"""SQL tables. Column types are spelled out so the same schema works on
SQLite, PostgreSQL and MySQL/MariaDB (bounded VARCHARs, 64-bit ids)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# SQLite only auto-increments INTEGER PRIMARY KEY, so use that there.
Id = BigInteger().with_variant(Integer, "sqlite")

PENDING, READY, DELETING = "pending", "ready", "deleting"


class Library(SQLModel, table=True):
    __tablename__ = "library"

    id: int | None = Field(default=None, sa_column=Column(Id, primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    model_name: str = Field(sa_column=Column(String(64), nullable=False))
    model_dim: int = Field(sa_column=Column(Integer, nullable=False))
    description: str = Field(default="", sa_column=Column(String(1024), nullable=False, default=""))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    # Window length and hop in seconds (0: the model's defaults; rows from
    # before migration 0002 have 0).
    window_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False, server_default="0"))
    hop_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False, server_default="0"))
    # A move to another model in progress (GatewayService.ReindexLibrary):
    # the library keeps serving with the columns above until the move
    # finishes, which copies these over them in one update. NULL: none
    # (every row from before migration 0004).
    next_model_name: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    next_model_dim: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    next_window_seconds: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    next_hop_seconds: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


class AudioItem(SQLModel, table=True):
    __tablename__ = "audio_item"
    __table_args__ = (
        UniqueConstraint("library_id", "sha256", name="uq_audio_item_library_sha256"),
        UniqueConstraint("library_id", "idempotency_key", name="uq_audio_item_library_key"),
        Index("ix_audio_item_library_state", "library_id", "state"),
        {"sqlite_autoincrement": True},  # ids are never reused (vectors are keyed by them)
    )

    id: int | None = Field(default=None, sa_column=Column(Id, primary_key=True, autoincrement=True))
    library_id: int = Field(sa_column=Column(Id, ForeignKey("library.id", ondelete="CASCADE"), nullable=False))
    name: str = Field(sa_column=Column(String(512), nullable=False))
    source_uri: str = Field(default="", sa_column=Column(Text, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    duration_seconds: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    state: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    # A client's key for retries (optional; content + library is always one).
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    # Last state change or insert retry: repair treats PENDING rows untouched
    # for long as abandoned (NULL only in rows from before migration 0003).
    updated_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


class ItemTag(SQLModel, table=True):
    __tablename__ = "item_tag"
    __table_args__ = (Index("ix_item_tag_label", "label"), Index("ix_item_tag_item_id", "item_id"))

    id: int | None = Field(default=None, sa_column=Column(Id, primary_key=True, autoincrement=True))
    item_id: int = Field(sa_column=Column(Id, ForeignKey("audio_item.id", ondelete="CASCADE"), nullable=False))
    label: str = Field(sa_column=Column(String(255), nullable=False))
    # "user" (given at insert) or "auto" (predicted by the model).
    kind: str = Field(sa_column=Column(String(8), nullable=False))
    score: float = 1.0
