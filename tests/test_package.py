"""The house: the public API, the pipeline order of the wings, small files, and a light ``import trt_mpq``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trt_mpq

PACKAGE = Path(trt_mpq.__file__).parent
# Pipeline order: a module may import its own wing and what stands before it, never what comes after.
BASE = ("errors", "precision", "progress", "files", "artifacts")
WINGS = ("network", "data", "quant", "backends", "executors", "measure", "search", "report", "commands", "cli")


def rank(module: str) -> int:
    """0 for the shared base, then the wings in order (``__init__`` is the public face: last)."""
    head = module.split(".")[1] if module.count(".") else "__init__"
    if head in BASE:
        return 0
    return WINGS.index(head) + 1 if head in WINGS else len(WINGS) + 1


def imports(path: Path) -> list[str]:
    """trt_mpq modules a file imports (relative imports resolved), lazy imports inside functions included."""
    parts = ["trt_mpq", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("trt_mpq"):
                names = [f"{target}.{a.name}" for a in node.names] if target == "trt_mpq" else [target]
                found.extend(names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("trt_mpq"))
    return found


def test_public_api_is_documented():
    for name in ("inspect_model", "analyze", "plan", "run", "build", "check"):
        fn = getattr(trt_mpq, name)
        assert callable(fn) and fn.__doc__ and len(fn.__doc__.split()) > 5, name
    assert {"AnalyzeOptions", "PlanOptions", "Budget", "Plan", "Precision", "TrtMpqError"} <= set(trt_mpq.__all__)


def test_each_wing_imports_only_what_stands_before_it():
    backwards = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = ".".join(["trt_mpq", *path.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__")
        for target in imports(path):
            if target == "trt_mpq.__version__":
                continue
            if rank(target) > rank(me):
                backwards.append(f"{me} imports {target}")
    assert not backwards, backwards
    assert rank("trt_mpq.search.driver") > rank("trt_mpq.measure.sensitivity") > rank("trt_mpq.network.units")


def test_files_stay_small_and_nobody_outside_backends_asks_a_backend_its_name():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path
        if "backends" not in path.parts:
            text = path.read_text()  # no branching on which backend it is, no probing for what it has
            assert not re.search(r"backend\w*(\.backend)?\.name\s*[!=]=|[!=]=\s*\"(tensorrt|onnxruntime)\"", text), path
            assert not re.search(r"(hasattr|getattr)\(\s*\w*backend", text), path
            # nor imports one: backends bring their own flags, options and versions (backends.base)
            assert not re.search(r"import (onnxruntime|tensorrt)\b|backends\.(onnxrt|tensorrt)\b|"
                                 r"(OnnxRuntime|TensorRT)Options", text), path


@pytest.mark.parametrize("module", ["tensorrt", "polygraphy", "cuda", "matplotlib", "rich"])
def test_import_trt_mpq_stays_light(module):
    code = f"import sys, trt_mpq; print(any(m == '{module}' or m.startswith('{module}.') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _imports(path, package):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                yield f"{target}.{alias.name}", target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, alias.name


def test_no_module_imports_itself_back_even_lazily():
    """Data flows one way: no cycle among trt_mpq's modules, counting imports inside functions too."""
    from graphlib import CycleError, TopologicalSorter

    root = Path(trt_mpq.__file__).parent
    modules = {}
    for f in root.rglob("*.py"):
        parts = ["trt_mpq", *f.relative_to(root).with_suffix("").parts]
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = package
        modules[".".join(parts)] = (f, package)
    graph = {}
    for name, (f, package) in modules.items():
        graph[name] = {next((c for c in cands if c in modules), None) for cands in _imports(f, package)} - {None, name}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert graph["trt_mpq.network.units"] >= {"trt_mpq.network.regions", "trt_mpq.network.unit"}  # edges are seen
