"""Sending bytes as a client stream: the first message carries the header
and the first chunk, every later one a chunk. One chunk size for every
sender (the gateway's clients, the CLI, the web service, eval)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, BinaryIO

# 1 MiB per message: well under gRPC's 4 MB default, and few enough
# messages that a long upload is not dominated by per-message overhead.
CHUNK_BYTES = 1 << 20

Make = Callable[[Any, bytes], Any]  # (header or None, chunk) -> message


def byte_messages(first: Any, data: bytes, make: Make, size: int = CHUNK_BYTES) -> Iterator[Any]:
    """Messages for bytes already in memory."""
    yield make(first, data[:size])
    for start in range(size, len(data), size):
        yield make(None, data[start : start + size])


def file_messages(f: BinaryIO, first: Any, make: Make, size: int = CHUNK_BYTES) -> Iterator[Any]:
    """Messages read from an open binary file a chunk at a time (never the
    whole file in memory)."""
    yield make(first, f.read(size))
    for block in iter(lambda: f.read(size), b""):
        yield make(None, block)


async def async_byte_messages(first: Any, data: bytes, make: Make, size: int = CHUNK_BYTES) -> AsyncIterator[Any]:
    """`byte_messages` for an asyncio stream."""
    for message in byte_messages(first, data, make, size):
        yield message


async def reader_messages(
    read: Callable[[int], Awaitable[bytes]], first: Any, make: Make, size: int = CHUNK_BYTES
) -> AsyncIterator[Any]:
    """Messages from an async reader (`await read(n)`, b"" at the end), a
    chunk at a time."""
    yield make(first, await read(size))
    while chunk := await read(size):
        yield make(None, chunk)
