"""`make fault-schedule`: the stack under a schedule of kills, from outside,
through the CLI only, as an outside tester runs it.

1. `audiosearch serve` on a fresh data dir; `audiosearch index` of FILES
   recordings (real ones from a folder, else generated) while each of
   search, catalog, embedder, gateway and web is SIGKILLed at a random
   moment (`serve` restarts each).
2. A second `index` of the same folder, during which the whole process group
   of `serve` is SIGKILLed (a power cut).
3. `serve` again on the same data dir, `index` once more.
4. Checks: `ls`, `stats` and `repair --dry-run` agree exactly (FILES distinct
   items, all indexed with vectors, none pending or duplicated, nothing to
   repair, with no repair run by hand), excerpts of indexed files find their
   source first, and every failure the CLI saw carried a retryable code.

Exits 1 on any failed check; prints what it did and saw."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sounds import music  # noqa: E402
from tests.test_e2e import free_port_block  # noqa: E402
from tests.test_faults import ServiceProcesses  # noqa: E402

RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"}
AUDIO = {".flac", ".wav", ".ogg"}


def cli(env: dict[str, str], *args: str, timeout: float = 900) -> tuple[int, object]:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        return out.returncode, json.loads(out.stdout)
    except json.JSONDecodeError:
        return out.returncode, {"error": {"code": "NO_JSON", "message": (out.stdout + out.stderr)[-500:]}}


def serve(env: dict[str, str], data: Path, port: int, http_port: int) -> subprocess.Popen[bytes]:
    log = (data.parent / "serve.out").open("ab")
    command = [sys.executable, "-m", "services.cli.main", "serve", "--data-dir", str(data), "--port", str(port)]
    command += ["--http-port", str(http_port), "--metrics-port", "0"]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    for _ in range(600):
        if cli(env, "libraries", timeout=30)[0] == 0:
            return process
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}; see {data.parent / 'serve.out'}")
        time.sleep(0.5)
    raise RuntimeError("serve did not come up")


def failures(doc: object) -> list[dict]:
    return list(doc.get("failed", [])) if isinstance(doc, dict) else []


def corpus(folder: Path | None, work: Path, count: int) -> Path:
    files = work / "files"
    files.mkdir()
    sources = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO) if folder else []
    for n in range(count):
        if n < len(sources):
            shutil.copy(sources[n], files / f"{n:03d}-{sources[n].name}")
        else:
            sf.write(files / f"gen{n:03d}.wav", music(5000 + n, 8.0), 22050)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--corpus", type=Path, default=None, help="folder of real recordings to take files from")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fault-schedule-"))
    data = work / "data"
    port, http_port = free_port_block(), free_port_block(1)
    env = {
        **os.environ,
        "AUDIOSEARCH_GATEWAY": f"127.0.0.1:{port}",
        "AUDIOSEARCH_CNN14_DOWNLOAD": "false",
        "AUDIOSEARCH_CNN14_CHECKPOINT": str(work / "no-weights.pth"),
    }
    files = corpus(args.corpus, work, args.files)
    print(f"{args.files} files in {files}; data in {data}", flush=True)
    seen_codes: list[str] = []
    problems: list[str] = []
    supervisor = serve(env, data, port, http_port)
    try:
        index = [sys.executable, "-m", "services.cli.main", "index", str(files), "--library", "faults", "--json"]
        run = subprocess.Popen(index, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for name in rng.sample(["search", "catalog", "embedder", "gateway", "web"], 5):
            time.sleep(rng.uniform(0.5, 2.5))
            if run.poll() is not None:
                problems.append(f"the first index ended before {name} was killed")
                break
            pid = ServiceProcesses(supervisor.pid).pids().get(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
                print(f"killed {name} (pid {pid})", flush=True)
        first = json.loads(run.communicate(timeout=1800)[0] or "{}")
        seen_codes += [f["code"] for f in failures(first)]
        print(f"first index: {first.get('added')} added, {len(failures(first))} failed", flush=True)

        run = subprocess.Popen(index, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(rng.uniform(2, 6))
        os.killpg(supervisor.pid, signal.SIGKILL)  # the power cut: serve and every child at once
        supervisor.wait()
        run.kill()
        run.wait()
        print("killed the whole process group during the second index", flush=True)
        time.sleep(1)
    except BaseException:
        os.killpg(supervisor.pid, signal.SIGKILL)
        raise

    supervisor = serve(env, data, port, http_port)
    try:
        code, again = cli(env, "index", str(files), "--library", "faults", timeout=1800)
        seen_codes += [f["code"] for f in failures(again)]
        if code != 0:
            problems.append(f"the index after the restart failed: {failures(again)[:3]}")
        code, items = cli(env, "ls", "--library", "faults")
        items = items if isinstance(items, list) else items.get("items", []) if isinstance(items, dict) else []
        code, stats = cli(env, "stats")
        lib = next((s for s in stats.get("libraries", []) if s.get("name") == "faults"), {}) if code == 0 else {}
        code, repair = cli(env, "repair", "--dry-run")
        names = {i["name"] for i in items}
        print(f"ls: {len(items)} items ({len(names)} distinct names); stats: {json.dumps(lib)}")
        print(f"repair --dry-run: {json.dumps(repair)[:500]}")
        if len(items) != args.files or len(names) != args.files or len({i["sha256"] for i in items}) != args.files:
            problems.append(f"ls lists {len(items)} items, {len(names)} distinct names; expected {args.files}")
        count = {k: int(lib.get(k, 0) or 0) for k in ("items", "indexed_items", "pending_items")}
        if (count["items"], count["indexed_items"], count["pending_items"]) != (args.files, args.files, 0):
            problems.append(f"stats: {count}")
        if not isinstance(repair, dict) or repair.get("actions"):
            problems.append(f"repair --dry-run found work: {repair}")
        long_enough = [p for p in sorted(files.iterdir()) if sf.info(p).duration >= 6.0]
        for path in rng.sample(long_enough, min(5, len(long_enough))):
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            start = len(audio) // 3
            clip = work / "clip.wav"
            sf.write(clip, audio[start : start + 4 * rate] * 0.7, rate)  # 4 s from a third in, -3 dB
            code, found = cli(env, "search", str(clip), "--library", "faults", "--top-k", "3")
            top = found[0]["name"] if code == 0 and isinstance(found, list) and found else None
            print(f"excerpt of {path.name}: first result {top}")
            if top != path.name:
                problems.append(f"an excerpt of {path.name} found {top}")
    finally:
        os.killpg(supervisor.pid, signal.SIGTERM)
        supervisor.wait(60)
    bad = sorted({c for c in seen_codes if c not in RETRYABLE})
    print(f"failure codes the CLI saw: {sorted(set(seen_codes)) or 'none'}")
    if bad:
        problems.append(f"non-retryable failure codes: {bad}")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("fault schedule: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
