"""The house rules of DESIGN.md's layers, checked on the source (no training).

- no import cycle among jrl's modules, function-level imports included (import-linter's layer
  contracts in pyproject.toml, run by CI's ``lint-imports``, check the direction);
- only the registry imports jrl modules by name (``import_module``);
- no module reaches into another object's private members (``x._name`` where ``_name`` is not
  defined in the same module).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "jrl"
# Private names of other libraries that jrl uses on purpose, each with its reason.
EXTERNAL_PRIVATE = {
    "_post_init_hooks",  # Ray: re-register Tune trainables after every ray.init (tune.py)
}
NAMED_TUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(SRC)): ast.parse(p.read_text(), str(p)) for p in SRC.rglob("*.py")}


def test_no_import_cycles_function_level_imports_included():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("jrl")
    modules = sorted(m for m in graph.modules if m != "jrl")
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n != "jrl")
             for m in modules}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in edges.get(module, []):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [module, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module, [module])


def test_only_the_registry_imports_modules_by_name():
    # config.py resolves the user's own "module:function" strings (callbacks, mapping fns).
    allowed = {"registry.py", "config.py"}
    offenders = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                    node.func, "id", None)) == "import_module" and name not in allowed:
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"import_module outside the registry: {offenders}"


def test_no_module_reaches_into_another_objects_private_members():
    offenders = []
    for name, tree in _modules().items():
        own = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")}
        own |= {n.name for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in NAMED_TUPLE_API:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if attr in own or attr in EXTERNAL_PRIVATE:
                continue
            offenders.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "private members reached across modules:\n" + "\n".join(offenders)
