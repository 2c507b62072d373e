"""Multi-process end to end: `audiosearch serve` starts the four services
as real processes; the `audiosearch` CLI indexes, searches and deletes
through the gateway, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.cli.probes import wait_serving
from services.common.channels import LOCAL_SUBCHANNELS
from tests.metrics_page import scrape, total
from tests.sounds import encode, excerpt, sound


def free_port_block(n: int = 4) -> int:
    for _ in range(50):
        base = random.randint(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


def service_pids(data_dir: Path) -> dict[str, int]:
    """The children DATA_DIR/serve.pid names ({} without one)."""
    try:
        return dict(json.loads((data_dir / "serve.pid").read_text())["children"])
    except (OSError, ValueError, KeyError):
        return {}


def reap(process: subprocess.Popen[bytes], data_dir: Path) -> None:
    """Kills a serve started with start_new_session=True, its whole process
    group and any service serve.pid still names, and waits for them: a test
    that fails leaves nothing running."""
    listed = service_pids(data_dir)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its pgid is its pid
    process.wait()
    for name, pid in listed.items():
        with contextlib.suppress(OSError):
            if f"services.{name}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():  # not a reused pid
                os.kill(pid, signal.SIGKILL)


def wait_web(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.fixture
def serve(tmp_path: Path):  # type: ignore[no-untyped-def]
    port, metrics_port, http_port = free_port_block(), free_port_block(), free_port_block(1)
    env = {
        **os.environ,
        "AUDIOSEARCH_CNN14_DOWNLOAD": "false",
        "AUDIOSEARCH_CNN14_CHECKPOINT": str(tmp_path / "no-weights.pth"),
        "AUDIOSEARCH_GATEWAY": f"127.0.0.1:{port}",
    }
    processes = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "serve",
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--http-port",
                str(http_port),
            ],
            env=env,
            start_new_session=True,  # one process group to kill, whatever happens to serve
        )
        processes.append(process)
        wait_serving(f"127.0.0.1:{port}", 120, process)
        wait_web(http_port, 60)  # serve starts the web page last
        return process

    try:
        yield start, env, port, metrics_port, http_port
    finally:
        for process in processes:
            reap(process, tmp_path / "data")


def cli(env: dict[str, str], *args: str) -> tuple[int, object]:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, json.loads(result.stdout)


def check_health_and_reflection(port: int) -> None:
    names = ["gateway", "embedder", "search", "catalog"]
    for offset, name in enumerate(names):
        with grpc.insecure_channel(f"127.0.0.1:{port + offset}", options=[LOCAL_SUBCHANNELS]) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            services = {s.name for s in response.list_services_response.service}
            assert f"audiosearch.{name}.v1.{name.capitalize()}Service" in services


def check_metrics(base: int, indexed: int) -> None:
    """Each process's /metrics has the RPC series and its own."""
    pages = {name: scrape(base + offset) for offset, name in enumerate(["gateway", "embedder", "search", "catalog"])}
    for name, page in pages.items():
        service = f"audiosearch.{name}.v1.{name.capitalize()}Service"
        handled = page["grpc_server_handled_total"]
        assert total(handled, grpc_service=service) > 0, name
        assert "grpc_server_handling_seconds_bucket" in page and "process_resident_memory_bytes" in page
    gateway = pages["gateway"]["grpc_server_handled_total"]
    assert total(gateway, grpc_method="SearchAudio", grpc_code="OK") >= 3
    embedder = pages["embedder"]
    # fingerprint-v1 sees whole recordings, unbatched: the batched models' series are there, at zero.
    assert {labels["model"] for labels, _ in embedder["audiosearch_embedder_batch_size_count"]} >= {"spectral-v1"}
    assert total(embedder["audiosearch_embedder_queue_depth"], model="spectral-v1") == 0
    assert total(embedder["audiosearch_embedder_model_load_seconds"], model="fingerprint-v1") > 0
    assert total(pages["search"]["audiosearch_search_items"], library="e2e") == indexed
    assert total(pages["search"]["audiosearch_search_vectors"], library="e2e") > indexed
    catalog = pages["catalog"]["audiosearch_catalog_items"]
    assert total(catalog, library="e2e", state="ready") == indexed
    assert total(catalog, library="e2e", state="pending") == 0


