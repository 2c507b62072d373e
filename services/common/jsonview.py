"""A protobuf message as the JSON every client of ours prints: the HTTP
API and the CLI's --json alike (field names as in the proto, fields at
their default value included, 64-bit integers as strings as proto3's JSON
mapping says)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
