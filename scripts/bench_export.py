"""NIR peers and Lava benchmarks: writes docs/benchmarks/nir_peers.{md,json} and docs/benchmarks/lava.{md,json}.

    SNNCONV_DATA_DIR=/work/shared/datasets python scripts/bench_export.py [--part nir|lava|all]

MNIST CNN: the bundled checkpoint (snnconv/assets/mnist_cnn-mnist.pt) converted with the settings NIR
can express (--reset zero --v-init 0; per-channel p99.9 thresholds from 1024 training images),
exported (avg pooling, and sum pooling for Norse), verified in SpikingJelly / Norse / snnTorch.
ResNet-20: the trained CIFAR-10 checkpoint from the model cache if there is one, else randomly
initialised weights (BN statistics randomised) - the exactness check does not need accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from snnconv import checkpoints  # noqa: E402
from snnconv.api import conversion_pipeline, convert_graph, environment, resolve_model  # noqa: E402
from snnconv.backends.nir import export_nir, import_nir, lower_for_nir  # noqa: E402
from snnconv.backends.verify import reference_run, verify  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig  # noqa: E402
from snnconv.data.datasets import load_dataset  # noqa: E402
from snnconv.frontends.torch import from_torch  # noqa: E402
from snnconv.models.zoo import build_model  # noqa: E402
from snnconv.runtime.simulator import Simulator  # noqa: E402

NIR_CFG = ConversionConfig(reset="zero", v_init=0.0)
OUT = REPO / "docs" / "benchmarks"


def mnist_snn():
    model, shape, src = resolve_model(RunConfig(model=str(REPO / "snnconv/assets/mnist_cnn-mnist.pt"), dataset="mnist"))
    g, _ = from_torch(model, shape)
    calib = load_dataset("mnist", None, train=True).subset(1024, 1)
    snn, _ = convert_graph(g, [x for x, _ in calib.batches(256)], conversion_pipeline(NIR_CFG))
    return snn, src


def resnet_snn():
    path = checkpoints.cached_checkpoint("resnet20", "cifar10")
    model = build_model("resnet20", 10, 3)
    if path.is_file():
        checkpoints.apply_state_dict(model, checkpoints.load_checkpoint(path), str(path))
        weights = str(path)
    else:
        from helpers import randomize_batchnorm

        torch.manual_seed(0)
        randomize_batchnorm(model, 0)
        weights = f"random initialisation (seed 0; no trained checkpoint at {path})"
    g, _ = from_torch(model.eval(), (3, 32, 32))
    calib = load_dataset("cifar10", None, train=True).subset(256, 1)
    snn, _ = convert_graph(g, [x for x, _ in calib.batches(128)], conversion_pipeline(NIR_CFG))
    return snn, weights


def lowering_agreement(snn, x, T, pool="avg"):
    """Threshold form (what convert simulates) vs NIR form (unit thresholds): spikes and predictions."""
    a, b = reference_run(snn, x, T), reference_run(lower_for_nir(snn, pool), x, T)
    layers = {n: {"threshold_form": int(a["spikes"][n].sum()), "nir_form": int(b["spikes"][n].sum()),
                  "differing_entries": int((a["spikes"][n] != b["spikes"][n]).sum())} for n in a["spikes"]}
    steps = torch.arange(1, T + 1).view(-1, 1, 1)
    pa, pb = (a["outputs"].cumsum(0) / steps)[-1].argmax(-1), (b["outputs"].cumsum(0) / steps)[-1].argmax(-1)
    return {"layers": layers, "prediction_agreement": float((pa == pb).float().mean())}


def accuracy(graph, split, T, bs=250):
    sim = Simulator(graph, T, collect_stats=False)
    for x, y in split.batches(bs):
        sim.run(x, y)
    return sim.stats.accuracy()[-1]


def part_nir(tmp: Path) -> dict:
    res = {"environment": environment(), "command": "SNNCONV_DATA_DIR=/work/shared/datasets python scripts/bench_export.py --part nir"}
    snn, src = mnist_snn()
    test = load_dataset("mnist", None, train=False)
    x, _ = next(iter(test.subset(8, 2).batches(8)))
    T = 32
    entry = {"model": "mnist_cnn", "weights": src["weights"], "conversion": "percentile 99.9 per channel, reset zero, v_init 0",
             "timesteps": T, "samples": 8, "files": {}}
    acc_split = test.subset(200, 3)
    t0 = time.time()
    entry["accuracy_200_test_T32"] = {"threshold_form": accuracy(snn, acc_split, T),
                                       "nir_form": accuracy(lower_for_nir(snn), acc_split, T)}
    for pool in ("avg", "sum"):
        path = tmp / f"mnist_{pool}.nir"
        info = export_nir(snn, path, pool=pool)
        back = import_nir(path)
        rt = torch.equal(Simulator(back, T).run(x), Simulator(lower_for_nir(snn, pool), T).run(x))
        rep = verify(path, x, T)
        entry["files"][pool] = {"export": {k: v for k, v in info.items() if k != "path"}, "round_trip_identical": rt,
                                "verify": {k: v for k, v in rep.items() if k != "file"}}
    entry["lowering"] = lowering_agreement(snn, x, T)
    entry["seconds"] = round(time.time() - t0, 1)
    res["mnist_cnn"] = entry
    (OUT / "nir_peers.json").write_text(json.dumps(res, indent=2))  # keep the MNIST part if ResNet-20 is cut short

    rsnn, weights = resnet_snn()
    cx, _ = next(iter(load_dataset("cifar10", None, train=False).subset(2, 2).batches(2)))
    T = 16
    r = {"model": "resnet20", "weights": weights, "conversion": "percentile 99.9 per channel, reset zero, v_init 0",
         "timesteps": T, "samples": 2, "files": {}}
    for pool in ("avg", "sum"):
        path = tmp / f"resnet20_{pool}.nir"
        info = export_nir(rsnn, path, pool=pool)
        back = import_nir(path)
        rt = torch.equal(Simulator(back, T).run(cx), Simulator(lower_for_nir(rsnn, pool), T).run(cx))
        rep = verify(path, cx, T)
        r["files"][pool] = {"export": {k: v for k, v in info.items() if k != "path"}, "round_trip_identical": rt,
                            "verify": {k: v for k, v in rep.items() if k != "file"}}
    r["lowering"] = lowering_agreement(rsnn, cx, T)
    res["resnet20"] = r
    return res


def part_lava(tmp: Path) -> dict:
    from snnconv.backends.lava import export_lava

    snn, src = mnist_snn()
    x, _ = next(iter(load_dataset("mnist", None, train=False).subset(4, 2).batches(4)))
    t0 = time.time()
    rep = export_lava(snn, tmp / "lava", x=x, timesteps=16)
    rep["seconds"] = round(time.time() - t0, 1)
    rep.update(model="mnist_cnn", weights=src["weights"], conversion="percentile 99.9 per channel, reset zero, v_init 0",
               environment=environment(),
               command="SNNCONV_DATA_DIR=/work/shared/datasets python scripts/bench_export.py --part lava")
    return rep


def _peer_rows(verify_rep: dict) -> list[str]:
    rows = []
    for peer, e in verify_rep["peers"].items():
        if e.get("status") != "ran":
            rows.append(f"| {peer} {e.get('version', '')} | failed: `{e.get('error', '')}` at `{e.get('where', '')}` | | | |")
            continue
        mism = sum(v["mismatches"] or 0 for v in e["layers"].values())
        total = sum(v["ref_spikes"] for v in e["layers"].values())
        outputs = "identical" if e["outputs_identical"] else f"max diff {e['readout_max_abs_diff']:.2g}"
        spikes = "identical" if e["spikes_identical"] else "differ"
        rows.append(f"| {peer} {e['version']} | ran | {mism} of {total} spikes differ ({spikes}) | {outputs} | "
                    f"{100 * e['prediction_agreement']:.0f}% |")
    return rows


def render_nir(res: dict) -> str:
    out = ["# NIR export: SpikingJelly / Norse / snnTorch run the exported file", "",
           f"Command: `{res['command']}` (torch {res['environment']['torch']}, {res['environment']['threads']} thread).",
           "Reference = snnconv's simulation of the file (`import_nir`), same input, same steps; peers load the file "
           "with their own NIR importers (settings in `docs/nir.md`). Spike comparison is per (step, neuron) entry.", ""]
    for key in [k for k in ("mnist_cnn", "resnet20") if k in res]:
        r = res[key]
        out += [f"## {key}", "", f"- weights: {r['weights']}", f"- conversion: {r['conversion']}",
                f"- input: {r['samples']} test images, T = {r['timesteps']}"]
        if "accuracy_200_test_T32" in r:
            a = r["accuracy_200_test_T32"]
            out.append(f"- accuracy on 200 MNIST test images at T=32: threshold form {a['threshold_form']:.1f}%, "
                       f"NIR form {a['nir_form']:.1f}%")
        low = r["lowering"]
        diff = sum(v["differing_entries"] for v in low["layers"].values())
        tot = sum(v["threshold_form"] for v in low["layers"].values())
        out.append(f"- threshold form (what `convert` simulates) vs NIR form (unit thresholds, same model in real "
                   f"arithmetic): {diff} (step, neuron) entries differ out of {tot} spikes (float32 rounding); "
                   f"predictions agree on {100 * low['prediction_agreement']:.0f}%")
        for pool, f in r["files"].items():
            nodes = ", ".join(f"{k} {v}" for k, v in f["export"]["nodes"].items())
            out += ["", f"### pool = {pool}: {nodes}; round trip export -> import -> simulate identical: "
                        f"{f['round_trip_identical']}", "",
                    "| peer | status | spikes vs snnconv | raw outputs | predictions agree |", "|---|---|---|---|---|"]
            out += _peer_rows(f["verify"])
        out.append("")
    return "\n".join(out) + "\n"


def render_lava(res: dict) -> str:
    c = res["comparison"]
    out = ["# Lava: the converted MNIST CNN in lava-nc 0.9.0 vs snnconv", "",
           f"Command: `{res['command']}`.", "",
           f"- weights: {res['weights']}; conversion: {res['conversion']}",
           f"- {res['samples']} MNIST test images, {res['steps']} steps (16 + one-step synaptic delay per layer), "
           f"Lava `Loihi2SimCfg(select_tag='fixed_pt')` in the Python 3.9 venv (`scripts/setup_lava.sh`)",
           f"- spikes identical in every layer: **{c['identical']}**; netx HDF5: {res['netx']}", "",
           "| layer | neurons | snnconv spikes | Lava spikes | differing entries |", "|---|---|---|---|---|"]
    for name, v in c["layers"].items():
        out.append(f"| {name} | {v['neurons']} | {v['snnconv_spikes']} | {v['lava_spikes']} | {v['mismatches']} |")
    hw = res["hardware"]
    out += ["", "## Hardware report (Loihi 2 profile, docs/lava.md)", "", "```"]
    from snnconv.backends.lava import format_hardware
    out += [format_hardware(hw), "```", ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["nir", "lava", "all"])
    ap.add_argument("--render", action="store_true", help="only rewrite the .md files from the committed .json")
    args = ap.parse_args()
    if args.render:
        (OUT / "nir_peers.md").write_text(render_nir(json.loads((OUT / "nir_peers.json").read_text())))
        (OUT / "lava.md").write_text(render_lava(json.loads((OUT / "lava.json").read_text())))
        return
    torch.set_num_threads(1)
    os.environ.setdefault("SNNCONV_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("nir", "all"):
            res = part_nir(Path(tmp))
            (OUT / "nir_peers.json").write_text(json.dumps(res, indent=2))
            (OUT / "nir_peers.md").write_text(render_nir(res))
        if args.part in ("lava", "all"):
            res = part_lava(Path(tmp))
            (OUT / "lava.json").write_text(json.dumps(res, indent=2, default=lambda o: o.tolist()))
            (OUT / "lava.md").write_text(render_lava(res))


if __name__ == "__main__":
    main()
