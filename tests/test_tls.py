"""mTLS between every service and its callers: certificates made with the
openssl CLI in the test, real servers on loopback, the gateway's channels
to the internal services, the CLI and `audiosearch serve`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from audiosearch.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from audiosearch.gateway.v1 import gateway_pb2 as pb
from audiosearch.gateway.v1 import gateway_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.catalog import __main__ as catalog_main
from services.catalog.config import CatalogConfig
from services.cli import main as cli
from services.cli.probes import wait_serving
from services.common import config as cfg
from services.common import server
from services.common.channels import LOCAL_SUBCHANNELS, client_credentials, open_channel
from services.common.config import ConfigError, TlsConfig
from services.embedder import __main__ as embedder_main
from services.embedder.config import EmbedderConfig
from services.gateway import __main__ as gateway_main
from services.gateway import access
from services.gateway.config import GatewayConfig
from services.search import __main__ as search_main
from services.search.config import SearchConfig
from tests.sounds import encode, sound
from tests.test_e2e import free_port_block
from tests.test_gateway import insert_stream, search_stream

OPENSSL = "/usr/bin/openssl"
CA_CONFIG = """
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path
    # One identity per process kind; each works as server and as client.
    service_cert: Path
    service_key: Path
    client_cert: Path
    client_key: Path
    # Signed by a CA the services do not trust.
    rogue_cert: Path
    rogue_key: Path

    def tls(self, cert: Path | None = None, key: Path | None = None, **more: object) -> dict[str, object]:
        """Config overrides for a process with this identity."""
        return {
            "tls_cert_file": str(cert or self.service_cert),
            "tls_key_file": str(key or self.service_key),
            "tls_ca_file": str(self.ca),
            **more,
        }


def openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    config = folder / "openssl.cnf"
    config.write_text(CA_CONFIG)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def ca(name: str) -> tuple[Path, Path]:
        key, cert = folder / f"{name}.key", folder / f"{name}.pem"
        openssl(
            "req", "-x509", "-config", config, *ec, "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}"
        )
        return cert, key

    def leaf(name: str, ca_cert: Path, ca_key: Path) -> tuple[Path, Path]:
        key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
        openssl("req", "-new", "-config", config, *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
            "-days", "2", "-extfile", config, "-extensions", "leaf",
        )  # fmt: skip
        return cert, key

    ca_cert, ca_key = ca("audiosearch-test-ca")
    rogue_ca, rogue_ca_key = ca("rogue-ca")
    service = leaf("service", ca_cert, ca_key)
    client = leaf("client", ca_cert, ca_key)
    rogue = leaf("rogue", rogue_ca, rogue_ca_key)
    return Pki(ca_cert, *service, *client, *rogue)


@dataclasses.dataclass
class TlsStack:
    servers: dict[str, server.RunningServer]

    def address(self, name: str) -> str:
        return self.servers[name].address

    async def stop(self) -> None:
        for name in ("gateway", "embedder", "search", "catalog"):
            await self.servers[name].stop()


async def start_tls_stack(tmp_path: Path, pki: Pki, **gateway_overrides: object) -> TlsStack:
    """The four services, each serving mTLS; the gateway's channels to the
    other three present its certificate."""
    base = {"data_dir": tmp_path / "data", "listen": "127.0.0.1:0", "shutdown_grace_seconds": 1.0, **pki.tls()}
    servers: dict[str, server.RunningServer] = {}
    try:
        config = cfg.load(CatalogConfig, environ={}, **base)
        servers["catalog"] = await server.start(await catalog_main.build(config), config)
        config = cfg.load(SearchConfig, environ={}, **base)
        servers["search"] = await server.start(await search_main.build(config), config)
        config = cfg.load(
            EmbedderConfig, environ={}, **base, cnn14_checkpoint=tmp_path / "none.pth", cnn14_download=False
        )
        servers["embedder"] = await server.start(await embedder_main.build(config), config)
        config = cfg.load(
            GatewayConfig,
            environ={},
            **base,
            embedder_addr=servers["embedder"].address,
            search_addr=servers["search"].address,
            catalog_addr=servers["catalog"].address,
            **gateway_overrides,
        )
        servers["gateway"] = await server.start(await gateway_main.build(config), config)
    except BaseException:
        for running in reversed(servers.values()):
            await running.stop()
        raise
    return TlsStack(servers)


@pytest.fixture
async def tls_stack(tmp_path: Path, pki: Pki):  # type: ignore[no-untyped-def]
    s = await start_tls_stack(tmp_path, pki)
    yield s
    await s.stop()


async def list_libraries(channel: grpc.aio.Channel) -> list[str]:
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    return [lib.name for lib in (await stub.ListLibraries(pb.ListLibrariesRequest(), timeout=30)).libraries]


