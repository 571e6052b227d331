"""The command line: convert / evaluate / inspect on the bundled MNIST CNN and subset, YAML configs, and
one-line errors for bad input.

The main conversion and a few error cases run as real subprocesses (``python -m snnconv.cli``); the rest
call ``snnconv.cli.main()`` in-process with ``sys.argv`` set (the same entry point, error handling and
exit codes, without paying the torch import for every case on a 2-core machine)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnconv.api import ann_accuracy, simulate
from snnconv.checkpoints import BUNDLED_DIR
from snnconv.data.datasets import load_dataset
from snnconv.ir import Graph
from snnconv.models.zoo import build_model

# printed to stderr before a conversion starts; every other stderr line of a failed run is the error
BANNER = re.compile(r"^converting \S+ on \S+ \(T = [\d,]+\)$")


def cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "snnconv.cli", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True)


def run_main(*args, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``snnconv <args>`` in-process through ``snnconv.cli.main``; returns code/stdout/stderr like a subprocess."""
    from snnconv import cli as cli_module

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["snnconv", *map(str, args)])
    try:
        cli_module.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


@pytest.fixture
def snnconv_cli(monkeypatch, capsys, tmp_path):
    """In-process runner with the working directory set to tmp_path."""
    monkeypatch.chdir(tmp_path)
    return lambda *args: run_main(*args, monkeypatch=monkeypatch, capsys=capsys)


def leftovers(out: Path) -> list[str]:
    """Hidden temp/backup folders an interrupted atomic write could leave next to ``out``."""
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] if out.parent.is_dir() else []


# -- successful runs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    out = base / "tmp" / "run"
    proc = cli("convert", "--model", "mnist_cnn", "--dataset", "mnist-bundled", "--timesteps", "1,4",
               "--eval-samples", "64", "--calib-samples", "64", "--output-dir", out, cwd=base)
    assert proc.returncode == 0, proc.stderr
    return base, out, proc


def test_convert_writes_all_outputs(converted):
    base, out, proc = converted
    assert sorted(p.name for p in out.iterdir()) == [".snnconv-run.json", "accuracy_vs_T.png", "ann.pt", "report.html",
                                                     "report.json", "report.md", "snn.pt"]
    assert leftovers(out) == []
    assert not (base / "artifacts").exists()  # --output-dir was honoured
    assert (out / "accuracy_vs_T.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in proc.stderr
    assert re.search(r"^T=\s*4: SNN [\d.]+% \(ANN [\d.]+%\)$", proc.stderr, re.M)


def test_convert_report_contents(converted):
    _, out, _ = converted
    r = json.loads((out / "report.json").read_text())
    snn = Graph.load(out / "snn.pt")
    ann = Graph.load(out / "ann.pt")
    neurons = [n for n, node in snn.nodes.items() if node.kind == "neuron"]
    assert len(neurons) == 4 and "batchnorm" not in snn.kinds()
    assert ann.kinds()["batchnorm"] == 3 and "neuron" not in ann.kinds()  # the ingested ANN, before the passes

    assert r["model"] == "mnist_cnn" and r["dataset"] == "mnist-bundled"
    assert r["samples"] == 64 and r["calib_samples"] == 64 and r["timesteps"] == [1, 4] and r["max_T"] == 4
    assert set(r["snn_accuracy"]) == {"1", "4"}
    assert len(r["snn_accuracy_all_t"]) == 4
    assert r["snn_accuracy"]["1"] == r["snn_accuracy_all_t"][0] and r["snn_accuracy"]["4"] == r["snn_accuracy_all_t"][3]
    for acc in [r["ann_accuracy"], *r["snn_accuracy"].values()]:
        assert 0 <= acc <= 100 and (acc * 64 / 100) == pytest.approx(round(acc * 64 / 100))
    assert r["ann_accuracy"] >= 90  # the bundled weights are trained

    # the numbers are reproducible from the saved graphs on the same samples
    test = load_dataset("mnist-bundled", train=False).subset(64, seed=0)
    assert ann_accuracy(ann, test)[0] == pytest.approx(r["ann_accuracy"])
    acc = simulate(snn, test, 4, layer_error=False).accuracy()
    assert acc == pytest.approx(r["snn_accuracy_all_t"])

    assert set(r["firing_rates"]) == set(neurons) and all(0 < v < 1 for v in r["firing_rates"].values())
    assert set(r["layer_error"]) == set(neurons)
    assert all(math.isfinite(v) and v >= 0 for v in r["layer_error"].values())
    assert set(r["energy"]) == {"1", "4"}
    e1, e4 = r["energy"]["1"], r["energy"]["4"]
    assert e4["macs"] == pytest.approx(4 * e1["macs"])  # the first conv reads the analog input every step
    assert e1["macs"] == pytest.approx(16 * 28 * 28 * 9)
    assert e4["synops"] > e1["synops"] > 0
    for e in (e1, e4):
        assert e["energy_uj"] == pytest.approx((0.9 * e["synops"] + 4.6 * e["macs"]) * 1e-6)
    assert r["conversion"]["method"] == "percentile" and r["passes"]
    assert "| conv2d.default | 3 | yes |" in r["coverage"]

    md = (out / "report.md").read_text()
    assert md.startswith("# snnconv report: mnist_cnn on mnist-bundled")
    assert re.search(r"^\| 1 \| [\d.]+ \|", md, re.M) and re.search(r"^\| 4 \| [\d.]+ \|", md, re.M)
    for n in neurons:
        assert f"| {n} |" in md


def test_evaluate_saved_snn(converted, snnconv_cli):
    base, out, _ = converted
    proc = snnconv_cli("evaluate", "--snn", out / "snn.pt", "--dataset", "mnist-bundled", "--timesteps", "4",
                       "--eval-samples", "32")
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"T=4: ([\d.]+)%\n", proc.stdout)
    assert m, proc.stdout
    split = load_dataset("mnist-bundled", train=False).subset(32)
    expected = simulate(Graph.load(out / "snn.pt"), split, 4, layer_error=False).accuracy()[3]
    assert m.group(1) == f"{expected:.2f}"


