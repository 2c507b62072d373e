"""Catalog settings (AUDIOSEARCH_* environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig


@dataclasses.dataclass(frozen=True)
class CatalogConfig(ServerConfig):
    listen: str = "127.0.0.1:50054"
    # Any SQLAlchemy URL: postgresql+psycopg://..., mysql+pymysql://...
    # Empty: SQLite at <data_dir>/catalog.db.
    database_url: str = ""
