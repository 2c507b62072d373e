"""`python -m services.search`: run the search service."""

from __future__ import annotations

import asyncio
import logging
import time

from audiosearch.search.v1 import search_pb2_grpc as pb_grpc

from services.common import config as cfg
from services.common import server
from services.search import metrics as service_metrics
from services.search.config import SearchConfig
from services.search.contract import Store
from services.search.milvus import MilvusStore
from services.search.milvus_connection import ServerTls
from services.search.servicer import SERVICE_NAME, SearchServicer

log = logging.getLogger(__name__)


async def build(config: SearchConfig) -> server.ServiceSpec:
    uri = config.milvus_uri or str((config.data_dir / "milvus.db").resolve())
    tls = ServerTls(config.milvus_ca_file, config.milvus_server_name)
    store: Store = await asyncio.to_thread(
        MilvusStore,
        uri,
        config.milvus_token,
        config.index_type,
        config.milvus_db_name,
        tls,
        config.store_timeout_seconds,
    )

    async def startup() -> None:
        # Health says NOT_SERVING until every collection is loaded, so the
        # first search after a (re)start is as fast as the second.
        began = time.monotonic()
        count = await asyncio.to_thread(store.open)
        log.info("%d collections loaded in %.2f s", count, time.monotonic() - began)

    async def probe() -> None:
        await asyncio.to_thread(store.check)

    async def shutdown() -> None:
        await asyncio.to_thread(store.close)

    return server.ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda s: pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(store, config.max_top_k), s),
        startup=startup,
        probe=probe,
        shutdown=shutdown,
        register_metrics=lambda metrics: service_metrics.register(store, metrics),
    )


def main() -> None:
    config = cfg.load(SearchConfig)
    server.run("search", lambda: build(config), config)


if __name__ == "__main__":
    main()
