"""JSON Schemas of the gateway's messages, made from the protobuf
descriptors: the protos stay the one source of truth, and /docs shows
exactly the fields the JSON carries (the proto3 JSON mapping, field names
as in the .proto files)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int32"},
    # proto3 JSON writes 64-bit integers as strings (JavaScript numbers lose them).
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _field(field: FieldDescriptor, out: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full = field.message_type.full_name
        if full in _WELL_KNOWN:
            schema = dict(_WELL_KNOWN[full])
        else:
            add(field.message_type, out)
            schema = _ref(full)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        schema = _ref(_enum(field.enum_type, out))
    else:
        schema = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _enum(enum: EnumDescriptor, out: dict[str, dict[str, Any]]) -> str:
    out.setdefault(enum.full_name, {"type": "string", "enum": [v.name for v in enum.values]})
    return enum.full_name


def add(message: Descriptor, out: dict[str, dict[str, Any]]) -> None:
    """Adds `message` and every message it refers to, by full name."""
    if message.full_name in out:
        return
    out[message.full_name] = {}  # placeholder: messages may refer to each other
    properties = {f.name: _field(f, out) for f in message.fields}
    out[message.full_name] = {"type": "object", "properties": properties}


def body(message: Descriptor, *omit: str) -> dict[str, Any]:
    """An inline schema of a JSON request body: `message`'s fields but
    `omit` (those the path carries), no others. Scalars and lists only."""
    properties = {f.name: _field(f, {}) for f in message.fields if f.name not in omit}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def ref(message: Descriptor) -> dict[str, str]:
    return _ref(message.full_name)


# The body of every error answer (services/web/errors.py).
ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "the gRPC status code name, e.g. NOT_FOUND"},
                "message": {"type": "string"},
                "http_status": {"type": "integer"},
                "reason": {
                    "type": "string",
                    "description": "what to branch on, e.g. NOT_AUDIO, TOP_K_OUT_OF_RANGE (docs/clients.md)",
                },
                "field_violations": {
                    "type": "array",
                    "description": "the request fields at fault, where a field is",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                    },
                },
            },
        }
    },
}
ERROR_REF = _ref("Error")