async def expect_unavailable(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await catalog_pb2_grpc.CatalogServiceStub(channel).ListLibraries(catalog_pb2.ListLibrariesRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()


async def test_the_gateway_reaches_internal_services_over_mtls(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    client = TlsConfig(**pki.tls(pki.client_cert, pki.client_key))  # type: ignore[arg-type]
    async with open_channel(tls_stack.address("gateway"), tls=client) as channel:
        g = gateway_pb2_grpc.GatewayServiceStub(channel)
        await g.CreateLibrary(pb.CreateLibraryRequest(name="lib", model="spectral-v1"))
        data = encode(sound(3, seconds=3.0))
        inserted = await g.InsertAudio(insert_stream("lib", "a.wav", data))
        found = await g.SearchAudio(search_stream(pb.SearchParams(library="lib", top_k=3), data))
        assert found.results[0].item.id == inserted.item.id
        assert await list_libraries(channel) == ["lib"]


async def test_a_client_with_a_certificate_from_the_ca_gets_in(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    client = TlsConfig(**pki.tls(pki.client_cert, pki.client_key))  # type: ignore[arg-type]
    for name in ("catalog", "gateway"):
        async with open_channel(tls_stack.address(name), tls=client) as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    async with open_channel(tls_stack.address("catalog"), tls=client) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        assert list((await stub.ListLibraries(catalog_pb2.ListLibrariesRequest(), timeout=30)).libraries) == []


async def test_a_client_without_a_certificate_is_refused(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    only_ca = TlsConfig(tls_ca_file=str(pki.ca))  # verifies the server, presents nothing
    async with open_channel(tls_stack.address("catalog"), tls=only_ca) as channel:
        await expect_unavailable(channel)


async def test_a_certificate_from_another_ca_is_refused(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    rogue = TlsConfig(**pki.tls(pki.rogue_cert, pki.rogue_key))  # type: ignore[arg-type]
    async with open_channel(tls_stack.address("catalog"), tls=rogue) as channel:
        await expect_unavailable(channel)


async def test_a_plaintext_client_is_refused(tls_stack) -> None:  # type: ignore[no-untyped-def]
    for name in ("catalog", "search", "embedder", "gateway"):
        async with grpc.aio.insecure_channel(tls_stack.address(name), options=[LOCAL_SUBCHANNELS]) as channel:
            await expect_unavailable(channel)


async def test_a_client_that_does_not_trust_the_server_refuses_it(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    # The client's own CA is the rogue one: the server's certificate fails.
    wrong_ca = TlsConfig(
        tls_cert_file=str(pki.client_cert), tls_key_file=str(pki.client_key), tls_ca_file=str(pki.rogue_cert)
    )
    async with open_channel(tls_stack.address("catalog"), tls=wrong_ca) as channel:
        await expect_unavailable(channel)


async def test_server_name_override(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    # The certificate names 127.0.0.1 and localhost: "localhost" verifies, another name does not.
    port = tls_stack.servers["catalog"].port
    for name, ok in (("localhost", True), ("catalog.internal", False)):
        client = TlsConfig(**pki.tls(pki.client_cert, pki.client_key, tls_server_name=name))  # type: ignore[arg-type]
        async with open_channel(f"127.0.0.1:{port}", tls=client) as channel:
            if ok:
                await catalog_pb2_grpc.CatalogServiceStub(channel).ListLibraries(catalog_pb2.ListLibrariesRequest())
            else:
                await expect_unavailable(channel)


async def test_supervisor_health_polls_work_over_mtls(tls_stack, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    env = {
        "AUDIOSEARCH_TLS_CERT_FILE": str(pki.service_cert),
        "AUDIOSEARCH_TLS_KEY_FILE": str(pki.service_key),
        "AUDIOSEARCH_TLS_CA_FILE": str(pki.ca),
    }
    tls = cfg.load(TlsConfig, environ=env)  # what `audiosearch serve` reads from its environment
    for name in ("catalog", "search", "embedder", "gateway"):
        await asyncio.to_thread(wait_serving, tls_stack.address(name), 30, None, tls)


async def test_gateway_tls_without_client_certificates_and_a_token(tmp_path: Path, pki: Pki) -> None:
    """A gateway whose clients authenticate by token over TLS, while its own
    calls inside still use mTLS (AUDIOSEARCH_TLS_REQUIRE_CLIENT_CERT=false
    on the gateway only)."""
    tokens = tmp_path / "tokens.json"
    entry = {"name": "team", "token_sha256": access.hash_token("team-token-91d2"), "write": ["*"]}
    tokens.write_text(json.dumps({"principals": [entry]}))
    stack = await start_tls_stack(tmp_path, pki, tls_require_client_cert=False, auth_tokens_file=str(tokens))
    try:
        only_ca = TlsConfig(tls_ca_file=str(pki.ca))
        async with open_channel(stack.address("gateway"), tls=only_ca) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ListLibraries(pb.ListLibrariesRequest(), timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("authorization", "Bearer team-token-91d2"),)
            await stub.ListLibraries(pb.ListLibrariesRequest(), metadata=metadata, timeout=30)
        async with open_channel(stack.address("catalog"), tls=only_ca) as channel:
            await expect_unavailable(channel)  # the internal services still want a certificate
    finally:
        await stack.stop()


async def test_the_cli_speaks_mtls(tls_stack, pki: Pki, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", tls_stack.address("gateway"))
    monkeypatch.setenv("AUDIOSEARCH_TLS_CA_FILE", str(pki.ca))
    for name in ("AUDIOSEARCH_TLS_CERT_FILE", "AUDIOSEARCH_TLS_KEY_FILE", "AUDIOSEARCH_TLS_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert await asyncio.to_thread(cli.main, ["libraries", "--json"]) == 1  # no client certificate
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "UNAVAILABLE" and "AUDIOSEARCH_TLS_CA_FILE" in error["message"]

    monkeypatch.setenv("AUDIOSEARCH_TLS_CERT_FILE", str(pki.client_cert))
    monkeypatch.setenv("AUDIOSEARCH_TLS_KEY_FILE", str(pki.client_key))
    assert await asyncio.to_thread(cli.main, ["libraries", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    missing = pki.ca.parent / "missing.key"
    monkeypatch.setenv("AUDIOSEARCH_TLS_KEY_FILE", str(missing))
    assert await asyncio.to_thread(cli.main, ["libraries", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert "AUDIOSEARCH_TLS_KEY_FILE" in error["message"] and str(missing) in error["message"]


def test_tls_settings_are_checked_before_serving(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="AUDIOSEARCH_TLS_CERT_FILE is set but AUDIOSEARCH_TLS_KEY_FILE is not"):
        cfg.load(CatalogConfig, environ={"AUDIOSEARCH_TLS_CERT_FILE": str(pki.service_cert)})
    config = cfg.load(CatalogConfig, environ={}, **pki.tls(key=tmp_path / "nope.key"))
    with pytest.raises(ConfigError, match="AUDIOSEARCH_TLS_KEY_FILE: cannot read"):
        server.server_credentials(config)
    with pytest.raises(ConfigError, match="AUDIOSEARCH_TLS_CA_FILE"):
        client_credentials(TlsConfig(tls_ca_file=str(tmp_path / "nope.pem")))
    assert client_credentials(TlsConfig()) is None


def test_loopback_detection() -> None:
    for listen in ("127.0.0.1:50051", "localhost:1", "[::1]:50051", "127.0.0.1:0"):
        assert server.is_loopback(listen), listen
    for listen in ("0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "gateway:50051"):
        assert not server.is_loopback(listen), listen


def test_audiosearch_serve_with_mtls_and_tokens(tmp_path: Path, pki: Pki) -> None:
    """The real multi-process stack: `audiosearch serve` polls health over
    mTLS, the CLI indexes and lists with a client certificate and a token."""
    port = free_port_block()
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[principals]]\nname = "ci"\ntoken_sha256 = "{access.hash_token("ci-3f9a")}"\nwrite = ["*"]\n')
    env = {
        **os.environ,
        "AUDIOSEARCH_CNN14_DOWNLOAD": "false",
        "AUDIOSEARCH_CNN14_CHECKPOINT": str(tmp_path / "no-weights.pth"),
        "AUDIOSEARCH_GATEWAY": f"127.0.0.1:{port}",
        "AUDIOSEARCH_AUTH_TOKENS_FILE": str(tokens),
        "AUDIOSEARCH_TLS_CERT_FILE": str(pki.service_cert),
        "AUDIOSEARCH_TLS_KEY_FILE": str(pki.service_key),
        "AUDIOSEARCH_TLS_CA_FILE": str(pki.ca),
    }
    env.pop("AUDIOSEARCH_TOKEN", None)
    command = [sys.executable, "-m", "services.cli.main"]
    serve = subprocess.Popen([*command, "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)], env=env)
    try:
        tls = cfg.load(TlsConfig, environ=env)
        wait_serving(f"127.0.0.1:{port}", 120, serve, tls)  # serve starts the gateway last

        def run(*args: str, **extra: str) -> tuple[int, object]:
            result = subprocess.run(
                [*command, *args, "--json"], env={**env, **extra}, capture_output=True, text=True, timeout=300
            )
            return result.returncode, json.loads(result.stdout)

        clip = tmp_path / "clip.wav"
        clip.write_bytes(encode(sound(7, seconds=3.0)))
        code, report = run("index", str(clip), "--library", "secure")
        assert code == 1 and report["error"]["code"] == "UNAUTHENTICATED"  # type: ignore[index]
        code, report = run("index", str(clip), "--library", "secure", AUDIOSEARCH_TOKEN="ci-3f9a")
        assert code == 0 and report["added"] == 1, report  # type: ignore[index]
        code, libraries = run("libraries", "--token", "ci-3f9a")
        assert code == 0 and [lib["name"] for lib in libraries] == ["secure"]  # type: ignore[union-attr,index]
        with grpc.insecure_channel(
            f"127.0.0.1:{port + 3}", options=[LOCAL_SUBCHANNELS]
        ) as channel:  # the catalog refuses plaintext
            with pytest.raises(grpc.RpcError) as info:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    finally:
        serve.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    assert serve.returncode == 0
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "data" / "logs").glob("*.log"))
    assert "ci-3f9a" not in logs and access.hash_token("ci-3f9a") not in logs
    assert "(mTLS)" in logs