def test_inspect_zoo_model_prints_coverage_and_graph(tmp_path, snnconv_cli):
    proc = snnconv_cli("inspect", "mnist_cnn", "--dataset", "mnist")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("| op | count | supported |")
    for row in ("| conv2d.default | 3 | yes |", "| relu.default | 4 | yes |", "| linear.default | 2 | yes |"):
        assert row in text
    summary = text.split("\n\n", 1)[1].strip().splitlines()
    assert summary[0].split()[:2] == ["name", "op"]
    m = re.fullmatch(r"(\d+) nodes, 0 spiking, ([\d,]+) parameters; outputs: fc2", summary[-1])
    assert m and int(m.group(1)) == len(summary) - 2
    names = [ln.split()[0] for ln in summary[1:-1]]
    assert names[0] == "input" and {"features.0", "fc1", "fc2"} <= set(names)
    model = build_model("mnist_cnn", 10, 1)
    n_tensors = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if "running" in n)
    assert int(m.group(2).replace(",", "")) == n_tensors
    assert not list(tmp_path.iterdir())  # inspect writes nothing


def test_inspect_saved_snn(converted, snnconv_cli):
    base, out, _ = converted
    proc = snnconv_cli("inspect", out / "snn.pt")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\d+ nodes, 4 spiking, ", proc.stdout, re.M)
    assert "IF theta=" in proc.stdout


