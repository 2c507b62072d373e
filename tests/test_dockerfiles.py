"""The images' promises, checked without a Docker engine: multi-stage,
non-root, pinned bases and dependencies, a CPU and a CUDA embedder, no
weights in the build context, and each image's dependencies covering what
its service imports (and no torch outside the embedder), from the
service's extra in pyproject.toml, pinned as requirements.txt pins it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata as md
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.common.config import env_name

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
SERVICES = ("gateway", "embedder", "search", "catalog", "web")
# Final stages one builds (--target), per Dockerfile; else the last stage.
TARGETS = {"embedder": ("cpu", "cuda")}
# Loaded by SQLAlchemy from the URL's dialect, never imported by name.
DRIVERS = {"catalog": {"psycopg", "pymysql"}}


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(ARG defaults, stages) of a Dockerfile; continuations joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else str(len(stages))
            stages.append(Stage(name, parts[0]))
            continue
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip().strip('"')
        assert stages, f"{path.name}: {keyword} before FROM"
        stages[-1].instructions.append((keyword, rest))
    return args, stages


def dockerfile(name: str) -> Path:
    return DOCKER / f"{name}.Dockerfile"


def targets(name: str, stages: list[Stage]) -> list[Stage]:
    by_name = {s.name: s for s in stages}
    return [by_name[t] for t in TARGETS.get(name, ())] or [stages[-1]]


def chain(stage: Stage, stages: list[Stage]) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages}
    out = [stage]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def built_from(stage: Stage, stages: list[Stage]) -> list[Stage]:
    """Every stage whose work ends up in `stage`: its FROM chain and the
    stages it copies from, recursively."""
    by_name = {s.name: s for s in stages}
    out: list[Stage] = []
    todo = [stage]
    while todo:
        current = todo.pop()
        if current in out:
            continue
        out.append(current)
        todo += chain(current, stages)[1:]
        for keyword, rest in current.instructions:
            if keyword == "COPY" and (m := re.search(r"--from=(\S+)", rest)) and m.group(1) in by_name:
                todo.append(by_name[m.group(1)])
    return out


def run_commands(stages: list[Stage]) -> list[str]:
    cmds = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword == "RUN":
                cmds += [c.strip() for c in re.split(r"&&|;", rest)]
    return cmds


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_is_multi_stage_and_final_stages_copy_a_built_venv(name: str) -> None:
    _, stages = parse(dockerfile(name))
    assert len(stages) >= 2, "one stage builds, another runs"
    for target in targets(name, stages):
        copies = [rest for keyword, rest in target.instructions if keyword == "COPY" and "--from=" in rest]
        assert copies, f"{target.name}: copies nothing from a builder stage"


@pytest.mark.parametrize("name", SERVICES)
def test_base_images_are_pinned_by_exact_tag(name: str) -> None:
    _, stages = parse(dockerfile(name))
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue
        assert "$" not in stage.base, f"{stage.base}: resolved at build time"
        if "@sha256:" in stage.base:
            continue
        repo, _, tag = stage.base.rpartition(":")
        assert repo and "/" not in tag, f"{stage.base}: no tag"
        assert tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), f"{stage.base}: not an exact version tag"


@pytest.mark.parametrize("name", SERVICES)
def test_images_run_as_a_non_root_user(name: str) -> None:
    _, stages = parse(dockerfile(name))
    for target in targets(name, stages):
        users = [rest for s in chain(target, stages) for k, rest in reversed(s.instructions) if k == "USER"]
        assert users, f"{target.name}: no USER, runs as root"
        user = users[0].split(":")[0]
        assert user not in ("root", "0"), f"{target.name}: USER {users[0]}"
        assert user.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
        assert int(user) == 10001, "the manifests run as 10001"


def pip_installs(name: str) -> list[list[str]]:
    args, stages = parse(dockerfile(name))
    out = []
    for cmd in run_commands(stages):
        if re.search(r"\bpip (install|wheel)\b", cmd):
            expanded = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), cmd)
            out.append(shlex.split(expanded))
    return out


def constrained() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            pins[canonicalize_name(pkg.split("[")[0])] = version.strip()
    return pins


@pytest.mark.parametrize("name", SERVICES)
def test_every_install_is_pinned(name: str) -> None:
    pins = constrained()
    for argv in pip_installs(name):
        with_constraints = "-c" in argv and argv[argv.index("-c") + 1] == "constraints.txt"
        options_with_value = {"-r", "-c", "--index-url", "--extra-index-url", "--wheel-dir", "-w"}
        rest = [a for i, a in enumerate(argv[2:], 2) if not a.startswith("-") and argv[i - 1] not in options_with_value]
        if "-r" in argv:
            assert with_constraints, f"{argv}: requirements without -c constraints.txt"
        for arg in rest:
            if arg == "." or arg.startswith("/wheels/"):
                assert "--no-deps" in argv, f"{argv}: the local package brings no unpinned dependencies"
            elif arg.startswith("$(grep"):
                assert "requirements.txt" in arg, arg
            elif "==" in arg:
                continue
            else:
                assert with_constraints and canonicalize_name(arg) in pins, f"{arg}: neither ==pinned nor constrained"
        assert "--extra-index-url" not in argv, "an extra index could shadow a pinned name"


def test_embedder_has_cpu_and_cuda_targets() -> None:
    _, stages = parse(dockerfile("embedder"))
    by_name = {s.name: s for s in stages}
    assert {"cpu", "cuda"} <= set(by_name)
    cpu, cuda = (run_commands(built_from(by_name[t], stages)) for t in ("cpu", "cuda"))
    assert any("--index-url https://download.pytorch.org/whl/cpu" in c for c in cpu)
    assert not any("download.pytorch.org" in c for c in cuda), "PyPI's torch wheel is the CUDA build"
    assert stages[-1].name == "cpu", "a plain docker build gives the CPU image"
    # The device plugin decides which GPUs a container sees, not the image.
    assert not any("NVIDIA_VISIBLE_DEVICES" in rest for s in stages for k, rest in s.instructions if k == "ENV")


@pytest.mark.parametrize("name", SERVICES)
def test_no_weights_in_the_image(name: str) -> None:
    _, stages = parse(dockerfile(name))
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword in ("COPY", "ADD"):
                sources = [a for a in shlex.split(rest)[:-1] if not a.startswith("--")]
                assert keyword == "COPY", "ADD can fetch URLs and unpack archives: use COPY"
                for src in sources:
                    assert not re.search(r"\.(pth|pt|ckpt|bin|safetensors)$|models?$|weights", src), src
                    if "--from=" not in rest:
                        assert src not in (".", "./", "*"), "copy named paths, not the whole context"
                        assert (ROOT / src).exists(), f"COPY {src}: no such path"
                        assert not ignored(src), f"COPY {src}: excluded by .dockerignore"
            if keyword == "RUN":
                assert "fetch-weights" not in rest and "zenodo" not in rest, "weights are fetched at run time"


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", pattern)
        )
        rules.append((negate, re.compile(regex.replace(".*/", "(.*/)?") + "$")))
    return rules


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or a parent wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in dockerignore():
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "data/catalog.db",
        "samples/sonic-pi/loop.flac",
        "bench/.cache/x.wav",
        "eval/.cache/x.wav",
        ".tools/buf",
        "Cnn14_mAP=0.431.pth",
        "services/embedder/models/Cnn14_mAP=0.431.pth",
        "services/gateway/__pycache__/x.cpython-311.pyc",
        "tests/test_k8s.py",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored(path), path


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "requirements.txt", "constraints.txt", "services/gateway/__main__.py", "stubs"],
)
def test_dockerignore_lets_in_the_build_inputs(path: str) -> None:
    assert not ignored(path), path


CONFIGS = {
    "gateway": "GatewayConfig",
    "embedder": "EmbedderConfig",
    "search": "SearchConfig",
    "catalog": "CatalogConfig",
    "web": "WebConfig",
}


@pytest.mark.parametrize("name", SERVICES)
def test_image_environment_names_config_fields(name: str) -> None:
    config = getattr(importlib.import_module(f"services.{name}.config"), CONFIGS[name])
    fields = {env_name(f.name) for f in dataclasses.fields(config)}
    for var in sorted(set(re.findall(r"AUDIOSEARCH_[A-Z0-9_]+", dockerfile(name).read_text()))):
        assert var in fields, f"{name}.Dockerfile: {var} is not a field of {config.__name__}"


# --- each service's extra covers what it imports ----------------------------------


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def third_party_imports(*roots: str) -> set[str]:
    """Top-level third-party modules imported (lazily too) by `roots` and
    every first-party module they reach."""
    seen, todo, third = set(), list(roots), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        base = ROOT / module.replace(".", "/")
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if not path.exists():
            continue
        for name in imports_of(path):
            top = name.split(".")[0]
            if top == "services":
                todo.append(name)
            elif top not in sys.stdlib_module_names and top not in ("audiosearch", "__future__"):
                third.add(top)
    return third


def pyproject_extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def requirements() -> list[str]:
    return [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    ]


def image_distributions(name: str) -> set[str]:
    """Distributions the image installs: the pyproject.toml extra its EXTRA
    names, and their dependencies (as this venv's metadata declares them)."""
    args, _ = parse(dockerfile(name))
    wanted = [Requirement(line) for line in pyproject_extras()[args["EXTRA"]]]
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in wanted]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        dist_name, extras = todo.pop()
        if (canonicalize_name(dist_name), extras) in done:
            continue
        done.add((canonicalize_name(dist_name), extras))
        seen.add(canonicalize_name(dist_name))
        try:
            requires = md.distribution(dist_name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return seen


@pytest.mark.parametrize("name", SERVICES)
def test_image_dependencies_cover_the_service_imports(name: str) -> None:
    installed = image_distributions(name)
    roots = [f"services.{name}.__main__"] + (["services.cli.main"] if name == "embedder" else [])
    owners = md.packages_distributions()
    for module in sorted(third_party_imports(*roots)):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"{name} imports {module}, which no installed distribution provides"
        assert dists & installed, f"{name} imports {module} ({sorted(dists)}), not installed in its image"
    for driver in DRIVERS.get(name, ()):
        assert driver in installed, f"{name} needs the database driver {driver}"
    if name != "embedder":
        assert "torch" not in installed, f"the {name} image must not carry torch"


@pytest.mark.parametrize("name", SERVICES)
def test_each_image_installs_its_service_extra(name: str) -> None:
    args, stages = parse(dockerfile(name))
    assert args.get("EXTRA") == name
    made = [c for c in run_commands(stages) if "> requirements-image.txt" in c]
    assert len(made) == 1 and '["optional-dependencies"]' in made[0] and "${EXTRA}" in made[0], made
    installs = [argv for argv in pip_installs(name) if "-r" in argv]
    assert installs and all(argv[argv.index("-r") + 1] == "requirements-image.txt" for argv in installs)


def test_extras_pin_as_requirements_txt_does() -> None:
    pinned = requirements()
    for extra, lines in pyproject_extras().items():
        assert all(line in pinned for line in lines), f"{extra}: {sorted(set(lines) - set(pinned))} not as pinned"
        assert len(set(lines)) == len(lines), f"{extra}: listed twice"
    assert pyproject_extras()["cli"] == pinned, "the CLI (whose serve runs every service) needs all of requirements.txt"
    assert set(pyproject_extras()) == {*SERVICES, "cli"}
    assert [e for e, lines in pyproject_extras().items() if "torch==2.13.0" in lines] == ["embedder", "cli"]
