"""Server reflection in both versions clients ask for: v1alpha (what
grpcio-reflection ships) and v1 (grpc.reflection.v1.ServerReflection, what
grpcurl, Postman and current grpc libraries try first).

grpcio-reflection 1.85.1 has no v1 module. v1 is v1alpha under another
package name, message for message and field number for field number, so the
same servicer answers it: its v1alpha messages are the v1 messages on the
wire. v1's descriptor, derived from v1alpha's, goes into the default pool so
that reflection can describe the v1 service itself too."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's FileDescriptorProto, renamed to v1."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{v1alpha.DESCRIPTOR.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    proto.ClearField("options")
    todo = list(proto.message_type)
    while todo:
        message = todo.pop()
        todo += message.nested_type
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return proto


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)  # a newer grpcio-reflection, or a second server in this process
    except KeyError:
        pool.AddSerializedFile(_v1_file().SerializeToString())


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Reflection v1 and v1alpha on `server`, listing `service_names` and
    both reflection services."""
    _register_v1_descriptor()
    names = [*service_names, *SERVICE_NAMES]
    reflection.enable_server_reflection(names, server)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
