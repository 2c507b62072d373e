"""Offline checks of k8s/: strict schema validation, no cluster needed.

1. Every manifest file under k8s/ is validated with kubernetes-validate
   --strict (unknown fields are errors). Skipped, and said so: kustomization
   files, and the patch files they name (partial objects by design; they are
   checked as part of the rendered overlay).
2. Every kustomization (base, each overlay) is rendered with `kubectl
   kustomize` (or `kustomize build`) and every rendered document is
   validated the same way. Without a renderer this step is skipped with a
   clear notice (exit status unaffected unless --require-render).
3. Each file must be used by some kustomization (an orphan would be
   validated but never deployed).

Kinds without a bundled schema are errors, except custom resources of the
API groups in CUSTOM_RESOURCE_GROUPS (milvus.io: the Milvus CR), which are
only a warning: the CRD's schema is not available offline.

    .venv/bin/python scripts/k8s_check.py [--kubernetes-version 1.34 ...] [--require-render]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# A current release and the newest schemas kubernetes-validate ships.
DEFAULT_VERSIONS = ("1.34", kv.major_minor(kv.latest_version()))
CUSTOM_RESOURCE_GROUPS = ("milvus.io",)


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: int = 0

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"ERROR {msg}")

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"WARN  {msg}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def name_of(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')}/{ns}{meta.get('name', '?')}"


def is_object(doc: object) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def validate_doc(doc: dict, where: str, versions: list[str], report: Report) -> None:
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    for version in versions:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(top)"
            report.error(f"{where}: {name_of(doc)} fails Kubernetes {version} (strict) at {path}: {exc.message}")
            return
        except kv.SchemaNotFoundError:
            if group in CUSTOM_RESOURCE_GROUPS:
                report.warn(f"{where}: {name_of(doc)} is a custom resource ({doc['apiVersion']}): no schema offline")
            else:
                report.error(f"{where}: {name_of(doc)}: no schema for {doc['apiVersion']} in Kubernetes {version}")
            return
    report.checked += 1


def kustomizations() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.name in KUSTOMIZATION_NAMES)


def referenced_files(kfile: Path) -> tuple[set[Path], set[Path]]:
    """(resource files, patch files) a kustomization names directly."""
    spec = yaml.safe_load(kfile.read_text()) or {}
    base = kfile.parent
    resources: set[Path] = set()
    for entry in spec.get("resources", []) + spec.get("components", []):
        target = (base / entry).resolve()
        if target.is_file():
            resources.add(target)
    patches: set[Path] = set()
    for entry in spec.get("patches", []) + spec.get("patchesStrategicMerge", []):
        path = entry.get("path") if isinstance(entry, dict) else entry
        if path:
            patches.add((base / path).resolve())
    for entry in spec.get("patchesJson6902", []):
        if entry.get("path"):
            patches.add((base / entry["path"]).resolve())
    return resources, patches


def check_files(versions: list[str], report: Report) -> None:
    used: set[Path] = set()
    patches: set[Path] = set()
    for kfile in kustomizations():
        r, p = referenced_files(kfile)
        used |= r
        patches |= p
    for path in sorted(K8S.rglob("*.y*ml")):
        if path.name in KUSTOMIZATION_NAMES:
            continue
        if path.resolve() in patches:
            print(f"skip  {rel(path)}: a kustomize patch, validated in the rendered overlay")
            continue
        if path.resolve() not in used:
            report.error(f"{rel(path)}: not named by any kustomization under k8s/")
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            report.error(f"{rel(path)}: not valid YAML: {exc}")
            continue
        for doc in docs:
            if not is_object(doc):
                report.error(f"{rel(path)}: a document without apiVersion/kind")
                continue
            validate_doc(doc, rel(path), versions, report)


def renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(cmd: list[str], directory: Path) -> list[dict]:
    done = subprocess.run([*cmd, str(directory)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"exit status {done.returncode}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def check_renders(versions: list[str], report: Report, require: bool) -> None:
    cmd = renderer()
    if cmd is None:
        msg = "neither kubectl nor kustomize is on PATH: the overlays were NOT rendered or validated"
        if require:
            report.error(msg)
        else:
            print(f"NOTE  {msg} (only the raw files were)")
        return
    for kfile in kustomizations():
        where = rel(kfile.parent) + " (rendered)"
        try:
            docs = render(cmd, kfile.parent)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report.error(f"{where}: {' '.join(cmd)} failed: {exc}")
            continue
        print(f"render {rel(kfile.parent)}: {len(docs)} objects")
        for doc in docs:
            validate_doc(doc, where, versions, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "-k",
        "--kubernetes-version",
        action="append",
        help=f"validate against this version (repeatable; default {' and '.join(DEFAULT_VERSIONS)}; "
        f"shipped: {kv.all_versions()[0]}..{kv.latest_version()})",
    )
    p.add_argument("--require-render", action="store_true", help="fail when no kustomize renderer is available")
    args = p.parse_args(argv)
    versions = list(dict.fromkeys(args.kubernetes_version or DEFAULT_VERSIONS))
    report = Report()
    print(f"kubernetes-validate {kv.__version__}, strict, against Kubernetes {', '.join(versions)}")
    check_files(versions, report)
    check_renders(versions, report, args.require_render)
    print(
        f"{report.checked} objects valid, {len(report.warnings)} warnings (custom resources, no schema offline), "
        f"{len(report.errors)} errors"
    )
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
