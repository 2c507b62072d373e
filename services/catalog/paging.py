"""Page tokens of ListItems: opaque to clients, the last id seen inside."""

from __future__ import annotations

import base64

from services.common import reasons
from services.common.errors import InvalidArgument

MAX_PAGE = 1000
MAX_ID = 2**63 - 1


def encode_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def decode_token(token: str) -> int:
    try:
        kind, value = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        after = int(value)
        if kind != "after" or not 0 <= after <= MAX_ID:
            raise ValueError(kind)
        return after
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(
            "invalid page_token: pass back next_page_token from a previous response",
            reason=reasons.BAD_PAGE_TOKEN,
            field="page_token",
        ) from None
