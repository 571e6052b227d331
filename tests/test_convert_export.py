"""``snnconv convert --export onnx|nir|lava``: exports land in the run folder, written by the backends'
own export functions; a graph an export refuses fails the whole run with the backend's one-line message,
a non-zero exit code and no (partial) run folder."""
from __future__ import annotations

import pytest
import torch

from snnconv.backends.exports import parse_exports
from snnconv.config import load_config
from snnconv.errors import SnnconvError
from snnconv.output import MARKER
from test_cli import leftovers, run_main

# the bundled MNIST CNN on the bundled subset, as small as a conversion gets
SMALL = ["--model", "mnist_cnn", "--dataset", "mnist-bundled", "--timesteps", "2", "--eval-samples", "8",
         "--calib-samples", "16"]
NIR_OK = ["--reset", "zero", "--v-init", "0"]


@pytest.fixture
def snnconv_cli(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    return lambda *args: run_main(*args, monkeypatch=monkeypatch, capsys=capsys)


def _error_line(proc) -> str:
    """The one stderr line after the conversion's progress lines; the run must have failed with exit 2."""
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def test_exports_written_into_run_folder(tmp_path, snnconv_cli):
    from snnconv.backends.nir import import_nir
    from snnconv.ir import Graph
    from snnconv.runtime.interpreter import run_ann

    out = tmp_path / "run"
    proc = snnconv_cli("convert", *SMALL, *NIR_OK, "--output-dir", out, "--export", "nir", "--export", "onnx")
    assert proc.returncode == 0, proc.stderr
    assert {"snn.nir", "ann.onnx", "snn.pt", "report.json"} <= {p.name for p in out.iterdir()}
    assert not leftovers(out) and not list(out.glob("*.part")) and [p.name for p in out.glob(".*")] == [MARKER]
    import json

    assert json.loads((out / "report.json").read_text())["exports"] == ["snn.nir", "ann.onnx"]
    # the NIR file is the converted SNN: same outputs over time as snn.pt
    from snnconv.api import simulate
    from snnconv.data.datasets import load_dataset

    split = load_dataset("mnist-bundled", train=False).subset(4)
    acc_pt = simulate(Graph.load(out / "snn.pt"), split, 4, layer_error=False).accuracy()
    acc_nir = simulate(import_nir(out / "snn.nir"), split, 4, layer_error=False).accuracy()
    assert acc_pt == acc_nir
    # the ONNX file is the ANN before conversion
    import onnxruntime as ort

    x, _ = next(iter(split.batches(4)))
    sess = ort.InferenceSession(str(out / "ann.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    want = run_ann(Graph.load(out / "ann.pt"), x)
    assert torch.allclose(torch.from_numpy(got), want if torch.is_tensor(want) else want[0], atol=1e-4)


def test_accurate_conversions_are_exported_with_their_dynamics(tmp_path, snnconv_cli):
    """The default (subtractive reset, v_init 1/2) and SFN (graded) conversions leave snnconv as they are:
    the NIR file carries the snnconv-dynamics metadata and reads back as the same neurons."""
    from snnconv.backends.nir import import_nir

    for flags, levels in (([], 1), (["--method", "sfn"], 4)):
        out = tmp_path / f"run{levels}"
        proc = snnconv_cli("convert", *SMALL, *flags, "--output-dir", out, "--export", "nir")
        assert proc.returncode == 0, proc.stderr
        assert "snnconv dynamics" in proc.stderr
        neurons = [n for n in import_nir(out / "snn.nir").nodes.values() if n.kind == "neuron"]
        assert neurons and all(n.reset == "subtract" and n.v_init == 0.5 and n.levels == levels for n in neurons)


def test_max_pool_refused(tmp_path, snnconv_cli):
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    from snnconv.backends.onnx_export import export_onnx
    from snnconv.frontends.torch import from_torch

    export_onnx(from_torch(m.eval(), (1, 28, 28))[0], tmp_path / "maxpool.onnx")  # an ANN file convert accepts
    out = tmp_path / "run"
    line = _error_line(snnconv_cli("convert", "--model", tmp_path / "maxpool.onnx", *SMALL[2:], *NIR_OK,
                                   "--output-dir", out, "--export", "nir"))
    assert "max pooling" in line and "--maxpool tree" in line and not out.exists() and not leftovers(out)
    # the option the message names: the same file converts, exports, and the NIR file holds no max pool
    tree = tmp_path / "tree"
    proc = snnconv_cli("convert", "--model", tmp_path / "maxpool.onnx", *SMALL[2:], "--maxpool", "tree",
                       "--output-dir", tree, "--export", "nir")
    assert proc.returncode == 0, proc.stderr
    import nir

    kinds = {type(n).__name__ for n in nir.read(tree / "snn.nir").nodes.values()}
    assert "IF" in kinds and not any("Max" in k for k in kinds)


def test_failure_while_writing_leaves_no_folder(tmp_path, snnconv_cli, monkeypatch):
    """A failure after the checks (here: in the ONNX writer, after the NIR file was written) discards the run."""
    from snnconv.backends import onnx_export

    def broken(*_a, **_k):
        raise SnnconvError("onnx writer broke")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    out = tmp_path / "run"
    from snnconv.output import atomic_dir

    with atomic_dir(out) as d:
        (d / "old.txt").write_text("previous run")  # an existing run folder survives a failed rerun untouched
    before = sorted(p.name for p in out.iterdir())
    line = _error_line(snnconv_cli("convert", *SMALL, *NIR_OK, "--output-dir", out, "--export", "nir,onnx",
                                   "--overwrite"))
    assert line == "error: onnx writer broke"
    assert sorted(p.name for p in out.iterdir()) == before and not leftovers(out)


def test_lava_without_venv_fails_before_simulating(tmp_path, snnconv_cli, monkeypatch):
    monkeypatch.setenv("SNNCONV_LAVA_VENV", str(tmp_path / "no-venv"))
    out = tmp_path / "run"
    proc = snnconv_cli("convert", *SMALL, *NIR_OK, "--output-dir", out, "--export", "lava")
    assert "setup_lava.sh" in _error_line(proc)
    assert "T=" not in proc.stderr  # refused right after conversion, before the simulation
    assert not out.exists() and not leftovers(out)


def test_export_option_parsing(tmp_path):
    assert parse_exports("nir, onnx,nir") == ["nir", "onnx"]
    with pytest.raises(SnnconvError, match="unknown export format 'dot'"):
        parse_exports(["nir", "dot"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output:\n  export: [lava, nir]\n")
    assert load_config(cfg, {}).output.export == ["lava", "nir"]
    assert load_config(cfg, {"output": {"export": ["onnx"]}}).output.export == ["onnx"]
    cfg.write_text("output:\n  export: nirr\n")
    with pytest.raises(SnnconvError, match="output.export.*unknown export format 'nirr'"):
        load_config(cfg, {})


def test_max_pool_conversion_warns(tmp_path, monkeypatch):
    """A max-pool network converted with the gating scheme says it loses fidelity, in the log and the report;
    the default (count mode, exact in rate) does not warn."""
    import json

    from torch import nn

    import snnconv.models.zoo as zoo
    from snnconv.api import run_convert
    from snnconv.checkpoints import save_checkpoint
    from snnconv.config import ConversionConfig, RunConfig

    orig = zoo.MODELS["mnist_cnn"]

    def with_maxpool(**k):  # the bundled CNN's architecture with max pooling instead of average pooling
        m = orig(**k)
        for mod in list(m.modules()):
            for cname, child in list(mod.named_children()):
                if isinstance(child, nn.AvgPool2d):
                    setattr(mod, cname, nn.MaxPool2d(child.kernel_size, child.stride))
        return m

    monkeypatch.setitem(zoo.MODELS, "mnist_cnn", with_maxpool)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", {"model": "mnist_cnn", "state_dict": with_maxpool(num_classes=10, in_channels=1).state_dict()})
    out = tmp_path / "run"
    lines = []
    small = dict(model="mnist_cnn", weights=str(tmp_path / "m.pt"), dataset="mnist-bundled", timesteps=[1],
                 eval_samples=8, calib_samples=8)
    assert not run_convert(RunConfig(**small), log_fn=lambda *_: None, coverage_fn=lambda *_: None)["warnings"]
    rep = run_convert(RunConfig(**small, output_dir=str(out), conversion=ConversionConfig(maxpool="gate")),
                      log_fn=lines.append, coverage_fn=lambda *_: None)
    assert rep["warnings"] and "max pooling" in rep["warnings"][0]
    assert any(ln.startswith("warning: max pooling") for ln in lines)
    assert "**warning**: max pooling" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["warnings"] == rep["warnings"]


def test_an_export_target_is_one_module_plus_one_registration(tmp_path, monkeypatch, snnconv_cli):
    """A new target: a module with check_export / write_export and one register_export line; parse, check and
    write go through the registry (no other file lists the formats)."""
    import sys

    from snnconv.backends import exports

    (tmp_path / "my_target.py").write_text(
        "def check_export(snn):\n    assert snn is not None\n\n"
        "def write_export(path, snn, ann, input_shape, dataset, data_dir, log_fn=print, timesteps=None):\n"
        "    open(path, 'w').write(str(len(snn.nodes)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(exports.EXPORT_TARGETS, "mine", exports.ExportTarget("mine", "mine.txt", "my_target", "test"))
    assert parse_exports("nir,mine") == ["nir", "mine"]
    from snnconv.ir import Graph, Input

    g = Graph()
    g.add("x", Input())
    exports.check_exports(["mine"], g)
    assert exports.write_exports(tmp_path, ["mine"], g, None, (1, 2, 2), "mnist") == ["mine.txt"]
    assert (tmp_path / "mine.txt").read_text() == "1"
    g.inputs, g.outputs = ["x"], ["x"]
    g.save(tmp_path / "snn.pt")  # `snnconv export --format mine` reaches it through the registry too
    assert snnconv_cli("export", "--format", "mine", "--model", tmp_path / "snn.pt", "--out",
                       tmp_path / "cli.txt").returncode == 0
    assert (tmp_path / "cli.txt").read_text() == "1"
    sys.modules.pop("my_target", None)
