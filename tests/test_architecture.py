"""The layering the design promises (docs/design.md): ir depends on nothing else of snnconv, and no two
snnconv packages import each other (directly or through others). Read statically from every import
statement, including those inside functions, so a lazy import cannot hide a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "snnconv"


def unit(module: str) -> str:
    """The package (or top-level module) an ``snnconv.x.y`` module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "snnconv"


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        mod = ".".join(p for p in rel.parts if p != "__init__")
        src = unit(mod) if mod != "snnconv" else "snnconv"
        for n in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "snnconv":
                targets = [f"snnconv.{a.name}" for a in n.names] if n.module == "snnconv" else [n.module]
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names if a.name.split(".")[0] == "snnconv"]
            for t in targets:
                u = unit(t)
                if u != src and u != "__version__":
                    edges.setdefault(src, set()).add(u)
    return edges


def test_ir_imports_nothing_else_of_snnconv():
    assert import_graph().get("ir", set()) <= {"errors"}


def test_no_import_cycles_between_packages():
    edges = import_graph()
    edges.pop("snnconv", None)  # the package root wires the registries together; nothing imports it back

    def reaches(a: str, b: str) -> bool:
        seen, stack = set(), [a]
        while stack:
            x = stack.pop()
            if x == b:
                return True
            for y in edges.get(x, ()):
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return False

    cycles = sorted((a, b) for a in edges for b in edges[a] if b != "snnconv" and reaches(b, a))
    assert cycles == [], f"import cycles: {cycles}"
    assert all("snnconv" not in v for k, v in edges.items()), {k: v for k, v in edges.items() if "snnconv" in v}


def test_the_check_can_fail(tmp_path, monkeypatch):
    """The graph builder sees a function-level import (as the old ir -> runtime one was)."""
    src = tmp_path / "snnconv" / "ir"
    src.mkdir(parents=True)
    (src / "graph.py").write_text("def f():\n    from snnconv.runtime.interpreter import run_ann\n")
    monkeypatch.setattr(__import__(__name__), "PKG", tmp_path / "snnconv")
    assert import_graph() == {"ir": {"runtime"}}


def test_passes_receive_their_simulator_through_the_context():
    """No pass module imports the runtime simulator; a pass that simulates uses PassContext.simulator."""
    import torch
    from torch import nn

    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.config import ConversionConfig
    from snnconv.frontends.torch import from_torch
    from snnconv.passes import PassContext, Pipeline
    from snnconv.runtime.simulator import Simulator

    for f in (PKG / "passes").glob("*.py"):
        mods = {n.module for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom)}
        assert "snnconv.runtime.simulator" not in mods, f.name
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    g, _ = from_torch(m, (1, 6, 6))
    calib = [torch.rand(16, 1, 6, 6)]
    snn, _ = convert_graph(g, calib, conversion_pipeline(ConversionConfig()))
    built = []

    def counting(graph, timesteps, **kw):
        built.append(timesteps)
        return Simulator(graph, timesteps, **kw)

    Pipeline.from_config([{"name": "calibration", "mode": "bias", "timesteps": 3, "method": "resimulate"}]).run(
        snn, PassContext(calibration=calib, simulator=counting))
    assert built and set(built) == {3}


def test_bench_scripts_compile():
    """Every scripts/*.py at least parses (the benchmarks are run by hand, not by the tests)."""
    for f in sorted((PKG.parent / "scripts").glob("*.py")):
        compile(f.read_text(), str(f), "exec")  # raises SyntaxError with the file and line
