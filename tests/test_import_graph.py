"""The layers import one way, down, and no project module imports itself back.

``data`` is plain Python (usable from a notebook or a script without Panel),
``components`` are Panel components that know nothing of the served app, and
``dashboard_app`` is the app on top (docs/architecture.md, "Layers"). The
graph is read from the source with ``ast``, so a module that is never
imported by a test is checked too, and so is an import inside a function.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "components", "dashboard_app")

#: What each layer must never import, directly or inside a function.
FORBIDDEN = {
    "data": ("components", "dashboard_app", "panel", "bokeh"),
    "components": ("dashboard_app",),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # a project module, or the top-level name of another package
    line: int
    module_level: bool  # runs when the importer is imported (not inside a function, not TYPE_CHECKING only)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name ``from <level dots><module> import ...`` refers to, inside ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def target(dotted: str) -> str:
        """The longest project module a dotted name starts with, else the name's top-level package."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return parts[0]

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(name, target(alias.name), child.lineno, module_level))
            elif isinstance(child, ast.ImportFrom):
                base = resolve(name, is_package, child.level, child.module)
                for alias in child.names:
                    # ``from package import submodule`` imports the submodule; ``from module import name`` the module.
                    submodule = f"{base}.{alias.name}"
                    found.append(Import(name, submodule if submodule in modules else target(base),
                                        child.lineno, module_level))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif is_type_checking_block(child):
                visit(child, False)
            else:
                visit(child, module_level)

    visit(tree, True)
    return found


def import_graph() -> list[Import]:
    modules = project_modules()
    return [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]


def first_cycle(edges: list[Import]) -> list[Import] | None:
    """One cycle of imports among project modules (as its edges), or None.

    Imports inside functions count: they defer the import, not the dependency, and a
    circle closed inside a function (``cli`` importing ``cli_export``, which imported
    ``_engine`` back from ``cli`` in its handler) is a circle all the same.
    """
    graph: dict[str, list[Import]] = {}
    for edge in edges:
        if edge.imported.split(".")[0] in PACKAGES and edge.imported != edge.importer:
            graph.setdefault(edge.importer, []).append(edge)
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" after
    path: list[Import] = []

    def dfs(node: str) -> list[Import] | None:
        state[node] = "open"
        for edge in graph.get(node, []):
            nxt = edge.imported
            if state.get(nxt) == "open":
                start = next(i for i, e in enumerate(path + [edge]) if e.importer == nxt)
                return (path + [edge])[start:]
            if nxt not in state:
                path.append(edge)
                if (cycle := dfs(nxt)) is not None:
                    return cycle
                path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)) is not None:
            return cycle
    return None


def describe(edge: Import) -> str:
    where = "" if edge.module_level else ", inside a function"
    return f"{edge.importer} -> {edge.imported} ({edge.importer.replace('.', '/')}.py:{edge.line}{where})"


def test_data_and_components_never_import_a_layer_above_them():
    upward = [describe(edge) for edge in import_graph()
              if edge.importer.split(".")[0] in FORBIDDEN
              and edge.imported.split(".")[0] in FORBIDDEN[edge.importer.split(".")[0]]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_project_modules_import_each_other_without_a_cycle():
    cycle = first_cycle(import_graph())
    assert cycle is None, "import cycle:\n" + "\n".join(describe(edge) for edge in cycle)


def test_the_import_graph_sees_imports_inside_functions_and_relative_imports():
    """The walker itself: an import it cannot see would let an upward import through unchecked."""
    edges = import_graph()
    assert any(e.importer == "dashboard_app.app" and e.imported == "dashboard_app.pages" and e.module_level
               for e in edges)
    assert any(e.importer.startswith("dashboard_app") and not e.module_level for e in edges)
    assert any(e.importer == "components.store" and e.imported.startswith("data") for e in edges)


#: Packages whose functions may import only with a reason, and the comments that give one
#: (on the import's line or in the comment block right above it).
REASONED_PACKAGES = ("components", "dashboard_app")
REASONS = ("import cost:", "import cycle:")


def unexplained_function_imports(source: str, filename: str) -> list[str]:
    """Imports inside a function with no ``# import cost: <measured figure>`` / ``# import cycle: <which>`` comment."""
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            said = [lines[node.lineno - 1]]
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith("#"):
                said.append(lines[above])
                above -= 1
            if not any(reason in line for line in said for reason in REASONS):
                found.append(f"{filename}:{node.lineno} {lines[node.lineno - 1].strip()}")
    return sorted(set(found))


def test_functions_import_only_where_a_comment_gives_the_measured_cost_or_the_cycle():
    """Imports belong at the top of a module; inside a function only for a measured import cost or an import cycle."""
    found = [use for package in REASONED_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for use in unexplained_function_imports(path.read_text(encoding="utf-8"),
                                                     str(path.relative_to(ROOT)))]
    assert not found, ("imports inside functions without '# import cost: <measured>' or '# import cycle: <which>' "
                       "(move them to the top of the module):\n" + "\n".join(found))


def test_the_function_import_check_sees_an_unexplained_import_and_accepts_a_reasoned_one():
    source = '''
def handler():
    import json
    # import cost: ~0.2 s (argon2), python -X importtime
    from data.users import authenticate
    from data.seed import seed  # import cost: ~0.35 s
    async def inner():
        from panel import auth
'''
    assert unexplained_function_imports(source, "x.py") == ["x.py:3 import json", "x.py:8 from panel import auth"]
