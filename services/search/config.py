"""Search settings (AUDIOSEARCH_* environment variables)."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig


@dataclasses.dataclass(frozen=True)
class SearchConfig(ServerConfig):
    listen: str = "127.0.0.1:50053"
    # Empty: Milvus Lite at <data_dir>/milvus.db. Else a server URI such as
    # http://milvus:19530 (with AUDIOSEARCH_MILVUS_TOKEN "user:password").
    milvus_uri: str = ""
    milvus_token: str = ""
    # FLAT is exact; HNSW or AUTOINDEX scale better on a Milvus server.
    index_type: str = "FLAT"
    # Most neighbours a single query vector may ask for.
    max_top_k: int = 2048
