"""The package's import graph: no cycles (function-level and TYPE_CHECKING imports included), every import
pointing down the layer order of README's code map, and the modules that analyze.py and the config checks
need stay importable without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

PACKAGE = "moirai_ft"
# imported by analyze.py or before any model is loaded: must not pull in torch (seconds of import, GPUs)
# (sweep/runner.py, sweep/naming.py, sweep/hydra_callbacks.py too: train.py imports them before it checks
# the command line, and a launcher's job process before the job's directory is resolved)
TORCH_FREE = ("analysis", "sweep/state.py", "sweep/naming.py", "sweep/runner.py", "sweep/hydra_callbacks.py",
              "sweep/once.py", "result.py", "artifacts.py", "errors.py", "config",
              "budget/duration.py", "budget/clock.py", "budget/expand.py", "budget/cli.py", "budget/plan_text.py",
              # predict.py checks its job and data before any model loads
              "forecast/job.py", "forecast/inputs.py", "forecast/cli.py")


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package below root (packages by their __init__)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, (ast.Name, ast.Attribute)) and ast.unparse(test).endswith("TYPE_CHECKING")


def imported(name: str, path: Path, known: set[str], type_checking: bool = False) -> set[str]:
    """The package's modules that module `name` imports anywhere in its body (functions too; under
    `if TYPE_CHECKING:`, which never runs, only when `type_checking`)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                out.add(submodule if submodule in known else source)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    # `import a.b.c` names a.b.c; keep the deepest module of the package it names
    resolved = set()
    for target in out:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph(root: Path, package: str, type_checking: bool = False) -> dict[str, set[str]]:
    found = modules(root, package)
    return {name: imported(name, path, set(found), type_checking) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_a_cycle_in(set(c), graph) for c in components]


def _a_cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    start = min(component)
    path, seen = [start], {start}
    while True:  # in a strongly connected component every node reaches start: walk until we come back
        nxt = sorted(w for w in graph[path[-1]] if w in component)
        if start in nxt:
            return path + [start]
        unseen = [w for w in nxt if w not in seen]
        step = unseen[0] if unseen else nxt[0]
        if step in seen:  # a loop not through start: report it from where it closes
            return path[path.index(step):] + [step]
        path.append(step)
        seen.add(step)


def test_the_package_has_no_import_cycle() -> None:
    # TYPE_CHECKING imports too: a cycle there is two modules that each need the other to be understood
    graph = import_graph(ROOT, PACKAGE, type_checking=True)
    assert len(graph) > 20 and any(graph.values())  # the graph was read at all
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/a.py": "from pkg.sub import b\n",
        "pkg/sub/b.py": "import os\n\ndef f():\n    from .. import c\n    return c\n",
        "pkg/c.py": "def g():\n    import pkg.a\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\nfrom pkg import c\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.c"}  # relative; TYPE_CHECKING left out
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (tmp_path / "pkg" / "c.py").write_text("def g():\n    pass\n")  # break it
    assert cycles(import_graph(tmp_path, "pkg")) == []


def test_the_cycle_check_finds_a_cycle_through_a_type_checking_import(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n",
    })
    assert cycles(import_graph(tmp_path, "pkg")) == []  # what runs has none
    assert cycles(import_graph(tmp_path, "pkg", type_checking=True)) == [["pkg.a", "pkg.b", "pkg.a"]]


# The layer order of README's code map, lowest first. A module may import its own layer and the layers below,
# never one above: what a layer needs lives below it. A module belongs to its longest matching name.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "values", "scores", "result", "console", "imports", "budget.duration", "instrument"),  # shared by all
    ("artifacts", "weights", "sweep.once"),  # a job's files; a value computed once for a whole sweep
    ("config",),  # the config's schema, checks and presets: torch-free
    ("data",),  # reading, windows, roles
    ("model",),  # families, loading, patterns, the fast path
    ("data.preflight", "data.prepare"),  # the data prepared and checked against the model's family
    ("train",),  # the LightningModule, callbacks, loggers, trackers
    ("evaluation",),  # the test evaluation
    ("search",),  # monitors, pruning, the study, the lr finder
    # one job, put together from all the above
    ("train.job", "train.fit", "train.outcome", "train.from_config", "train.rank", "train.zero_shot"),
    ("sweep", "budget"),  # a job as train.py runs it within a sweep; the sweep's plan and budget
    ("analysis",),  # what analyze.py reads from job directories
    ("evaluate", "forecast"),  # python -m moirai_ft.evaluate; forecasting with a finished job (predict.py)
)


