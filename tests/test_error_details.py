"""Errors a client can branch on, through the real in-process stack: the
google.rpc details (ErrorInfo reason, BadRequest field violations) read by
a plain gRPC client, across the embedder -> gateway hop; top_k 0 as the
default; reflection v1 beside v1alpha; the HTTP error body's reason."""

from __future__ import annotations

import grpc
import httpx
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common import reasons
from services.common.channels import LOCAL_SUBCHANNELS
from tests.sounds import encode, excerpt, sound
from tests.test_gateway import insert_stream, search_stream
from tests.web_server import web_server

NOT_AUDIO_BYTES = b"this is a text file, not a recording\n" * 100


async def rich_error(call) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    """(code, ErrorInfo, field violations) of a failed call, read as any
    gRPC client reads them: grpc_status.rpc_status.from_call."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)
    assert status is not None, f"no grpc-status-details-bin: {caught.value.details()}"
    info = error_details_pb2.ErrorInfo()
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return caught.value.code(), info, violations


async def library_with_two_sounds(stack) -> bytes:  # type: ignore[no-untyped-def]
    """A spectral-v1 library "sfx" of two sounds; returns a query clip of the second."""
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    for seed in range(2):
        data = encode(sound(seed, seconds=3.0))
        await stack.gateway.InsertAudio(insert_stream("sfx", f"s{seed}.wav", data))
    return encode(excerpt(sound(1, seconds=3.0), 0.5, 2.5))


async def test_a_non_audio_upload_is_not_audio_through_the_gateway(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    # Found by the embedder's decoder; the reason survives the hop to the gateway's client.
    for call in (
        stack.gateway.InsertAudio(insert_stream("sfx", "notes.txt", NOT_AUDIO_BYTES)),
        stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=3), NOT_AUDIO_BYTES)),
    ):
        code, info, _ = await rich_error(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.reason, info.domain) == (reasons.NOT_AUDIO, reasons.DOMAIN)


async def test_top_k_out_of_range_names_the_field(stack) -> None:  # type: ignore[no-untyped-def]
    clip = await library_with_two_sounds(stack)
    for top_k in (1000, -1):
        code, info, violations = await rich_error(
            stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="sfx", top_k=top_k), clip))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.reason == reasons.TOP_K_OUT_OF_RANGE and info.domain == reasons.DOMAIN
        assert [field for field, _ in violations] == ["top_k"] and "top_k" in violations[0][1]


async def test_top_k_0_is_the_default(stack) -> None:  # type: ignore[no-untyped-def]
    clip = await library_with_two_sounds(stack)
    response = await stack.gateway.SearchAudio(search_stream(pb.SearchParams(library="sfx"), clip))
    assert response.results and response.results[0].item.name == "s1.wav"


async def test_every_invalid_argument_has_a_reason(stack) -> None:  # type: ignore[no-untyped-def]
    """Also where the raise site names none: the code's name, then."""
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    cases = {
        reasons.MISSING_FIELD: stack.gateway.SearchAudio(search_stream(pb.SearchParams(top_k=3), b"x")),
        reasons.UNKNOWN_MODEL: stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="m", model="nope")),
    }
    for reason, call in cases.items():
        code, info, _ = await rich_error(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == reason
    code, info, _ = await rich_error(stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="Bad Name!")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason and info.reason.isupper()


def v1_message(name: str):  # type: ignore[no-untyped-def]
    """A grpc.reflection.v1 message class, from the descriptor the server added."""
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(f"grpc.reflection.v1.{name}")
    )


async def test_reflection_v1_lists_and_describes_the_services(stack) -> None:  # type: ignore[no-untyped-def]
    request_type, response_type = v1_message("ServerReflectionRequest"), v1_message("ServerReflectionResponse")
    async with grpc.aio.insecure_channel(stack.address("gateway"), options=[LOCAL_SUBCHANNELS]) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        requests = [
            request_type(list_services=""),
            request_type(file_containing_symbol="audiosearch.gateway.v1.GatewayService"),
            request_type(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        ]
        listed, gateway, itself = [r async for r in info(iter(requests))]
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "audiosearch.gateway.v1.GatewayService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(f) for f in gateway.file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.package == "audiosearch.gateway.v1" for f in files)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(f) for f in itself.file_descriptor_response.file_descriptor_proto
    ]
    assert [f.service[0].name for f in files if f.package == "grpc.reflection.v1"] == ["ServerReflection"]


async def test_http_errors_carry_the_reason(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.gateway.CreateLibrary(pb.CreateLibraryRequest(name="sfx", model="spectral-v1"))
    async with web_server(stack.address("gateway")) as base, httpx.AsyncClient(base_url=base, timeout=60) as web:
        response = await web.post("/v1/libraries/sfx/items", files={"file": ("notes.txt", NOT_AUDIO_BYTES)})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == reasons.NOT_AUDIO
        # Refused by the HTTP service itself: its own validation, with the field.
        response = await web.post("/v1/libraries/sfx/search", files={"file": ("q.wav", b"x")}, data={"top_k": "1000"})
        error = response.json()["error"]
        assert response.status_code == 400 and error["reason"] == reasons.INVALID_FIELD
        assert [v["field"] for v in error["field_violations"]] == ["top_k"]
