"""Text that clients send, in messages and in storage. `quoted` names what
a client sent without echoing all of it (error messages travel in a gRPC
status trailer, which has a size limit); `bounded` cuts any message to a
size that fits; `check_text` refuses the characters that would let a
stored name disguise itself on a page or in a terminal."""

from __future__ import annotations

import unicodedata

from services.common import reasons
from services.common.errors import InvalidArgument

QUOTE_LIMIT = 64  # characters of a client's text quoted in a message
MESSAGE_LIMIT = 1024  # UTF-8 bytes of a status message (gRPC percent-encodes it: at most 3 KiB on the wire)

# Categories refused in stored text: controls (Cc), format characters (Cf:
# bidi overrides, embeddings and isolates, LRM/RLM, zero-width characters,
# the BOM...), line and paragraph separators (Zl, Zp), surrogates (Cs: only
# an unpaired one can be in a str).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# ...but the zero-width non-joiner and joiner: Persian and Indic scripts
# spell words with them, emoji sequences are built with them, and they
# neither reorder nor hide text.
JOINERS = "\u200c\u200d"


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` as repr() shows it, or its first `limit` characters and its
    length. repr also escapes what is unprintable (U+202E reads '\\u202e')."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """`message`, cut with a marker when its UTF-8 form is over `limit` bytes
    (an unpaired surrogate, which UTF-8 cannot carry, is written as \\udXXX)."""
    data = message.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode()
    marker = f" … [cut: {len(data)} bytes]"
    # errors="ignore" drops a character the cut split in half.
    return data[: limit - len(marker.encode())].decode("utf-8", "ignore") + marker


def _is_noncharacter(char: str) -> bool:
    """U+FDD0..U+FDEF and the last two code points of every plane."""
    point = ord(char)
    return 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE


def first_refused(text: str, allowed: str = "") -> tuple[int, str] | None:
    """The index and the first character of `text` that stored text must not
    hold (see `_REFUSED_CATEGORIES`, plus noncharacters), skipping those in
    `allowed` and the joiners; None when there is none."""
    if text.isprintable():  # the common case, at C speed: no C*, Z* but the space, or noncharacter (Cn)
        return None
    for index, char in enumerate(text):
        if char in allowed or char in JOINERS:
            continue
        if unicodedata.category(char) in _REFUSED_CATEGORIES or _is_noncharacter(char):
            return index, char
    return None


def _describe(char: str) -> str:
    """U+202E (RIGHT-TO-LEFT OVERRIDE): a character named, never shown."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} ({name})" if name else f"U+{ord(char):04X}"


def check_text(
    what: str, text: str, allowed: str = "", *, reason: str = reasons.BAD_TEXT, field: str | None = None
) -> str:
    """`text` when it holds no control, format or separator character, no
    unpaired surrogate and no noncharacter (but those in `allowed`), else
    InvalidArgument naming the character and its position (1-based), with
    `reason` (BAD_NAME for a name, BAD_TAG for a tag) and `field`."""
    found = first_refused(text, allowed)
    if found is None:
        return text
    index, char = found
    raise InvalidArgument(
        f"{what} holds {_describe(char)} at position {index + 1} of {len(text)}: control, format "
        "(e.g. bidirectional override, zero-width) and separator characters are not allowed",
        reason=reason,
        field=field,
    )
