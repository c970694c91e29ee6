"""The one-way rule of the tree: the library (``vmr`` without ``vmr.pipeline``, ``vmr.commands`` and ``vmr.cli``)
never imports Ray, MLflow or the pipeline layer, at import time or inside a function, and no module imports, directly
or through others, a module that imports it back."""
from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vmr"
UPPER_LAYERS = ("vmr.pipeline", "vmr.commands", "vmr.cli")
FORBIDDEN = ("ray", "mlflow", "vmr.pipeline", "vmr.commands", "vmr.cli")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imported_names(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """Every module that ``path`` imports anywhere in its body (top level or inside functions); ``from a import b``
    counts as ``a.b`` when that is a module of the package, else as ``a``."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
    return out


def library_modules() -> dict[str, pathlib.Path]:
    return {m: p for m, p in all_modules().items() if not is_under(m, UPPER_LAYERS)}


def test_no_library_module_mentions_ray_mlflow_or_the_pipeline_in_any_import():
    modules = all_modules()
    bad = {m: sorted(n for n in imported_names(p, modules) if is_under(n, FORBIDDEN))
           for m, p in library_modules().items()}
    assert not {m: n for m, n in bad.items() if n}


def test_every_library_module_imports_with_ray_and_mlflow_unimportable():
    script = f"""
import importlib, json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == p or name.startswith(p + ".") for p in {list(FORBIDDEN)!r}):
            raise ImportError("blocked by the layering test: " + name)
        return None
sys.meta_path.insert(0, Block())
failed = {{}}
for m in {sorted(library_modules())!r}:
    try:
        importlib.import_module(m)
    except Exception as e:
        failed[m] = repr(e)
print(json.dumps({{"failed": failed, "loaded": sorted(k for k in sys.modules if k.split(".")[0] in ("ray", "mlflow"))}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"failed": {}, "loaded": []}


def test_no_import_cycles():
    modules = all_modules()
    graph = {m: {n for n in imported_names(p, modules) if n in modules and n != m} for m, p in modules.items()}
    # a package's __init__ importing its own submodules is how packages re-export; it is not a cycle of ideas
    for m in graph:
        graph[m] = {n for n in graph[m] if not (n.startswith(m + ".") and modules[m].name == "__init__.py")}
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles
