"""`make demo`: start the stack on the embedded defaults (Milvus Lite,
SQLite), index real sounds, search with a modified excerpt of one of them,
print the ranked results and stop. Exits non-zero unless the excerpt's
source ranks first."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.cli.stack_errors import StackError  # noqa: E402
from services.cli.supervisor import Stack  # noqa: E402
from services.embedder.audio import resample  # noqa: E402


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=env, text=True, capture_output=True)


def make_excerpt(source: Path, target: Path) -> tuple[float, float]:
    """The middle 40% of `source`, mixed to mono, 6 dB quieter, at 22.05 kHz:
    a re-upload that is shorter, re-encoded and re-levelled."""
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    start, end = int(len(audio) * 0.3), int(len(audio) * 0.7)
    clip = audio[start:end].mean(axis=1) * 0.5
    sf.write(target, resample(clip, rate, 22050), 22050)
    return start / rate, end / rate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", default="samples/sonic-pi")
    parser.add_argument("--data-dir", default=".demo")
    parser.add_argument("--port", type=int, default=50061, help="gateway port; the others use the next three")
    args = parser.parse_args()
    samples = Path(args.samples).resolve()
    files = sorted(samples.glob("*.flac"))
    if not files:
        print(f"no samples in {samples}; run `make samples`", file=sys.stderr)
        return 1
    work = Path(args.data_dir).resolve()
    # The demo stays offline: Cnn14 is used if its weights are already in the
    # cache, else the weights-free spectral-v1 model.
    env = {**os.environ, "AUDIOSEARCH_CNN14_DOWNLOAD": os.environ.get("AUDIOSEARCH_CNN14_DOWNLOAD", "false")}
    stack = Stack(work / "data", port=args.port, env=env)
    env["AUDIOSEARCH_GATEWAY"] = stack.addresses["gateway"]
    try:
        # Before the old data goes: never index into, or wipe under, a stack this demo did not start.
        stack.preflight()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        print(f"starting the stack (gateway {stack.addresses['gateway']}, data in {stack.data_dir}) ...", flush=True)
        stack.start()
    except StackError as exc:
        print(f"demo: {exc}\n(pick other ports with `make demo DEMO_PORT=N`)", file=sys.stderr)
        return 1
    try:
        began = time.monotonic()
        index = cli("index", str(samples), "--library", "demo", "--json", env=env)
        if index.returncode != 0:
            print(index.stdout, index.stderr, file=sys.stderr)
            return 1
        report = json.loads(index.stdout)
        print(
            f"indexed {report['added']} sounds from {samples} with {report['model']} "
            f"in {time.monotonic() - began:.1f} s ({len(report['failed'])} failed)"
        )
        again = json.loads(cli("index", str(samples), "--library", "demo", "--json", env=env).stdout)
        print(f"indexing the same folder again: {again['added']} added, {again['existing']} already indexed")

        source = max(files, key=lambda f: sf.info(f).duration)  # the longest sound
        excerpt = work / "excerpt.wav"
        start, end = make_excerpt(source, excerpt)
        print(f"\nquery: {source.name} from {start:.1f} s to {end:.1f} s, mono, -6 dB, resampled to 22.05 kHz\n")
        search = cli("search", str(excerpt), "--library", "demo", "--top-k", "5", env=env)
        print(search.stdout or search.stderr)
        results = json.loads(cli("search", str(excerpt), "--library", "demo", "--top-k", "5", "--json", env=env).stdout)
        print(cli("stats", env=env).stdout)
        if not results or results[0]["name"] != source.name:
            print(f"FAIL: expected {source.name} first", file=sys.stderr)
            return 1
        print(f"OK: the excerpt's source {source.name} ranks first (score {results[0]['score']:.3f})")
        return 0
    finally:
        stack.stop()
        print("stack stopped")


if __name__ == "__main__":
    sys.exit(main())