def test_convert_with_yaml_config_and_flag_override(tmp_path, snnconv_cli):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: mnist_cnn\n"
                   "dataset: mnist-bundled\n"
                   "timesteps: [1, 2]\n"
                   "eval_samples: 32\n"
                   "calib_samples: 32\n"
                   "conversion:\n"
                   "  method: max\n"
                   "  granularity: layer\n"
                   "  v_init: 0.0\n")
    out = tmp_path / "yaml-run"
    proc = snnconv_cli("convert", "--config", cfg, "--timesteps", "3", "--eval-samples", "16", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["timesteps"] == [3] and list(r["snn_accuracy"]) == ["3"]  # flag beats the file
    assert r["samples"] == 16  # flag beats the file
    assert r["calib_samples"] == 32  # from the file
    assert r["conversion"]["method"] == "max" and r["conversion"]["granularity"] == "layer"
    assert r["conversion"]["v_init"] == 0.0
    snn = Graph.load(out / "snn.pt")
    neurons = [node for node in snn.nodes.values() if node.kind == "neuron"]
    assert neurons and all(n.threshold.numel() == 1 and n.v_init == 0.0 for n in neurons)


def test_int8_template_runs_int8_kernels_and_scores_as_fp32(tmp_path, snnconv_cli):
    """configs/templates/mnist-cnn-int8.yaml: the layers fed by spikes run on the int8 kernels (the log says how
    many), the report records it, and the scores equal the fp32 kernels' on the same network."""
    template = Path(__file__).resolve().parent.parent / "configs" / "templates" / "mnist-cnn-int8.yaml"
    cfg = tmp_path / "int8.yaml"
    cfg.write_text(template.read_text().replace("snnconv/assets/", f"{BUNDLED_DIR.as_posix()}/"))
    reports = {}
    for kernels in ("int8", "fp32"):
        out = tmp_path / f"run-{kernels}"
        proc = snnconv_cli("convert", "--config", cfg, "--kernels", kernels, "--timesteps", "1,2", "--eval-samples",
                           "64", "--calib-samples", "64", "--output-dir", out)
        assert proc.returncode == 0, proc.stderr
        assert ("int8 kernels on 4 of 5 conv/linear layers" in proc.stderr) == (kernels == "int8"), proc.stderr
        reports[kernels] = json.loads((out / "report.json").read_text())
        assert reports[kernels]["kernels"] == kernels
    assert reports["int8"]["snn_accuracy"] == reports["fp32"]["snn_accuracy"]
    proc = snnconv_cli("evaluate", "--snn", tmp_path / "run-int8" / "snn.pt", "--dataset", "mnist-bundled",
                       "--timesteps", "2", "--eval-samples", "64", "--kernels", "int8")
    assert proc.returncode == 0 and proc.stdout == f"T=2: {reports['int8']['snn_accuracy']['2']:.2f}%\n", proc.stderr
    proc = snnconv_cli("evaluate", "--snn", tmp_path / "run-int8" / "snn.pt", "--kernels", "int4")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].endswith("--kernels must be fp32 or int8, "
                                                                                  "not 'int4'")


