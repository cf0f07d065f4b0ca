"""Layers run one way (scenario -> data and partition -> strategies -> ClientApp and
ServerApp -> MLflow), no module imports itself in a circle, and the generic shells name
no strategy."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sims", "client", "strategies", "server")


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("flowerbed", *parts))


def import_graph() -> dict[str, set[str]]:
    """Module -> the flowerbed modules it imports, at any depth of the file (imports
    inside functions count: they run too). ``from package import name`` counts as an
    import of ``package.name`` when that is a module."""
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    modules = {_module(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _imports_of(graph, prefix: str) -> dict[str, set[str]]:
    return {m: deps for m, deps in graph.items() if m == prefix or m.startswith(prefix + ".")}


def test_no_module_imports_itself_in_a_circle():
    cycle = _cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_scenario_layer_knows_no_strategy_client_or_server():
    for module, deps in _imports_of(import_graph(), "flowerbed.sims").items():
        higher = {d for d in deps if d.split(".")[1] in ("client", "strategies", "server")}
        assert not higher, f"{module} imports {higher}"


def test_strategies_import_no_server_and_no_client_shell():
    for module, deps in _imports_of(import_graph(), "flowerbed.strategies").items():
        higher = {d for d in deps if d.startswith("flowerbed.server") or d in ("flowerbed.client.app",
                                                                             "flowerbed.client.node")}
        assert not higher, f"{module} imports {higher}"


def test_client_internals_import_no_strategy():
    """Training loops and mods are below the strategies; only the shell looks them up."""
    for module, deps in _imports_of(import_graph(), "flowerbed.client").items():
        if module != "flowerbed.client.app":
            assert not {d for d in deps if d.startswith("flowerbed.strategies")}, module


def test_the_server_uses_no_client_internals():
    """The server scores with the shared sims.scoring and sims.task; it only launches
    the ClientApp (simulation) and tells it where its states are checkpointed."""
    public = ("flowerbed.client.app", "flowerbed.client.checkpoint")
    for module, deps in _imports_of(import_graph(), "flowerbed.server").items():
        internals = {d for d in deps if d.startswith("flowerbed.client") and d not in public}
        assert not internals, f"{module} imports {internals}"


def test_the_shells_name_no_strategy_and_no_strategy_key():
    """No strategy name (nor its message keys) in client/app.py, client/node.py or
    server/: they dispatch through the registry and the declared hooks."""
    from flowerbed.strategies import ADDONS, STRATEGIES

    names = [n for n in [*STRATEGIES, *ADDONS] if n != "local"]  # "local" is also plain English
    names += ["fed-pub", "fed_pub", "proximal-mu", "proximal_mu", "etf", "mask", "unit-weight", "phi"]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")", re.IGNORECASE)
    files = [REPO / "client" / "app.py", REPO / "client" / "node.py", *(REPO / "server").glob("*.py")]
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{number}: {line.strip()}"


def test_client_app_is_a_short_shell():
    assert len((REPO / "client" / "app.py").read_text().splitlines()) < 120
