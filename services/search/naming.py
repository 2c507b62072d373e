"""Collection names and primary keys, shared by every store.

Milvus names allow only [A-Za-z0-9_]; hex keeps every library name
distinct (the readable name is kept as a property). A key
"<library>@<model>" wherever a library name goes names that library's
staging collection for `model` ('@' is never part of a library name)."""

from __future__ import annotations

import hashlib

from services.common.errors import InvalidArgument
from services.common.text import quoted

WINDOW_BITS = 24  # up to 16.7 M windows per item
LIVE_PREFIX, STAGING_PREFIX = "lib_", "stage_"
STAGING_SEPARATOR = "@"


def split_key(key: str) -> tuple[str, str]:
    """A library key as (library, model): the model of a staging key
    "<library>@<model>", else "" (the library's own collection)."""
    library, separator, model = key.partition(STAGING_SEPARATOR)
    if separator and not (library and model):
        raise InvalidArgument(f"a staging collection is named '<library>@<model>', got {quoted(key)}")
    return library, model


def collection_name(library: str) -> str:
    """The collection of a library, or of a staging key's staging collection."""
    name, model = split_key(library)
    if model:
        return staging_name(name, model)
    return LIVE_PREFIX + library.encode().hex()


def staging_prefix(library: str) -> str:
    return f"{STAGING_PREFIX}{library.encode().hex()}_"  # hex has no '_': no library's prefix is another's


def staging_name(library: str, model: str) -> str:
    """The staging collection of `library` for `model` (a digest of the
    model name keeps it within Milvus's 255 characters)."""
    return staging_prefix(library) + hashlib.sha256(model.encode()).hexdigest()[:16]


def ours(name: str) -> bool:
    """A collection of this service (a shared Milvus database holds others)."""
    return name.startswith((LIVE_PREFIX, STAGING_PREFIX))


def primary_key(item_id: int, window: int) -> int:
    return (item_id << WINDOW_BITS) | window
