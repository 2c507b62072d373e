"""bench/results/latest.json as a markdown table (`make bench` writes both)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def render(doc: dict) -> str:
    lines = [
        f"Machine: {doc.get('machine', 'unknown')}. Each ratio is value / baseline, both measured in the same run.",
        "",
        "| figure | value | baseline | ratio | unit | what |",
        "|---|---|---|---|---|---|",
    ]
    for key, f in doc.get("figures", {}).items():
        baseline = number(f["baseline"]) if "baseline" in f else "—"
        ratio = f"{f['ratio']:.2f}x" if "ratio" in f else "—"
        lines.append(f"| `{key}` | {number(f['value'])} | {baseline} | {ratio} | {f['unit']} | {f.get('note', '')} |")
    return "\n".join(lines) + "\n"


def main(source: str, target: str) -> int:
    Path(target).write_text(render(json.loads(Path(source).read_text())))
    print(Path(target).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
