"""scripts/bench_accuracy.py renders the committed benchmark JSON into markdown and per-suite plots."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "scripts" / "bench_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_render_and_plot_from_committed_json(tmp_path):
    bench = _bench()
    data = json.loads((ROOT / "docs" / "benchmarks" / "accuracy.json").read_text())
    md = bench.render(data)
    for suite, sd in data["suites"].items():
        assert f"## {suite}:" in md and f"(accuracy_{suite}.png)" in md
        # every row's command is listed, and every row appears in the table
        for r in sd["methods"].values():
            assert r["command"] in md
            assert f"| {r['method']}" in md
        png = tmp_path / f"accuracy_{suite}.png"
        bench.plot_suite(png, suite, sd)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Issue 3 targets:" in md