def test_embedded_default_uses_the_recipe_chosen_on_validation(tmp_path, snnconv_cli, monkeypatch):
    """`snnconv convert` with no model converts the bundled checkpoint with the recipe that
    scripts/choose_embedded_default.py chose on the validation split; an explicit option wins."""
    from snnconv.api import embedded_default

    choice = embedded_default()
    assert choice["chosen"] in choice["candidates"] and "validation" in choice["criterion"]
    assert max(choice["candidates"], key=lambda k: choice["candidates"][k]["criterion"]) == choice["chosen"]
    monkeypatch.setenv("SNNCONV_DATA_DIR", str(tmp_path / "none"))  # offline: the bundled subset
    out = tmp_path / "emb"
    proc = snnconv_cli("convert", "--timesteps", "2", "--eval-samples", "32", "--calib-samples", "32",
                       "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert f"recipe '{choice['chosen']}'" in proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert all(r["conversion"][k] == v for k, v in choice["conversion"].items())
    proc = snnconv_cli("convert", "--method", "max", "--timesteps", "2", "--eval-samples", "32", "--calib-samples",
                       "32", "--output-dir", tmp_path / "emb-max")
    assert proc.returncode == 0 and "embedded default" not in proc.stderr
    assert json.loads((tmp_path / "emb-max" / "report.json").read_text())["conversion"]["method"] == "max"


def test_target_takes_the_best_recipe_the_framework_runs(tmp_path, snnconv_cli, monkeypatch):
    """`convert --target T` converts with the best candidate on validation whose neurons T's own neurons run
    (the card's runs_in); the report's framework check agrees. A recipe T cannot run is a one-line error before
    the simulation with no run folder; so is an unknown target."""
    from snnconv.api import embedded_default, recipe_for_target

    monkeypatch.setenv("SNNCONV_DATA_DIR", str(tmp_path / "none"))  # offline: the bundled subset
    choice = embedded_default()
    assert all(c["runs_in"] for c in choice["candidates"].values())  # every candidate runs somewhere
    assert choice["candidates"][choice["chosen"]]["runs_in"] == ["lava", "sinabs"]  # graded: sinabs, Lava (deploy.md)
    name, cand = recipe_for_target(choice, "spikingjelly", "embedded")
    assert name != choice["chosen"] and "spikingjelly" in cand["runs_in"]
    assert all(cand["criterion"] >= c["criterion"] for c in choice["candidates"].values()
               if "spikingjelly" in c["runs_in"])
    out = tmp_path / "sj"
    proc = snnconv_cli("convert", "--target", "spikingjelly", "--timesteps", "2", "--eval-samples", "32",
                       "--calib-samples", "32", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert f"recipe '{name}'" in proc.stderr and f"'{choice['chosen']}' scores higher" in proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert all(r["conversion"][k] == v for k, v in cand["conversion"].items())
    assert r["spikes"]["frameworks"]["spikingjelly"] == [] and r["config"]["target"] == "spikingjelly"
    proc = snnconv_cli("convert", "--method", "sfn", "--target", "snntorch", "--timesteps", "2", "--eval-samples",
                       "32", "--calib-samples", "32", "--output-dir", tmp_path / "no")
    last = proc.stderr.strip().splitlines()[-1]  # after the conversion (what it needs is known then), no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "ANN accuracy" not in proc.stderr
    assert last.startswith("error: --target snntorch") and "graded" in last and not (tmp_path / "no").exists()
    proc = snnconv_cli("convert", "--target", "loihi3", "--output-dir", tmp_path / "no")
    assert proc.returncode == 2 and "loihi3" in proc.stderr and "spikingjelly" in proc.stderr
    assert not (tmp_path / "no").exists()


def test_convert_target_lava_delivers_the_network_lava_runs(tmp_path, snnconv_cli, monkeypatch):
    """`convert --target lava --export lava` on the embedded default: the card's best recipe that Lava runs (the
    overall choice: Lava runs graded spikes), its Lava network run in Lava at the run's T equal to snnconv's
    integer reference, and nothing left in the export folder but what the export writes."""
    from snnconv.api import embedded_default
    from snnconv.backends import lava

    lava.lava_python()  # CI installs Lava: a missing venv fails here, it does not skip
    monkeypatch.setenv("SNNCONV_DATA_DIR", str(tmp_path / "none"))  # offline: the bundled subset
    choice = embedded_default()
    assert "lava" in choice["candidates"][choice["chosen"]]["runs_in"]
    out = tmp_path / "run"
    proc = snnconv_cli("convert", "--target", "lava", "--export", "lava", "--timesteps", "2", "--eval-samples", "32",
                       "--calib-samples", "32", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert f"recipe '{choice['chosen']}'" in proc.stderr and "lava runs it" in proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["config"]["target"] == "lava" and r["spikes"]["frameworks"]["lava"] == []
    cmp = json.loads((out / "lava" / "comparison.json").read_text())
    assert cmp["comparison"]["readout_identical"] and cmp["timesteps"] == 2, cmp  # Lava runs the run's T
    assert not (out / "lava" / "__pycache__").exists()


def test_a_recipe_card_beside_the_weights_chooses_the_conversion(tmp_path, snnconv_cli, monkeypatch):
    """scripts/choose_recipe.py scores the candidate recipes on the validation split and writes the card beside
    the checkpoint; `convert --model M --dataset D` then uses it, unless a conversion option is given, the card
    was written for other weights (hash), or it is malformed (one-line error naming the card and key)."""
    import shutil

    from snnconv.checkpoints import BUNDLED_DIR

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("SNNCONV_CACHE_DIR", str(cache))
    weights = cache / "mnist_cnn-mnist.pt"
    shutil.copy(BUNDLED_DIR / "mnist_cnn_qcfs2-mnist-55k.pt", weights)
    script = Path(__file__).resolve().parent.parent / "scripts" / "choose_recipe.py"
    proc = subprocess.run([sys.executable, str(script), "--model", "mnist_cnn", "--dataset", "mnist-bundled",
                           "--weights", str(weights), "--data-dir", str(tmp_path), "--calib-samples", "64",
                           "--threads", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    card_path = cache / "mnist_cnn-mnist.recipe.json"
    card = json.loads(card_path.read_text())
    assert card["chosen"] == max(card["candidates"], key=lambda k: card["candidates"][k]["criterion"])
    assert len(card["candidates"]) == 4 and "test set was not read" in card["validation"]
    # which targets run each candidate, from its converted network: graded spikes only sinabs and Lava
    assert card["candidates"]["sfn (graded)"]["runs_in"] == ["lava", "sinabs"]
    assert card["candidates"]["qcfs_signed"]["runs_in"] == ["lava", "norse", "sinabs", "snntorch", "spikingjelly"]
    run = ["convert", "--model", "mnist_cnn", "--dataset", "mnist-bundled", "--timesteps", "2", "--eval-samples",
           "16", "--calib-samples", "32", "--output-dir"]
    proc = snnconv_cli(*run, tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    assert f"recipe '{card['chosen']}'" in proc.stderr and "mnist_cnn-mnist.recipe.json" in proc.stderr
    r = json.loads((tmp_path / "a" / "report.json").read_text())
    assert all(r["conversion"][k] == v for k, v in card["conversion"].items())
    proc = snnconv_cli(*run, tmp_path / "b", "--method", "max")  # an explicit option wins
    assert proc.returncode == 0 and "recipe '" not in proc.stderr
    assert json.loads((tmp_path / "b" / "report.json").read_text())["conversion"]["method"] == "max"
    proc = snnconv_cli(*run, tmp_path / "t", "--target", "norse")  # the card's best that Norse runs
    best = max((k for k, c in card["candidates"].items() if "norse" in c["runs_in"]),
               key=lambda k: card["candidates"][k]["criterion"])
    assert proc.returncode == 0 and f"recipe '{best}'" in proc.stderr, proc.stderr
    # a batch item with no conversion converts as `convert --config` does: with the card (or --target's pick)
    from snnconv.batch import run_batch

    for name, extra in (("plain", ""), ("norse", "target: norse\n")):
        (tmp_path / f"{name}.yaml").write_text("model: mnist_cnn\ndataset: mnist-bundled\ntimesteps: [2]\n"
                                               "eval_samples: 16\ncalib_samples: 32\n" + extra)
    summary = run_batch([tmp_path / "plain.yaml", tmp_path / "norse.yaml"], tmp_path / "batch", log_fn=lambda *_: None)
    assert summary["ok"] == 2, summary
    for name, want in (("plain", card["chosen"]), ("norse", best)):
        conv = json.loads((tmp_path / "batch" / name / "report.json").read_text())["conversion"]
        assert all(conv[k] == v for k, v in card["candidates"][want]["conversion"].items())
    assert card["candidates"][card["chosen"]]["conversion"] != card["candidates"][best]["conversion"]
    stripped = {**card, "candidates": {k: {f: v for f, v in c.items() if f != "runs_in"}
                                       for k, c in card["candidates"].items()}}
    card_path.write_text(json.dumps(stripped))  # a card from before runs_in: --target says how to add them
    proc = snnconv_cli(*run, tmp_path / "u", "--target", "norse")
    assert proc.returncode == 2 and "--targets-only" in proc.stderr and not (tmp_path / "u").exists()
    proc = subprocess.run([sys.executable, str(script), "--model", "mnist_cnn", "--dataset", "mnist-bundled",
                           "--weights", str(weights), "--data-dir", str(tmp_path), "--calib-samples", "64",
                           "--threads", "1", "--targets-only"], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(card_path.read_text()) == card, proc.stderr  # the same lists back
    assert card["targets_checked"] == ["lava", "norse", "sinabs", "snntorch", "spikingjelly"]
    older = {**card, "targets_checked": [t for t in card["targets_checked"] if t != "lava"]}
    card_path.write_text(json.dumps(older))  # a card written before Lava was a target: not "nothing runs there"
    proc = snnconv_cli(*run, tmp_path / "l", "--target", "lava")
    assert proc.returncode == 2 and "not checked against target 'lava'" in proc.stderr and "--targets-only" in proc.stderr
    assert not (tmp_path / "l").exists()
    card_path.write_text(json.dumps({**card, "checkpoint_sha256": "0" * 64}))  # chosen for other weights
    proc = snnconv_cli(*run, tmp_path / "c")
    assert proc.returncode == 0 and "sha256 differs" in proc.stderr and "recipe '" not in proc.stderr
    assert json.loads((tmp_path / "c" / "report.json").read_text())["conversion"]["method"] == "percentile"
    card_path.write_text(json.dumps({**card, "conversion": {"methd": "qcfs"}}))
    proc = snnconv_cli(*run, tmp_path / "d")
    assert proc.returncode == 2 and "mnist_cnn-mnist.recipe.json" in proc.stderr and "conversion.methd" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()


# -- bad input -------------------------------------------------------------------------------------

def _ckpt_random(tmp):
    p = tmp / "random.pt"
    p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
                  .numpy().tobytes())
    return p


def _ckpt_mismatch(tmp):
    p = tmp / "mismatch.pt"
    torch.save({"model": "mnist_cnn", "state_dict": build_model("resnet20").state_dict()}, p)
    return p


def _ckpt_other_model(tmp):
    p = tmp / "other.pt"
    torch.save({"model": "resnet20", "state_dict": build_model("resnet20").state_dict()}, p)
    return p


def _yaml(name, text):
    def make(tmp):
        p = tmp / name
        p.write_text(text)
        return p
    return make


MNIST = ["--model", "mnist_cnn", "--dataset", "mnist-bundled"]
# no network for the loader's download fallback: SNNCONV_OFFLINE where the loader honours it, and a proxy
# that refuses connections otherwise (urllib reads these variables), so the test never downloads anything
NO_NET = {"SNNCONV_OFFLINE": "1", "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
          "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}

# id -> (args builder (tmp -> list), extra env builder (tmp -> dict), fragments the error line must contain)
BAD = {
    "missing-weights": (lambda t: [*MNIST, "--weights", t / "nope.pt"], None, ["nope.pt", "not found"]),
    "unknown-model": (lambda t: ["--model", "nosuchnet", "--dataset", "mnist-bundled"], None,
                      ["unknown model 'nosuchnet'"]),
    "unknown-dataset": (lambda t: ["--model", "mnist_cnn", "--dataset", "nosuchdata"], None, ["nosuchdata"]),
    "empty-data-dir": (lambda t: ["--model", "mnist_cnn", "--dataset", "mnist", "--data-dir", t / "empty"],
                       lambda t: NO_NET, ["train-images-idx3-ubyte", "looked in", "empty", "--data-dir"]),
    "corrupt-checkpoint": (lambda t: [*MNIST, "--weights", _ckpt_random(t)], None,
                           ["cannot load", "random.pt", "expected a checkpoint", "not a complete torch.save file"]),
    "mismatched-checkpoint": (lambda t: [*MNIST, "--weights", _ckpt_mismatch(t)], None,
                              ["mismatch.pt", "does not match the architecture"]),
    "checkpoint-of-other-model": (lambda t: [*MNIST, "--weights", _ckpt_other_model(t)], None,
                                  ["other.pt", "resnet20", "mnist_cnn"]),
    "missing-config": (lambda t: ["--config", t / "absent.yaml"], None, ["absent.yaml", "not found"]),
    "bad-yaml-syntax": (lambda t: ["--config", _yaml("syntax.yaml", "model: mnist_cnn\ntimesteps: [1, 2\n")(t)],
                        None, ["syntax.yaml", "invalid YAML", "line"]),
    "yaml-unknown-key": (lambda t: ["--config", _yaml("unknown.yaml", "model: mnist_cnn\nbogus_key: 3\n")(t)],
                         None, ["unknown.yaml", "bogus_key"]),
    "yaml-unknown-nested-key": (lambda t: ["--config", _yaml("nested.yaml", "conversion:\n  bogus: 1\n")(t)],
                                None, ["nested.yaml", "conversion", "bogus"]),
    "yaml-wrong-type": (lambda t: ["--config", _yaml("type.yaml", "model: mnist_cnn\ncalib_samples: many\n")(t)],
                        None, ["type.yaml", "calib_samples", "int"]),
    "yaml-not-a-mapping": (lambda t: ["--config", _yaml("list.yaml", "- a\n- b\n")(t)], None,
                           ["list.yaml", "mapping"]),
    "yaml-bad-method": (lambda t: ["--config", _yaml("method.yaml", "conversion:\n  method: median\n")(t)],
                        None, ["median"]),
    "no-cached-weights": (lambda t: ["--model", "resnet20", "--dataset", "cifar10"],
                          lambda t: {"SNNCONV_CACHE_DIR": str(t / "empty-cache")},
                          ["resnet20", "snnconv train --model resnet20 --dataset cifar10",
                           "looked for resnet20-cifar10.pt in", "empty-cache"]),
    # a recipe that needs QCFS activations is told the QCFS training command (Recipe.trained_as)
    "no-cached-weights-qcfs": (lambda t: ["--model", "resnet20", "--dataset", "cifar10", "--method", "qcfs"],
                               lambda t: {"SNNCONV_CACHE_DIR": str(t / "empty-cache")},
                               ["snnconv train --model resnet20 --dataset cifar10 --epochs 30 --activation qcfs "
                                "--levels 4"]),
    "timesteps-zero": (lambda t: [*MNIST, "--timesteps", "0"], None, ["timesteps", "'0'"]),
    "timesteps-not-a-number": (lambda t: [*MNIST, "--timesteps", "abc"], None, ["timesteps", "'abc'"]),
}


def check_user_error(proc: subprocess.CompletedProcess, out: Path, fragments=()) -> str:
    """Non-zero exit, no traceback, one 'error:' line (the last one), no output folder left behind."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert all(BANNER.match(ln) for ln in lines[:-1]), proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    assert not out.exists()
    assert leftovers(out) == []
    return errors[0]


# run as real processes: the exit status and stderr of the installed entry point, and a fresh urllib
# (so the proxy variables that make the download fail deterministically are honoured)
SUBPROCESS_CASES = {"missing-weights", "empty-data-dir"}


@pytest.mark.parametrize("case", list(BAD))
def test_convert_bad_input_gives_one_line_error(case, tmp_path, monkeypatch, capsys):
    make_args, make_env, fragments = BAD[case]
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    args = ["convert", *make_args(tmp_path), "--output-dir", out]
    env = make_env(tmp_path) if make_env else {}
    if case in SUBPROCESS_CASES:
        proc = cli(*args, cwd=tmp_path, env=env)
    else:
        monkeypatch.chdir(tmp_path)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        proc = run_main(*args, monkeypatch=monkeypatch, capsys=capsys)
    check_user_error(proc, out, fragments)
    if case == "empty-data-dir":  # the failed download left nothing behind: no partial files, no MNIST/raw/ tree
        assert list((tmp_path / "empty").rglob("*")) == []


@pytest.mark.parametrize("method,activation,levels", [("percentile", "relu", 0), ("qcfs", "qcfs", 4),
                                                       ("sfn", "qcfs", 4)])
def test_train_if_missing_trains_what_the_recipe_converts(method, activation, levels, tmp_path, snnconv_cli,
                                                          monkeypatch):
    """--train-if-missing trains the activation the chosen recipe needs (a QCFS net for qcfs and sfn, which
    would refuse or lose the exactness on a ReLU one after hours of training); the training itself is stubbed:
    the call's arguments are the subject, and the stub's error ends the run."""
    from snnconv import api
    from snnconv.errors import SnnconvError

    calls = []

    def fake_train(*args, **kwargs):
        calls.append(kwargs)
        raise SnnconvError("training stubbed")

    monkeypatch.setattr(api, "train", fake_train)
    monkeypatch.setenv("SNNCONV_CACHE_DIR", str(tmp_path / "empty-cache"))
    proc = snnconv_cli("convert", "--model", "resnet20", "--dataset", "cifar10", "--method", method,
                       "--train-if-missing", "--output-dir", tmp_path / "out")
    assert proc.returncode == 2 and "training stubbed" in proc.stderr, proc.stderr
    assert len(calls) == 1 and (calls[0]["activation"], calls[0]["levels"]) == (activation, levels), calls
    assert ("--epochs 30 --activation qcfs --levels 4" in proc.stderr) == (activation == "qcfs"), proc.stderr


def test_other_commands_bad_input(tmp_path, snnconv_cli):
    not_ir = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, not_ir)
    out = tmp_path / "never"
    err = check_user_error(snnconv_cli("evaluate", "--snn", not_ir, "--dataset", "mnist-bundled"), out)
    assert "not an snnconv IR file" in err
    err = check_user_error(snnconv_cli("inspect", "no_such_thing"), out)
    assert "no_such_thing" in err
    err = check_user_error(snnconv_cli("evaluate", "--dataset", "mnist-bundled"), out)
    assert "--snn" in err and "--model" in err


def test_train_bad_device_is_one_line_error(tmp_path, snnconv_cli):
    out = tmp_path / "never.pt"
    err = check_user_error(snnconv_cli("train", *MNIST, "--epochs", "1", "--device", "tpu7", "--out", out), out)
    assert "tpu7" in err
    if not torch.cuda.is_available():  # the GPU path itself is exercised only where there is a GPU
        err = check_user_error(snnconv_cli("finetune", *MNIST, "--weights", BUNDLED_DIR / "mnist_cnn-mnist.pt",
                                           "--device", "cuda", "--out", out), out)
        assert "no CUDA GPU" in err


# -- regressions: bugs found by the first version of this suite --

def test_error_is_the_only_stderr_line(tmp_path, snnconv_cli):
    proc = snnconv_cli("convert", *MNIST, "--weights", tmp_path / "nope.pt", "--output-dir", tmp_path / "out")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:")


def test_unknown_dataset_is_named_as_such(tmp_path, snnconv_cli):
    proc = snnconv_cli("convert", "--model", "mnist_cnn", "--dataset", "nosuchdata", "--output-dir", tmp_path / "out")
    assert "unknown dataset 'nosuchdata'" in proc.stderr


def test_yaml_wrong_type_for_optional_key(tmp_path, snnconv_cli):
    cfg = tmp_path / "opt.yaml"
    cfg.write_text("model: mnist_cnn\ndataset: mnist-bundled\neval_samples: many\n")
    out = tmp_path / "out"
    check_user_error(snnconv_cli("convert", "--config", cfg, "--output-dir", out), out, ["eval_samples"])


@pytest.mark.parametrize("flag", ["--eval-samples", "--calib-samples"])
def test_zero_samples_rejected(flag, tmp_path, snnconv_cli):
    out = tmp_path / "out"
    proc = snnconv_cli("convert", *MNIST, "--timesteps", "1", "--eval-samples", "8", "--calib-samples", "8", flag,
                       "0", "--output-dir", out)
    check_user_error(proc, out, [flag.lstrip("-").replace("-", "_")])


def test_committed_recipe_cards_match_their_checkpoints():
    """Every committed recipe card was chosen for the checkpoint committed beside it (a retrained checkpoint
    without a re-chosen card would make the headline command fall back to the default conversion), and
    names targets each candidate runs in among those it was checked against."""
    from snnconv.api import recipe_card

    root = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "checkpoints"
    cards = sorted(root.glob("*.recipe.json"))
    assert cards, "the headline's card is committed"
    for path in cards:
        card = recipe_card(path.with_name(path.name.replace(".recipe.json", ".pt")))
        assert card is not None and not card["stale"], f"{path.name}: chosen for other weights; re-run choose_recipe.py"
        assert card["chosen"] in card["candidates"]
        for cand in card["candidates"].values():
            assert set(cand["runs_in"]) <= set(card["targets_checked"])