def check_web(port: int, library: str, indexed: int) -> None:
    """The HTTP service `audiosearch serve` started answers for the same stack."""
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/v1/libraries/{library}/items", timeout=10) as response:
        assert len(json.load(response)["items"]) == indexed
    with urllib.request.urlopen(f"{base}/docs", timeout=10) as response:
        assert b"swagger-ui" in response.read()
    try:
        urllib.request.urlopen(f"{base}/v1/items/987654", timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and json.load(exc)["error"]["code"] == "NOT_FOUND"


def check_json_logs(folder: Path) -> None:
    """Every log line is a JSON object naming its service (the READY line
    is the supervisor's handshake on stdout, which shares the file)."""
    for name in ("gateway", "embedder", "search", "catalog", "web"):
        lines = [line for line in (folder / f"{name}.log").read_text().splitlines() if line and line[:6] != "READY "]
        assert lines, name
        for line in lines:
            doc = json.loads(line)
            assert doc["service"] == name and {"time", "level", "logger", "message"} <= set(doc)


def test_index_search_delete_through_real_processes(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start, env, port, metrics_port, http_port = serve
    process = start()
    check_health_and_reflection(port)

    folder = tmp_path / "library"
    (folder / "nested").mkdir(parents=True)
    formats = ["WAV", "FLAC", "OGG", "MP3", "WAV", "FLAC"]
    for seed, fmt in enumerate(formats):
        target = folder / ("nested" if seed % 2 else "") / f"sound{seed}.{fmt.lower()}"
        target.write_bytes(encode(sound(seed, seconds=4.0 + seed), fmt=fmt, channels=1 + seed % 2))
    (folder / "notes.txt").write_text("not audio, skipped by extension")
    broken = folder / "gone.wav"  # a dangling link: reported as failed, the rest still goes in
    broken.symlink_to(tmp_path / "nowhere.wav")

    code, report = cli(env, "index", str(folder), "--library", "e2e")
    assert code == 1, report  # one file failed
    assert (report["added"], report["existing"], report["model"]) == (6, 0, "fingerprint-v1")
    assert [(f["path"], f["code"]) for f in report["failed"]] == [(str(broken), "NOT_FOUND")]
    assert report["skipped"] == 1  # notes.txt
    broken.unlink()
    code, report = cli(env, "index", str(folder), "--library", "e2e")
    assert code == 0 and (report["added"], report["existing"], report["failed"]) == (0, 6, [])

    query = tmp_path / "query.wav"
    sf.write(query, excerpt(sound(3, seconds=7.0), 2.0, 5.0), 44100)
    code, results = cli(env, "search", str(query), "--library", "e2e", "--top-k", "3")
    assert code == 0
    assert results[0]["name"] == "sound3.mp3", results
    assert {"id", "name", "score", "source_uri", "item_range", "query_range"} <= set(results[0])
    assert results[0]["source_uri"] == str(folder / "nested" / "sound3.mp3")
    assert results[0]["item_range"][0] == pytest.approx(2.0, abs=0.5)  # the excerpt started at 2 s
    top_id = results[0]["id"]

    code, item = cli(env, "get", str(top_id))
    assert code == 0 and item["name"] == "sound3.mp3" and item["duration_seconds"] > 6.9
    code, items = cli(env, "ls", "--library", "e2e")
    assert code == 0 and len(items) == 6
    code, stats = cli(env, "stats")
    (lib,) = stats["libraries"]
    assert (int(lib["items"]), int(lib["indexed_items"])) == (6, 6)
    vectors = int(lib["vectors"])

    code, _ = cli(env, "delete", str(top_id))
    assert code == 0
    code, results = cli(env, "search", str(query), "--library", "e2e", "--top-k", "5")
    assert code == 0 and results == []  # the fingerprint finds no other source for this excerpt
    code, results = cli(env, "search", str(query), "--library", "e2e", "--top-k", "5", "--min-score", "-1")
    assert len(results) == 5 and top_id not in [r["id"] for r in results]
    code, stats = cli(env, "stats")
    (lib,) = stats["libraries"]
    assert (int(lib["items"]), int(lib["indexed_items"])) == (5, 5) and int(lib["vectors"]) < vectors

    check_metrics(metrics_port, indexed=5)
    check_web(http_port, "e2e", indexed=5)
    check_json_logs(tmp_path / "data" / "logs")

    # Bad input: a clear error, and the stack keeps serving.
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"definitely not a wave file" * 50)
    code, report = cli(env, "index", str(broken), "--library", "e2e")
    assert code == 1 and report["failed"][0]["code"] == "INVALID_ARGUMENT"
    code, error = cli(env, "search", str(query), "--library", "e2e", "--top-k", "1000")
    assert code == 1 and error["error"]["code"] == "INVALID_ARGUMENT"
    assert error["error"]["reason"] == "TOP_K_OUT_OF_RANGE"
    code, error = cli(env, "get", "987654")
    assert code == 1 and error["error"]["code"] == "NOT_FOUND"
    code, error = cli(env, "search", str(query), "--library", "nolib")
    assert code == 1 and error["error"]["code"] == "NOT_FOUND"

    # SIGTERM drains and stops every process.
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0

    # A restart finds everything where it was (released Milvus collections are loaded).
    start()
    code, results = cli(env, "search", str(query), "--library", "e2e", "--top-k", "5", "--min-score", "-1")
    assert code == 0 and len(results) == 5 and top_id not in [r["id"] for r in results]
    survivor = tmp_path / "survivor.wav"
    sf.write(survivor, excerpt(sound(4, seconds=8.0), 1.0, 4.0), 44100)
    code, results = cli(env, "search", str(survivor), "--library", "e2e")
    assert code == 0 and results[0]["name"] == "sound4.wav"
    code, stats = cli(env, "stats")
    assert int(stats["libraries"][0]["items"]) == 5


def test_cli_reports_an_unreachable_gateway(tmp_path: Path) -> None:
    env = {**os.environ, "AUDIOSEARCH_GATEWAY": f"127.0.0.1:{free_port_block(1)}"}
    code, error = cli(env, "stats")
    assert code == 1 and error["error"]["code"] == "UNAVAILABLE"
    assert "audiosearch serve" in error["error"]["message"]
