"""The package's shape: no import cycles at run time, no module over 500 lines, no function over 80."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kvwhisper"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# declarative argument parsers: one add_argument call after another
PARSER_FUNCTIONS = {"add_parser", "build_parser", "add_model_arguments", "add_decoding_arguments"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports when it runs (function-level imports included, `if TYPE_CHECKING:`
    blocks left out), each resolved to the module itself (a name imported from a package that is a submodule
    counts as that submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): runtime_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules, or None. A package's __init__ importing its own submodules
    is how packages work, so edges from a package to its submodules are left out, and so are edges to the
    package that contains the importer (Python initializes a parent before its children anyway)."""
    edges = {
        m: {t for t in targets if not t.startswith(m + ".") and not m.startswith(t + ".")}
        for m, targets in graph.items()
    }
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (cycle := dfs(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := dfs(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_runtime_imports_see_function_level_imports_and_skip_type_checking(tmp_path):
    graph = import_graph()
    assert "kvwhisper.model.network" in graph["kvwhisper.model.registry"]
    # the network imports the tokenizer only inside a property, and the model's callers only for type checking
    assert "kvwhisper.tokenizer" in graph["kvwhisper.model.network"]
    assert not any(m.startswith("kvwhisper.decoding") for m in graph["kvwhisper.model.network"])


def test_no_import_cycle_at_run_time():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name}: {len(lines)} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and node.name not in PARSER_FUNCTIONS
    ]
    assert not long, f"{path.name}: " + ", ".join(long)


# the README's "Layout" list: each package imports only those before it (and itself)
LAYERS = [
    "cpu",
    "audio",
    "tokenizer",
    "model",
    "decoding",
    "timing",
    "transcribe",
    "inspection",
    "normalizers",
    "utils",
    "corpus",
    "cli",
    "__main__",  # python -m kvwhisper
]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" is the package's facade (kvwhisper/__init__.py)


def test_each_layer_imports_only_the_layers_before_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    graph = import_graph()
    assert {layer_of(m) for m in graph} - {""} <= set(LAYERS), "a package missing from LAYERS"
    upward = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if layer_of(m)
        for t in targets
        if layer_of(t) and rank[layer_of(t)] > rank[layer_of(m)]
    ]
    assert not upward, "imports of a later layer: " + ", ".join(upward)
