"""What the catalog accepts: names, tags and the limits on what a client
sends (each limit also bounds a column or an SQL parameter list)."""

from __future__ import annotations

import re

from services.common import reasons
from services.common.errors import InvalidArgument
from services.common.text import check_text, quoted

LIBRARY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
MAX_TAGS = 64  # user tags per item
MAX_SOURCE_URI = 4096
MAX_NAME = 512  # item names
MAX_MODEL_NAME = 64
MAX_DESCRIPTION = 1024
TEXT_WHITESPACE = "\t\n\r"  # the controls a description may hold (and a tag, where they become spaces)


def validate_library_name(name: str) -> str:
    if not LIBRARY_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid library name {quoted(name)}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit",
            reason=reasons.BAD_NAME,
            field="name",
        )
    return name


def check_name(name: str) -> str:
    """An item's name: 1-512 characters, no control characters."""
    if not name or len(name) > MAX_NAME:
        raise InvalidArgument(
            f"item name must be 1-{MAX_NAME} characters, got {len(name)}", reason=reasons.BAD_NAME, field="name"
        )
    check_text("item name", name, reason=reasons.BAD_NAME, field="name")
    return name


def normalise_tag(tag: str) -> str:
    # Checked before normalising: split() would quietly turn some controls
    # and separators (U+001F, U+2028) into spaces.
    check_text(f"tag {quoted(tag)}", tag, allowed=TEXT_WHITESPACE, reason=reasons.BAD_TAG, field="tags")
    tag = " ".join(tag.strip().lower().split())
    if not tag or len(tag) > 255:
        raise InvalidArgument(
            f"invalid tag {quoted(tag)}: 1-255 characters once spaces are trimmed", reason=reasons.BAD_TAG, field="tags"
        )
    return tag
