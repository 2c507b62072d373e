"""Collecting a client-streamed upload: a header in the first message and
byte chunks in every message, with a size limit enforced as it arrives."""

from __future__ import annotations

import io
from collections.abc import AsyncIterable
from typing import Any

from services.common import reasons
from services.common.errors import InvalidArgument, ResourceExhausted


async def collect(messages: AsyncIterable[Any], header: str, max_bytes: int) -> tuple[Any, bytes]:
    """Returns (first message's `header` field, all chunks joined)."""
    first = None
    # A growing buffer, not a list of chunks joined at the end: getvalue()
    # hands over the buffer itself, so the upload is held once, not twice.
    parts = io.BytesIO()
    size = 0
    async for message in messages:
        if first is None:
            if not message.HasField(header):
                raise InvalidArgument(
                    f"the first message of the stream must carry `{header}`", reason=reasons.BAD_STREAM, field=header
                )
            first = getattr(message, header)
        size += len(message.chunk)
        if size > max_bytes:
            raise ResourceExhausted(
                f"upload exceeds {max_bytes} bytes (AUDIOSEARCH_MAX_UPLOAD_BYTES); split or shorten the audio",
                reason=reasons.UPLOAD_TOO_LARGE,
            )
        if message.chunk:
            parts.write(message.chunk)
    if first is None:
        raise InvalidArgument(
            f"the stream was empty: the first message must carry `{header}`", reason=reasons.BAD_STREAM, field=header
        )
    return first, parts.getvalue()
