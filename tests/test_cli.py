"""What a new user meets first: the `audiosearch` CLI's exit statuses,
usage errors, defaults, Ctrl-C, a closed pipe, and messages that name
the real cause. The stack tests run the CLI in process and, for signals
and pipes, as a real process against the running stack."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from audiosearch.gateway.v1 import gateway_pb2 as pb

from services.cli import main as cli
from services.cli.output import numbers
from services.embedder.models.table import MODELS
from tests.sounds import encode, excerpt, sound

# --- no service needed -----------------------------------------------------------------------------------------


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"audiosearch {importlib.metadata.version('audiosearch')}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["monitor", "-", "--library", "songs"], "--rate"),
        (["search"], "give a FILE"),
        (["search", "clip.wav", "--like", "3"], "not both"),
        (["ls", "--all", "--library", "x"], "not allowed with"),
        (["index", "a.wav", "--jobs", "0"], "--jobs"),
        (["ls", "--limit", "-1"], "--limit"),
        (["get", "notanumber"], "invalid int"),  # argparse's own
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_every_usage_error_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        cli.main(argv)
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: audiosearch" in err


def test_the_help_says_the_exit_statuses_defaults_and_the_token_risk(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for status in ("0 done", "1 the service", "2 a usage error", "130 interrupted", "141 stdout closed"):
        assert status in text
    assert 'index, search, ls, monitor and reindex work on the library "default"' in text
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "visible to other users in `ps`" in text and "AUDIOSEARCH_TOKEN" in text
    assert "with --like: the item's own library" in text


def test_json_prints_int64_ids_and_counts_as_numbers() -> None:
    doc = {"id": "12", "name": "34", "items": "5", "tags": [{"item_id": "-7", "label": "8"}], "vectors": 9}
    assert numbers(doc) == {"id": 12, "name": "34", "items": 5, "tags": [{"item_id": -7, "label": "8"}], "vectors": 9}


def test_ctrl_c_in_any_command_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("services.cli.args.cmd_get", interrupted)
    assert cli.main(["get", "1"]) == 130
    out = capsys.readouterr()
    assert out.err == "interrupted\n" and "Traceback" not in out.err
    assert cli.main(["get", "1", "--json"]) == 130
    doc = json.loads(capsys.readouterr().out)  # --json: still one document
    assert doc == {"error": {"code": "CANCELLED", "message": "interrupted"}, "interrupted": True}


# --- against a running stack -----------------------------------------------------------------------------------


@pytest.fixture
def run(stack, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """audiosearch(*args) in process: (exit status, stdout, stderr)."""
    monkeypatch.setenv("AUDIOSEARCH_GATEWAY", stack.address("gateway"))
    monkeypatch.delenv("AUDIOSEARCH_TOKEN", raising=False)

    async def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def write(path: Path, seed: int, seconds: float = 3.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(sound(seed, seconds)))
    return path


async def test_a_missing_path_is_a_failed_entry_and_the_rest_goes_in(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    real = write(tmp_path / "a.wav", 1)
    code, out, _ = await run("index", str(tmp_path / "gone.wav"), str(real), "--model", "spectral-v1", "--json")
    doc = json.loads(out)
    assert code == 1  # an entry failed
    assert (doc["added"], doc["failed"]) == (
        1,
        [{"path": str(tmp_path / "gone.wav"), "code": "NOT_FOUND", "message": "no such file or directory"}],
    )
    code, _, err = await run("index", str(tmp_path / "gone.wav"), str(real), "--model", "spectral-v1")
    assert code == 1 and "1 already indexed" in err and "failed: " + str(tmp_path / "gone.wav") in err
    (item,) = json.loads((await run("ls", "--json"))[1])
    assert isinstance(item["id"], int) and item["library"] == "default"


async def test_ls_lists_the_default_library_unless_told_otherwise(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = await run("ls", "--json")  # no library "default" yet: say where to look
    error = json.loads(out)["error"]
    assert code == 1 and error["code"] == "NOT_FOUND" and "ls --all" in error["message"]
    await run("index", str(write(tmp_path / "d.wav", 1)), "--model", "spectral-v1")
    await run("index", str(write(tmp_path / "o.wav", 2)), "--library", "other", "--model", "spectral-v1")

    async def names(*args: str) -> list[str]:
        code, out, err = await run("ls", *args, "--json")
        assert code == 0, err
        return sorted(d["name"] for d in json.loads(out))

    assert await names() == ["d.wav"]  # was: every library
    assert await names("--library", "other") == ["o.wav"]
    assert await names("--all") == ["d.wav", "o.wav"]


async def test_libraries_and_stats_say_what_each_model_is_for(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The purpose is the model's own (its ModelInfo), through the gRPC API.
    spectral = MODELS["spectral-v1"].info
    assert spectral.purpose and spectral.score_meaning
    await run("index", str(write(tmp_path / "d.wav", 1)), "--library", "sp", "--model", "spectral-v1")
    code, out, err = await run("libraries")
    assert code == 0, err
    assert f"sp: spectral-v1 ({spectral.dim}-d): {spectral.purpose}" in out.splitlines()
    code, out, err = await run("stats")
    assert code == 0, err
    assert f"    {spectral.purpose}" in out.splitlines() and f"    score: {spectral.score_meaning}" in out.splitlines()
    models = {m["name"]: m for m in json.loads((await run("stats", "--json"))[1])["models"]}
    assert (models["spectral-v1"]["purpose"], models["spectral-v1"]["score_meaning"]) == (
        spectral.purpose,
        spectral.score_meaning,
    )
    assert all(m["purpose"] == MODELS[name].info.purpose for name, m in models.items())


async def test_search_like_finds_the_items_library_by_itself(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        write(tmp_path / "lib" / f"s{seed}.wav", seed)
    code, out, err = await run("index", str(tmp_path / "lib"), "--library", "other", "--model", "spectral-v1", "--json")
    assert code == 0, err
    (first, *_) = json.loads((await run("ls", "--library", "other", "--json"))[1])
    code, out, err = await run("search", "--like", str(first["id"]), "--min-score", "-1", "--json")
    assert code == 0, err  # no --library: not "default", the item's own
    results = json.loads(out)
    assert len(results) == 2 and first["id"] not in [r["id"] for r in results]
    assert all(isinstance(r["id"], int) and r["library"] == "other" for r in results)


async def test_an_empty_result_names_its_cause(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        write(tmp_path / "lib" / f"s{seed}.wav", seed, seconds=6.0)
    code, _, err = await run("index", str(tmp_path / "lib"), "--model", "fingerprint-v1")
    assert code == 0, err

    short = tmp_path / "short.wav"  # an excerpt of an indexed sound, under fingerprint-v1's 0.5 s
    sf.write(short, excerpt(sound(1, 6.0), 2.0, 2.26), 44100)
    code, out, _ = await run("search", str(short), "--json")
    error = json.loads(out)["error"]
    assert code == 1 and error["code"] == "INVALID_ARGUMENT" and error["reason"] == "AUDIO_TOO_SHORT"
    assert "0.26 s long" in error["message"] and "fingerprint-v1 needs at least 0.5 s" in error["message"]
    text = tmp_path / "notes.wav"  # --json names the reason to branch on (docs/clients.md)
    text.write_text("not audio at all\n" * 20)
    code, out, err = await run("search", str(text), "--json")
    error = json.loads(out)["error"]
    assert code == 1 and (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "NOT_AUDIO"), err
    code, out, err = await run("search", str(text))
    assert code == 1 and "NOT_AUDIO" not in out + err

    clip = tmp_path / "clip.wav"
    sf.write(clip, excerpt(sound(1, 6.0), 1.0, 4.0), 44100)
    code, out, _ = await run("search", str(clip), "--tag", "nosuchtag")
    assert code == 0 and "no item in library 'default' has the tag 'nosuchtag'" in out
    assert "threshold" not in out

    other = tmp_path / "other.wav"  # a sound that is in no library: the fingerprint finds no copy
    sf.write(other, sound(99, 4.0), 44100)
    code, out, _ = await run("search", str(other))
    assert code == 0 and "copies and excerpts of the same recording, not similar sounds" in out
    assert "spectral-v1 (offline)" in out and "PANNs model (needs weights" in out
    code, out, _ = await run("search", str(other), "--json")
    assert code == 0 and json.loads(out) == []


def cli_env(stack: Any) -> dict[str, str]:
    env = {**os.environ, "AUDIOSEARCH_GATEWAY": stack.address("gateway")}
    env.pop("AUDIOSEARCH_TOKEN", None)
    return env


async def count(stack: Any, library: str) -> int:
    response = await stack.gateway.ListAudio(pb.ListAudioRequest(library=library, page_size=1000))
    return len(response.items)


async def interrupt_index(stack: Any, folder: Path, *flags: str) -> tuple[int, str, str]:
    """Starts `audiosearch index FOLDER` as a process, sends it SIGINT once
    a few files are in: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "index",
        str(folder),
        "--library",
        "many",
        "--model",
        "spectral-v1",
        *flags,
        env=cli_env(stack),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    before = (
        await count(stack, "many") if (await stack.gateway.ListLibraries(pb.ListLibrariesRequest())).libraries else 0
    )
    for _ in range(600):
        await asyncio.sleep(0.05)
        if process.returncode is not None:
            break
        try:
            if await count(stack, "many") >= before + 3:
                break
        except Exception:  # the library is not created yet
            continue
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ctrl_c_during_index_prints_the_summary_so_far_and_a_rerun_continues(  # type: ignore[no-untyped-def]
    stack, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    for seed in range(60):
        write(folder / f"s{seed:03d}.wav", seed, seconds=2.0)

    code, out, err = await interrupt_index(stack, folder, "--json", "--jobs", "1")
    assert code == 130, err
    assert "Traceback" not in err
    doc = json.loads(out)  # exactly one JSON document
    assert doc["interrupted"] is True and doc["total"] == 60 and 3 <= doc["done"] < 60
    assert doc["added"] + doc["existing"] + len(doc["failed"]) == doc["done"]

    code, out, err = await interrupt_index(stack, folder)  # 4 uploads at a time: those in flight are cancelled
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted: " in err and " of 60 done; run the same command again to continue" in err

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "index", str(folder), "--library", "many", "--json",
        env=cli_env(stack), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err
    doc = json.loads(out)
    assert doc["added"] + doc["existing"] == 60 and doc["existing"] >= 3 and doc["failed"] == []
    assert await count(stack, "many") == 60  # no duplicates


async def test_a_closed_pipe_ends_quietly(run, stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        write(tmp_path / "lib" / f"s{seed}.wav", seed)
    await run("index", str(tmp_path / "lib"), "--model", "spectral-v1")
    for flags in ([], ["--json"]):
        read, written = os.pipe()
        os.close(read)  # the reader has gone before the first line, as `| head -0` would
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "ls", *flags,
            env=cli_env(stack), stdout=written, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(written)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 141 and err == b"", err
    shell = f"{sys.executable} -m services.cli.main ls | head -1"  # the everyday case
    process = await asyncio.create_subprocess_shell(
        shell, env=cli_env(stack), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0 and err == b"" and out.decode().count("\n") == 1