def layer_of(module: str, package: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """The index of the layer whose longest entry names the module or a package above it."""
    best: tuple[int, int] | None = None  # (entry length, layer)
    for i, entries in enumerate(layers):
        for entry in entries:
            full = f"{package}.{entry}"
            if (module == full or module.startswith(full + ".")) and (best is None or len(full) > best[0]):
                best = (len(full), i)
    return best[1] if best else None


def upward_imports(graph: dict[str, set[str]], package: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """`a -> b` for every import of a module in a higher layer, and `a: no layer` for a module in none."""
    found = []
    for a in sorted(graph):
        if a == package:
            continue
        if layer_of(a, package, layers) is None:
            found.append(f"{a}: no layer")
            continue
        for b in sorted(graph[a]):
            lb = layer_of(b, package, layers)
            if b != package and lb is not None and lb > layer_of(a, package, layers):
                found.append(f"{a} -> {b}")
    return found


def test_every_import_points_down_the_layer_order() -> None:
    graph = import_graph(ROOT, PACKAGE, type_checking=True)
    assert layer_of("moirai_ft.data.prepare", PACKAGE) > layer_of("moirai_ft.model.family", PACKAGE) > layer_of(
        "moirai_ft.data.windows", PACKAGE)
    found = upward_imports(graph, PACKAGE)
    assert not found, "imports against the layer order (tests/test_imports.py LAYERS, README's code map): " + "; ".join(found)


def test_the_layer_check_finds_an_upward_import(tmp_path: Path) -> None:
    """The test of the test: a low module importing a high one, in a function, is found; so is a module
    in no layer."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.high import g\n",
        "pkg/high.py": "from pkg import low\n",
        "pkg/mid/__init__.py": "",
        "pkg/mid/special.py": "from pkg import high\n",
    })
    layers = (("low",), ("mid",), ("high", "mid.special"))
    graph = import_graph(tmp_path, "pkg")
    assert upward_imports(graph, "pkg", layers) == ["pkg.low -> pkg.high"]  # mid.special sits with high
    assert upward_imports(graph, "pkg", (("mid",), ("low", "high"))) == ["pkg.mid.special -> pkg.high"]
    assert upward_imports(graph, "pkg", (("low",), ("high",))) == ["pkg.low -> pkg.high", "pkg.mid: no layer",
                                                                  "pkg.mid.special: no layer"]


def _torch_free_modules() -> list[str]:
    names = []
    for entry in TORCH_FREE:
        path = ROOT / PACKAGE / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        for f in files:
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_analysis_state_and_config_modules_do_not_import_torch() -> None:
    names = _torch_free_modules()
    assert "moirai_ft.sweep.state" in names and "moirai_ft.artifacts" in names
    script = (
        f"import importlib, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, name + ' imports torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_torch_free_probe_sees_torch_when_it_is_imported() -> None:
    """The test of the test: a module that needs torch shows it in the same probe."""
    module = "moirai_ft.instrument.faults"
    script = f"import importlib, sys\nsys.path.insert(0, {str(ROOT)!r})\nimportlib.import_module({module!r})\nprint('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "True", proc.stderr[-2000:]


# library internals the package touches: only model/compat.py imports them (it checks their versions)
INTERNAL_MODULES = ("lightning.pytorch.loggers.csv_logs", "lightning.pytorch.loggers.logger",
                    "uni2ts.common.torch_util", "uni2ts.module.packed_scaler")


def _third_party_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


def test_uni2ts_and_lightning_internals_are_imported_only_through_compat() -> None:
    offenders = {}
    for name, path in modules(ROOT, PACKAGE).items():
        if name == f"{PACKAGE}.model.compat":
            continue
        private = {m for m in _third_party_imports(path) if m.startswith(("uni2ts", "lightning"))
                   and (m in INTERNAL_MODULES or any(part.startswith("_") for part in m.split(".")))}
        if private:
            offenders[name] = sorted(private)
    assert not offenders, f"import these through moirai_ft.model.compat: {offenders}"
    assert INTERNAL_MODULES[0] in _third_party_imports(ROOT / PACKAGE / "model" / "compat.py")  # the check reads imports
