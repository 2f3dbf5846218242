"""The layers of docs/architecture.md, checked on the source: no import cycle, nothing points up.

The graph is read from the code (every `import` and `from ... import`, at module level, under
`if TYPE_CHECKING:` and inside functions alike), so a new module is checked by existing.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Who may import the top of the harness. Everything else sits below it.
MAY_IMPORT = {
    "bench.executors": ("bench.executors", "bench.cli", "bench.launch"),
    "bench.experiments": ("bench.experiments", "bench.cli", "bench.report"),
}
# The primitives (networks, data sets, the probe) may use only each other and these leaves.
PRIMITIVES = ("bench.nn", "bench.data", "bench.probe")
LEAVES = {"bench", "bench.errors", "bench.store", "bench.distributed", "bench.progress", "bench.steptime",
          "bench.resume", "bench.official"}  # resume: checkpointed loops (pre-training, the probe); official: the
# official protocol's numbers and stopping rule (the probe's official loop reads them); both import only leaves


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "bench").rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The bench modules `path` imports anywhere in its body (names of a package count as modules)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(path, set(mods)) - {name} for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge's cycle, found by depth-first search in a fixed order."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])
    return found


def test_the_graph_is_read() -> None:
    g = graph()
    assert "bench.runner" in g and "bench.resume" in g["bench.runner"]
    assert "bench.runner" in g["bench.executors.local"]


def test_the_smoke_package_exports_only_its_settings() -> None:
    """bench.config reads `[smoke]` through bench.smoke, so the package imports no run code."""
    g = graph()
    assert g["bench.smoke"] == {"bench.smoke.config"}
    assert "bench.smoke" in g["bench.config"]


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_nothing_imports_the_top_layers_from_below() -> None:
    bad = [f"{m} -> {d}" for m, deps in graph().items() for d in sorted(deps)
           for top, allowed in MAY_IMPORT.items()
           if (d == top or d.startswith(top + ".")) and not m.startswith(allowed)]
    assert bad == []


def test_primitives_import_only_primitives_and_leaves() -> None:
    bad = [f"{m} -> {d}" for m, deps in graph().items() if m.startswith(PRIMITIVES) for d in sorted(deps)
           if not (d.startswith(PRIMITIVES) or d in LEAVES)]
    assert bad == []


def test_the_harness_never_imports_a_plugin() -> None:
    """Plugins are found by the registry (bench.registry.discover), never imported by name."""
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{name} -> {t}" for t in targets if t.split(".")[0] in {"methods", "baselines"}]
    assert bad == []


@pytest.mark.parametrize("first", ["bench.runner", "bench.nn.uctransnet_ctrans"])
def test_modules_import_cleanly_in_a_fresh_interpreter(first: str) -> None:
    """Import `first` alone, then every bench module, in a new process: no partial-import errors."""
    names = sorted(n for n in modules() if n != "bench.__main__")  # __main__ would run the CLI
    code = f"import importlib; importlib.import_module({first!r})\nfor n in {names!r}: importlib.import_module(n)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
