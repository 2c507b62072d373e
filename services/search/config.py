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
    # A Milvus server's database (empty: the URI's path, else "default").
    milvus_db_name: str = ""
    # TLS to a Milvus server (an https:// URI): the PEM file of the CA that
    # signed its certificate (empty: the system's roots), and the name to
    # verify when it is not the URI's host.
    milvus_ca_file: str = ""
    milvus_server_name: str = ""
    # FLAT is exact; HNSW or AUTOINDEX scale better on a Milvus server.
    index_type: str = "FLAT"
    # Most neighbours a single query vector may ask for.
    max_top_k: int = 2048
    # Longest wait for Milvus (one call, a collection load, the store's
    # lock); past it the caller gets UNAVAILABLE and health says so.
    store_timeout_seconds: float = 60.0
