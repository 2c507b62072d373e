"""`python -m services.search`: run the search service."""

from __future__ import annotations

import asyncio

from audiosearch.search.v1 import search_pb2_grpc as pb_grpc

from services.common import config as cfg
from services.common import server
from services.search.config import SearchConfig
from services.search.metrics import observe
from services.search.servicer import SERVICE_NAME, SearchServicer
from services.search.store import ServerTls, VectorStore


async def build(config: SearchConfig) -> server.ServiceSpec:
    uri = config.milvus_uri or str((config.data_dir / "milvus.db").resolve())
    tls = ServerTls(config.milvus_ca_file, config.milvus_server_name)
    store = await asyncio.to_thread(
        VectorStore, uri, config.milvus_token, config.index_type, config.milvus_db_name, tls
    )

    async def shutdown() -> None:
        await asyncio.to_thread(store.close)

    return server.ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda s: pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(store, config.max_top_k), s),
        shutdown=shutdown,
        observe=lambda metrics: observe(store, metrics),
    )


def main() -> None:
    config = cfg.load(SearchConfig)
    server.run("search", lambda: build(config), config)


if __name__ == "__main__":
    main()
