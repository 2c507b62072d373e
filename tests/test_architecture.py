"""The arrows that must never be (docs/architecture.md), checked on the
source: no import cycle under services/ (type-only imports under
TYPE_CHECKING aside: they are not run), no module over 400 lines, services
that never import each other, and a gateway whose use cases know nothing
of gRPC or the generated stubs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"
MAX_LINES = 400
SERVICE_NAMES = ("catalog", "embedder", "gateway", "search", "web")
# The gateway's modules that speak gRPC or hold the generated messages.
GATEWAY_TRANSPORT = {"__main__", "auth", "clients", "convert", "servicer"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> set[str]:
    """Every module `path` imports when it runs (at the top or in a function)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SERVICES.rglob("*.py")}
    return {name: {m for m in imports(p) if m in paths and m != name} for name, p in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_under_services() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_400_lines() -> None:
    long = {module_name(p): n for p in SERVICES.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_services_never_import_each_other() -> None:
    def service(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in SERVICE_NAMES else ""

    crossing = {}
    for name, deps in graph().items():
        other = {d for d in deps if service(d) and service(name) and service(d) != service(name)}
        if other:
            crossing[name] = sorted(other)
    assert crossing == {}


def test_the_gateways_use_cases_know_no_grpc() -> None:
    speaking = {}
    for path in (SERVICES / "gateway").glob("*.py"):
        if path.stem in GATEWAY_TRANSPORT:
            continue
        transport = {m for m in imports(path) if m.split(".")[0] in ("grpc", "audiosearch", "grpc_health")}
        if transport:
            speaking[path.stem] = sorted(transport)
    assert speaking == {}
