"""The HTTP service started for real, in the test's event loop, on a free
port, in front of a stack of in-process services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from services.common import config as cfg
from services.common.channels import open_channel
from services.web.app import create_app
from services.web.config import WebConfig


@contextlib.asynccontextmanager
async def web_server(gateway_address: str, **overrides: object) -> AsyncIterator[str]:
    """Yields the base URL, http://127.0.0.1:PORT."""
    config = cfg.load(WebConfig, environ={}, gateway_addr=gateway_address, **overrides)
    channel = open_channel(config.gateway_addr)
    app = create_app(config, channel)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # pytest owns the signals
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await channel.close()
