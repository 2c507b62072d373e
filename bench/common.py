"""Pieces the benchmarks share: figures as {value, baseline, ratio, unit},
results merged into one JSON file, the multi-process stack, memory
readings and a Cnn14 checkpoint in the official format."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.cli.supervisor import Stack  # noqa: E402
from tests.test_e2e import free_port_block  # noqa: E402

CACHE = ROOT / "bench" / ".cache"


def figure(value: float, baseline: float, unit: str, note: str = "") -> dict:
    out = {"value": value, "baseline": baseline, "ratio": value / baseline if baseline else 0.0, "unit": unit}
    if note:
        out["note"] = note
    return out


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs, {platform.system().lower()}"


def merge_results(out: Path, figures: dict[str, dict], notes: dict[str, str] | None = None) -> dict:
    """Adds `figures` to those already in `out` (each benchmark script owns
    its own keys) and rewrites it."""
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc["machine"] = machine()
    doc.setdefault("figures", {}).update(figures)
    doc.setdefault("notes", {}).update(notes or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def cnn14_checkpoint() -> Path:
    """A Cnn14 checkpoint in the official format with seeded random weights
    (the real one is on Zenodo, out of reach here; speed does not depend on
    the values). Made once, then reused."""
    from tests.reference_models import save_checkpoint

    path = CACHE / "weights" / "Cnn14_mAP=0.431.pth"
    if not path.exists():
        tmp = path.with_suffix(".part")
        save_checkpoint(tmp)
        tmp.rename(path)
    return path


def stack_env(checkpoint: Path, **extra: str) -> dict[str, str]:
    return {
        "AUDIOSEARCH_MODELS": "panns-cnn14",
        "AUDIOSEARCH_CNN14_CHECKPOINT": str(checkpoint),
        "AUDIOSEARCH_CNN14_DOWNLOAD": "false",
        "AUDIOSEARCH_LOG_LEVEL": "WARNING",
        **extra,
    }


def start_stack(data_dir: Path, env: dict[str, str]) -> Stack:
    """`audiosearch serve`'s own supervisor code: four processes on loopback."""
    stack = Stack(data_dir, port=free_port_block(), env=env)
    stack.start(timeout=300)
    return stack


def peak_rss_mib(pid: int) -> float:
    """The process's resident-memory high-water mark (VmHWM): the true peak,
    not a sample of it."""
    return _status_kib(pid, "VmHWM:") / 1024


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS:") / 1024


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid`'s children, grandchildren, ... (Milvus Lite runs its own server
    process under the search service)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        out += map(int, children)
        todo += map(int, children)
    return out
