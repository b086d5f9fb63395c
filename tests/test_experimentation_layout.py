"""The campaign engine's layout: no import circle (imports inside functions count) and no long
function in `ssl_retrieval/experimentation/` and its two commands."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ssl_retrieval.experimentation"
FILES = [
    os.path.join(ROOT, "ssl_retrieval", "experimentation", name)
    for name in sorted(os.listdir(os.path.join(ROOT, "ssl_retrieval", "experimentation")))
    if name.endswith(".py")
] + [os.path.join(ROOT, "ssl_retrieval", name) for name in ("experiments.py", "tune.py")]


def _module(path: str) -> str:
    return os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")


def _imports(path: str) -> set[str]:
    """The package's modules `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith(PACKAGE + ".")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    graph = {_module(path): _imports(path) for path in FILES}
    assert _cycle(graph) is None


def test_no_function_over_100_lines():
    long = [
        f"{_module(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in FILES
        for node in ast.walk(ast.parse(open(path).read()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 100
    ]
    assert long == []
