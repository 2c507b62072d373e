"""Bearer tokens at the gateway: real services on loopback, a real tokens
file; who may read or write which library."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import grpc
import pytest
from audiosearch.gateway.v1 import gateway_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.cli import main as cli
from services.common import config as cfg
from services.common import errors, server
from services.common.channels import LOCAL_SUBCHANNELS
from services.common.config import ConfigError, ServerConfig
from services.common.status import from_rpc_error
from services.gateway import access
from services.gateway.auth import AuthInterceptor
from services.gateway.config import GatewayConfig
from tests.conftest import start_stack, stop_stack
from tests.sounds import encode, sound
from tests.test_gateway import expect_code, insert_stream, search_stream

TOKENS = {
    "alice": "alice-7c1f0d9e-token",  # writes lib-a
    "reader": "reader-52ab93e1-token",  # reads lib-*
    "admin": "admin-e04d6b2f-token",  # writes everything
}
TOKENS_TOML = f"""
# Tokens for the tests: hashes only, as in production.
[[principals]]
name = "alice"
token_sha256 = "{access.hash_token(TOKENS["alice"])}"
write = ["lib-a"]

[[principals]]
name = "reader"
token_sha256 = "{access.hash_token(TOKENS["reader"])}"
read = ["lib-*"]

[[principals]]
name = "admin"
token_sha256 = "{access.hash_token(TOKENS["admin"])}"
write = ["*"]
"""


def bearer(who: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[who]}"),)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS_TOML)
    return path


@pytest.fixture
async def auth_stack(tmp_path: Path, tokens_file: Path):  # type: ignore[no-untyped-def]
    s = await start_stack(tmp_path, auth_tokens_file=str(tokens_file))
    yield s
    await stop_stack(s)


async def create_libraries(stack, *names: str) -> None:  # type: ignore[no-untyped-def]
    for name in names:
        request = pb.CreateLibraryRequest(name=name, model="spectral-v1")
        await stack.gateway.CreateLibrary(request, metadata=bearer("admin"))


def clip(seed: int = 1) -> bytes:
    return encode(sound(seed, seconds=3.0))


# The tokens file.


def test_tokens_file_toml_and_json_give_the_same_principals(tmp_path: Path, tokens_file: Path) -> None:
    import tomllib

    as_json = tmp_path / "tokens.json"
    as_json.write_text(json.dumps(tomllib.loads(TOKENS_TOML)))
    for path in (tokens_file, as_json):
        tokens = access.load_tokens(path)
        assert [p.name for p in tokens.principals] == ["alice", "reader", "admin"]
        alice = tokens.principal(TOKENS["alice"])
        assert alice is not None and alice.name == "alice"
        assert alice.may("lib-a", write=True) and not alice.may("lib-b", write=False)
        reader = tokens.principal(TOKENS["reader"])
        assert reader is not None and reader.may("lib-b", write=False) and not reader.may("lib-b", write=True)
        assert not reader.may("other", write=False) and not reader.admin
        assert tokens.principal(TOKENS["admin"]).admin  # type: ignore[union-attr]
        assert tokens.principal("not-a-token") is None
        assert tokens.principal(access.hash_token(TOKENS["alice"])) is None  # the hash is not the token


def test_a_plain_token_entry_works_too() -> None:
    tokens = access.parse_tokens({"principals": [{"name": "ci", "token": "plain-secret", "read": ["x"]}]})
    assert tokens.principal("plain-secret").name == "ci"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({}, "principals"),
        ({"principals": []}, "non-empty"),
        ({"principals": [{"token": "s3cret-value", "read": ["a"]}]}, "'name' is required"),
        ({"principals": [{"name": "n", "read": ["a"]}]}, "exactly one of"),
        ({"principals": [{"name": "n", "token": "s3cret-value", "token_sha256": "0" * 64, "read": ["a"]}]}, "exactly"),
        ({"principals": [{"name": "n", "token_sha256": "s3cret-value", "read": ["a"]}]}, "64 hex digits"),
        ({"principals": [{"name": "n", "token": "s3cret-value"}]}, "grants nothing"),
        ({"principals": [{"name": "n", "token": "s3cret-value", "read": "a"}]}, "must be a list"),
        ({"principals": [{"name": "n", "token": "s3cret-value", "writes": ["a"]}]}, "unknown keys ['writes']"),
        (
            {"principals": [{"name": n, "token": "s3cret-value", "read": ["a"]} for n in ("n", "m")]},
            "same token as an earlier",
        ),
        (
            {"principals": [{"name": "n", "token": t, "read": ["a"]} for t in ("s3cret-value", "s3cret-value2")]},
            "used twice",
        ),
    ],
)
def test_bad_tokens_files_are_refused_without_echoing_secrets(document: object, complaint: str) -> None:
    with pytest.raises(ConfigError) as info:
        access.parse_tokens(document)
    assert complaint in str(info.value)
    assert "s3cret-value" not in str(info.value)


def test_an_unparsable_tokens_file_names_the_file_not_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[[principals]]\nname = "x"\ntoken = "s3cret-value\n')  # unterminated string
    with pytest.raises(ConfigError, match="not valid toml") as info:
        access.load_tokens(path)
    assert str(path) in str(info.value) and "s3cret-value" not in str(info.value)
    with pytest.raises(ConfigError, match="No such file"):
        access.load_tokens(tmp_path / "missing.json")


def test_hash_and_new_commands(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("my-token\n"))
    assert access.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == access.hash_token("my-token")

    assert access.main(["new", "team-a", "--write", "team-a-*", "--read", "shared"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    entry = err[err.index("[[principals]]") :]
    import tomllib

    tokens = access.parse_tokens(tomllib.loads(entry))
    principal = tokens.principal(token)
    assert principal is not None and principal.name == "team-a"
    assert principal.may("team-a-x", write=True) and principal.may("shared", write=False)
    assert token not in err  # the entry holds the hash only


def test_check_command_lists_grants(tokens_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert access.main(["check", str(tokens_file)]) == 0
    out = capsys.readouterr().out
    assert "alice: lib-a (write)" in out and "reader: lib-* (read)" in out
    assert not any(token in out for token in TOKENS.values())


async def test_a_bad_tokens_file_stops_the_gateway_before_it_serves(tmp_path: Path) -> None:
    from services.gateway import __main__ as gateway_main

    path = tmp_path / "tokens.json"
    path.write_text('{"principals": [{"name": "x", "token": "s3cret-value"}]}')
    config = cfg.load(GatewayConfig, environ={"AUDIOSEARCH_AUTH_TOKENS_FILE": str(path)})
    with pytest.raises(ConfigError, match="grants nothing"):
        await gateway_main.build(config)


# The gateway with auth configured.


async def test_a_request_without_a_token_is_unauthenticated(auth_stack) -> None:  # type: ignore[no-untyped-def]
    g = auth_stack.gateway
    await expect_code(g.ListLibraries(pb.ListLibrariesRequest()), grpc.StatusCode.UNAUTHENTICATED, "missing bearer")
    await expect_code(
        g.InsertAudio(insert_stream("lib-a", "x.wav", clip())), grpc.StatusCode.UNAUTHENTICATED, "Bearer <token>"
    )
    await expect_code(g.Stats(pb.StatsRequest()), grpc.StatusCode.UNAUTHENTICATED)


async def test_a_wrong_token_is_unauthenticated(auth_stack) -> None:  # type: ignore[no-untyped-def]
    g = auth_stack.gateway
    wrong = (("authorization", "Bearer not-a-token"),)
    await expect_code(
        g.ListLibraries(pb.ListLibrariesRequest(), metadata=wrong), grpc.StatusCode.UNAUTHENTICATED, "invalid"
    )
    hashed = (("authorization", f"Bearer {access.hash_token(TOKENS['admin'])}"),)
    await expect_code(g.ListLibraries(pb.ListLibrariesRequest(), metadata=hashed), grpc.StatusCode.UNAUTHENTICATED)
    basic = (("authorization", f"Basic {TOKENS['admin']}"),)
    await expect_code(
        g.ListLibraries(pb.ListLibrariesRequest(), metadata=basic), grpc.StatusCode.UNAUTHENTICATED, "not a bearer"
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        # One message: a client still streaming a long upload when the server refuses may see the stream reset.
        await g.SearchAudio(search_stream(pb.SearchParams(library="lib-a", top_k=3), b"x"), metadata=wrong)
    # A client maps the status back to the domain exception.
    assert isinstance(from_rpc_error(info.value, "gateway"), errors.Unauthenticated)


async def test_health_and_reflection_need_no_token(auth_stack) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(auth_stack.address("gateway"), options=[LOCAL_SUBCHANNELS]) as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (response,) = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        assert "audiosearch.gateway.v1.GatewayService" in {s.name for s in response.list_services_response.service}


async def test_a_token_for_library_a_is_denied_library_b(auth_stack) -> None:  # type: ignore[no-untyped-def]
    g = auth_stack.gateway
    await create_libraries(auth_stack, "lib-a", "lib-b")
    inserted = await g.InsertAudio(insert_stream("lib-a", "a.wav", clip(1)), metadata=bearer("alice"))
    assert inserted.created
    found = await g.SearchAudio(
        search_stream(pb.SearchParams(library="lib-a", top_k=3), clip(1)), metadata=bearer("alice")
    )
    assert found.results[0].item.id == inserted.item.id
    in_b = await g.InsertAudio(insert_stream("lib-b", "b.wav", clip(2)), metadata=bearer("admin"))

    denied = grpc.StatusCode.PERMISSION_DENIED
    await expect_code(
        g.InsertAudio(insert_stream("lib-b", "a.wav", clip(3)), metadata=bearer("alice")), denied, "lib-b"
    )
    await expect_code(
        g.SearchAudio(search_stream(pb.SearchParams(library="lib-b", top_k=3), clip(2)), metadata=bearer("alice")),
        denied,
    )
    # By id, an item of a library the caller may not read does not exist for
    # it: no status or message tells its id or library apart from a free id.
    for call in (
        g.GetAudio(pb.GetAudioRequest(id=in_b.item.id), metadata=bearer("alice")),
        g.DeleteAudio(pb.DeleteAudioRequest(id=in_b.item.id), metadata=bearer("alice")),
    ):
        details = await expect_code(call, grpc.StatusCode.NOT_FOUND, f"audio item {in_b.item.id} does not exist")
        assert "lib-b" not in details
    await expect_code(g.ListAudio(pb.ListAudioRequest(library="lib-b"), metadata=bearer("alice")), denied)
    await expect_code(g.DeleteLibrary(pb.DeleteLibraryRequest(name="lib-b"), metadata=bearer("alice")), denied)
    request = pb.CreateLibraryRequest(name="lib-c", model="spectral-v1")
    await expect_code(g.CreateLibrary(request, metadata=bearer("alice")), denied)

    # Read is not write: the reader searches lib-b but may not add to it.
    found = await g.SearchAudio(
        search_stream(pb.SearchParams(library="lib-b", top_k=3), clip(2)), metadata=bearer("reader")
    )
    assert found.results[0].item.id == in_b.item.id
    await expect_code(
        g.InsertAudio(insert_stream("lib-b", "r.wav", clip(4)), metadata=bearer("reader")), denied, "write"
    )
    # lib-b is intact.
    (item,) = (await g.ListAudio(pb.ListAudioRequest(library="lib-b"), metadata=bearer("admin"))).items
    assert item.id == in_b.item.id


async def test_list_libraries_shows_only_visible_ones(auth_stack) -> None:  # type: ignore[no-untyped-def]
    g = auth_stack.gateway
    await create_libraries(auth_stack, "lib-a", "lib-b", "other")

    async def names(who: str) -> list[str]:
        response = await g.ListLibraries(pb.ListLibrariesRequest(), metadata=bearer(who))
        return sorted(lib.name for lib in response.libraries)

    assert await names("alice") == ["lib-a"]
    assert await names("reader") == ["lib-a", "lib-b"]
    assert await names("admin") == ["lib-a", "lib-b", "other"]


async def test_the_cli_sends_its_token(auth_stack, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    await create_libraries(auth_stack, "lib-a", "lib-b")
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", auth_stack.address("gateway"))
    monkeypatch.delenv("AUDIOSEARCH_TOKEN", raising=False)
    # The CLI is synchronous: run it beside the event loop serving the stack.
    assert await asyncio.to_thread(cli.main, ["libraries", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "UNAUTHENTICATED"

    monkeypatch.setenv("AUDIOSEARCH_TOKEN", TOKENS["alice"])
    assert await asyncio.to_thread(cli.main, ["libraries", "--json"]) == 0
    assert [lib["name"] for lib in json.loads(capsys.readouterr().out)] == ["lib-a"]

    assert await asyncio.to_thread(cli.main, ["libraries", "--json", "--token", TOKENS["admin"]]) == 0
    assert sorted(lib["name"] for lib in json.loads(capsys.readouterr().out)) == ["lib-a", "lib-b"]


FILE_MARKER = b"file-contents-3b8e"


async def test_tokens_and_file_contents_never_reach_the_logs(auth_stack, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    g = auth_stack.gateway
    await create_libraries(auth_stack, "lib-a", "lib-b")
    await g.InsertAudio(insert_stream("lib-a", "a.wav", clip(1)), metadata=bearer("alice"))
    await g.SearchAudio(search_stream(pb.SearchParams(library="lib-a", top_k=3), clip(1)), metadata=bearer("alice"))
    rejected = [
        g.InsertAudio(insert_stream("lib-b", "b.wav", clip(2)), metadata=bearer("alice")),  # denied
        g.InsertAudio(
            insert_stream("lib-a", "n.wav", b"RIFF" + FILE_MARKER * 50), metadata=bearer("alice")
        ),  # not audio
        g.ListLibraries(pb.ListLibrariesRequest(), metadata=(("authorization", "Bearer wrong-5ee1d0a7"),)),
        g.ListLibraries(pb.ListLibrariesRequest(), metadata=(("authorization", "Token wrong-5ee1d0a7"),)),
        g.ListLibraries(pb.ListLibrariesRequest()),
    ]
    for call in rejected:
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    assert "refused /audiosearch.gateway.v1.GatewayService/ListLibraries" in caplog.text  # rejections are logged
    secrets = [*TOKENS.values(), "wrong-5ee1d0a7"]
    secrets += [access.hash_token(t) for t in secrets]
    for secret in secrets:
        assert secret not in caplog.text
    assert FILE_MARKER.decode() not in caplog.text


# The interceptor on a bare server: the principal reaches the handler.


def _echo_principal_server(tokens: access.Tokens) -> server.ServiceSpec:
    """A real server whose methods answer with the principal they run as,
    one method of each shape (the gateway has no server-streaming one)."""

    def name() -> bytes:
        principal = access.current()
        return (principal.name if principal else "-").encode()

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0)
        return name()

    async def streaming(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        for _ in range(2):
            await asyncio.sleep(0)
            yield name()

    handler = grpc.method_handlers_generic_handler(
        "test.Who",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Streaming": grpc.unary_stream_rpc_method_handler(streaming),
        },
    )
    return server.ServiceSpec(
        service_names=["test.Who"],
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
        interceptors=[AuthInterceptor(tokens)],
    )


async def test_the_principal_reaches_unary_and_streaming_handlers(tokens_file: Path) -> None:
    config = cfg.load(ServerConfig, environ={}, shutdown_grace_seconds=0.5)
    running = await server.start(_echo_principal_server(access.load_tokens(tokens_file)), config)
    try:
        async with grpc.aio.insecure_channel(running.address, options=[LOCAL_SUBCHANNELS]) as channel:
            unary = channel.unary_unary("/test.Who/Unary")
            streaming = channel.unary_stream("/test.Who/Streaming")
            for who in ("alice", "reader"):
                assert await unary(b"", metadata=bearer(who)) == who.encode()
                assert [r async for r in streaming(b"", metadata=bearer(who))] == [who.encode()] * 2
            with pytest.raises(grpc.aio.AioRpcError) as info:
                [r async for r in streaming(b"")]
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Concurrent calls each keep their own principal.
            calls = [unary(b"", metadata=bearer(who)) for who in ["alice", "reader", "admin"] * 5]
            assert await asyncio.gather(*calls) == [w.encode() for w in ["alice", "reader", "admin"] * 5]
    finally:
        await running.stop()


def test_a_token_is_never_sent_in_plaintext_off_loopback() -> None:
    from services.common.channels import open_blocking_channel
    from services.common.config import ConfigError

    with pytest.raises(ConfigError, match="plaintext"):
        open_blocking_channel("10.1.2.3:50051", None, "secret-token")
    open_blocking_channel("127.0.0.1:50051", None, "secret-token").close()  # loopback: allowed
