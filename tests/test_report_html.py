"""report.html is self-contained (plots embedded as PNG data URIs, no external resources) and shows
accuracy vs T, per-layer firing rates and errors, SynOps/energy, config and environment."""
from __future__ import annotations

import base64
import json
import re

from snnconv.api import run_convert
from snnconv.config import RunConfig
from snnconv.report import comparison_html, write_html


def test_report_html_is_self_contained_and_complete(tmp_path):
    out = tmp_path / "run"
    cfg = RunConfig(model="mnist_cnn", dataset="mnist-bundled", calib_samples=32, eval_samples=32,
                    timesteps=[1, 2, 4], output_dir=str(out))
    report = run_convert(cfg, log_fn=lambda *_: None, coverage_fn=lambda *_: None)
    page = (out / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 4  # accuracy vs T, SynOps/energy, firing rates, layer errors
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page
    for text in ("Accuracy vs T", "SynOps and energy per T", "Per-layer statistics", "Config", "Environment",
                 json.dumps(report["environment"]["torch"])[1:-1]):
        assert text in page, text
    for layer in report["firing_rates"]:
        assert f"<td class=\"l\">{layer}</td>" in page
    for t, acc in report["snn_accuracy"].items():
        assert f"<td class=\"l\">{t}</td><td>{acc:.2f}</td>" in page
    # report.json is the source: the page re-renders from it
    write_html(tmp_path / "again.html", json.loads((out / "report.json").read_text()))
    assert (tmp_path / "again.html").read_text().count("data:image/png") == 4

    from snnconv.batch import _summary_of

    summary = {"items": [{"name": "a", "status": "ok", "report": _summary_of(report)},
                         {"name": "h", "status": "ok", "report": _summary_of(
                             {"model": "hf:x", "dataset": "sentences", "max_T": 2, "cosine": {"1": 0.9, "2": 0.95},
                              "cosine_all_t": [0.9, 0.95]})},
                         {"name": "b", "status": "failed", "error": "x.yaml: key 'conversion.method' expects ...",
                          "config_file": "x.yaml"}], "ok": 1, "failed": 1, "skipped": 0}
    cmp_page = comparison_html(summary)
    assert 'href="a/report.html"' in cmp_page and "Failures" in cmp_page and "conversion.method" in cmp_page
    assert cmp_page.count("data:image/png;base64,") == 2  # one plot per metric: accuracy, cosine
    assert "<td>0.9500</td>" in cmp_page
