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


def test_finetune_targets_are_judged_from_the_rows():
    """The hybrid fine-tuning section judges each target from its row's gap, and says what is missing."""
    bench = _bench()
    row = {"network": "resnet20_45k", "timesteps": 2, "test_before": 70.0, "test_after": 83.5, "ann_test": 84.17,
           "test_samples": 10000, "energy_uj_after": 10.0, "ann_energy_uj": 190.0, "epochs": 6, "val_after": 81.0}
    md = "\n".join(bench.finetune_section({"command": "c", "rows": [row]}))
    assert "resnet20_45k T=2 within 1.0 of its ANN: gap -0.67 on 10000 test images -> met" in md
    assert "resnet20_45k T=1 within 3.0 of its ANN: not measured yet" in md
    md = "\n".join(bench.finetune_section({"command": "c", "rows": [{**row, "test_after": 82.0}]}))
    assert "gap -2.17 on 10000 test images -> NOT met" in md
    # two routes to one ANN: the one better on validation is judged, even when the other is better on test
    other = {**row, "network": "resnet20_45k_l2", "test_after": 83.9, "val_after": 80.0}
    md = "\n".join(bench.finetune_section({"command": "c", "rows": [{**row, "val_after": 81.0}, other]}))
    assert "gap -0.67 on 10000 test images (route `resnet20_45k` (conversion, 6 ep), chosen on validation 81.00" in md
    # two routes of one network (labels only, distilled): the same rule
    kd = {**row, "distill": 0.5, "test_after": 83.0, "val_after": 81.5}
    md = "\n".join(bench.finetune_section({"command": "c", "rows": [row, kd]}))
    assert "gap -1.17 on 10000 test images (route `resnet20_45k` (conversion, 6 ep, KD 0.5), chosen on validation 81.50" in md
    assert bench.finetune_section(None) == []


def test_generality_choices_read_validation_not_test():
    """bench_generality picks the variant and T on the validation columns; the test gap is read after."""
    spec = importlib.util.spec_from_file_location("bench_generality", ROOT / "scripts" / "bench_generality.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = [{"variant": "a", "ann_val": 80.0, "ann_test": 79.0,
             "per_t": {"4": {"val": 79.5, "test": 70.0}, "16": {"val": 79.9, "test": 78.9}}},
            {"variant": "b", "ann_val": 80.0, "ann_test": 79.0,
             "per_t": {"4": {"val": 78.0, "test": 79.0}, "16": {"val": 79.0, "test": 79.5}}}]
    r, t, gap = gen.chosen_on_validation(rows, 1.0)  # smallest T within 1 point on validation: a at T=4
    assert (r["variant"], t, gap) == ("a", "4", -9.0)
    r, t, gap = gen.chosen_on_validation(rows, 1.0, fixed_t=16)  # at T=16 the closest on validation: a
    assert (r["variant"], t) == ("a", "16") and abs(gap + 0.1) < 1e-9
    assert gen.chosen_on_validation(rows, 0.05) is None


def test_rows_of_an_earlier_checkpoint_are_shown_apart():
    """A row measured on an earlier checkpoint saved under the same name (its digest differs from the file's)
    is listed apart, and takes no part in the best-method choice or the targets."""
    import copy

    bench = _bench()
    data = json.loads((ROOT / "docs" / "benchmarks" / "accuracy.json").read_text())
    sd = data["suites"]["mnist"]
    old = copy.deepcopy(sd["methods"]["percentile"])
    old_key = old["ann_key"].rsplit(":", 2)[0] + ":00000000:" + old["ann_key"].rsplit(":", 1)[1]
    sd["ann"][old_key] = {**sd["ann"][old["ann_key"]], "acc": 12.34}
    for t in old["per_t"].values():
        t["val_acc"] = 100.0  # would win every T if it were compared with the current rows
    sd["methods"]["stale_percentile"] = {**old, "method": "stale_percentile", "ann_key": old_key}
    current, earlier = bench.split_rows(sd)
    assert list(earlier["methods"]) == ["stale_percentile"] and "stale_percentile" not in current["methods"]
    md = bench.render(data)
    mnist = md.split("## mnist:")[1].split("\n## ")[0]
    head, apart = mnist.split("### Rows of an earlier checkpoint")
    assert "stale_percentile" not in head and "| stale_percentile | " in apart and "sha1 00000000" in apart
    assert "12.34" not in head
