"""What a command prints: one JSON document with --json (errors too:
{"error": {"code", "message"}}), else text for a terminal. The JSON is
the HTTP API's (services/common/jsonview.py) but for 64-bit integers,
which proto3's JSON mapping prints as strings: the CLI prints numbers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


class CliError(Exception):
    """An error the CLI finds itself; `reason` as the gateway's (docs/clients.md)."""

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


class SystemExitWith(Exception):
    """A command finished with a document to print and a non-zero status."""

    def __init__(self, doc: Any, text: str, code: int) -> None:
        super().__init__(text)
        self.doc, self.text, self.code = doc, text, code


# The int64 fields of the gateway's messages (ids and counts): numbers in the CLI's JSON.
INTEGER_FIELDS = frozenset(
    {
        "id",
        "item_id",
        "items",
        "pending_items",
        "indexed_items",
        "vectors",
        "deleted_items",
        "total_items",
        "reindexed_items",
        "skipped_items",
        "failed_items",
        "total_bytes",
    }
)


def numbers(doc: Any) -> Any:
    """`doc` with the numeric strings of INTEGER_FIELDS as JSON numbers."""
    if isinstance(doc, dict):
        return {
            k: int(v) if k in INTEGER_FIELDS and isinstance(v, str) and v.lstrip("-").isdigit() else numbers(v)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [numbers(v) for v in doc]
    return doc


def printable(text: str) -> str:
    """`text` for a terminal: what would move the cursor, recolour or reorder
    it (controls, a right-to-left override in a file name) as escapes."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def describe(d: dict[str, Any]) -> str:
    """An item's JSON (services/common/jsonview.py) as one or two lines."""
    tags = ", ".join(d["user_tags"] + [f"{t['label']} ({t['score']:.2f})" for t in d["auto_tags"]])
    return (
        f"{d['id']}: {d['name']} [{d['library']}] {d['duration_seconds']:.2f}s "
        f"{d['sample_rate']} Hz x{d['channels']}  {d['source_uri']}" + (f"\n    tags: {tags}" if tags else "")
    )


def emit(args: argparse.Namespace, doc: Any, text: str, stream: Any = None) -> None:
    if args.json:
        # JSON Lines commands (monitor) print every document, errors too, on one line.
        print(json.dumps(numbers(doc), indent=None if getattr(args, "json_lines", False) else 2, default=str))
    else:
        print(text, file=stream or sys.stdout)


def emit_error(args: argparse.Namespace, code: str, message: str, text: str, reason: str | None = None) -> None:
    """`reason`: the status's ErrorInfo reason (docs/clients.md), in the JSON only."""
    error = {"code": code, "message": message}
    if reason:
        error["reason"] = reason
    emit(args, {"error": error}, text, sys.stderr)
