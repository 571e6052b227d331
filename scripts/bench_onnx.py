"""ONNX parity benchmark: the same zoo model converted through the PyTorch frontend and through ONNX.

    python scripts/bench_onnx.py --model mnist_cnn --dataset mnist --data-dir ../shared/datasets
    python scripts/bench_onnx.py --model resnet20 --dataset cifar10 --weights ~/.cache/snnconv/models/resnet20-cifar10.pt
    python scripts/bench_onnx.py --model vgg16 --dataset cifar10 --untrained --eval-samples 500

The model (checkpoint via ``--weights`` / the model cache, or ``--untrained``: seeded random weights
with randomised batch-norm statistics) is written to ONNX with ``torch.onnx.export`` (opset 17, the
TorchScript exporter, which folds batch norm into the convolutions), then ingested twice:
``from_torch(model)`` and ``from_onnx(file)``. Both graphs go through the same conversion pipeline
with the same calibration batches and are simulated side by side on the same test samples. Recorded:
ANN output differences (IR vs IR, IR vs onnxruntime), ANN accuracy of both, SNN accuracy vs T of
both, the fraction of samples whose SNN prediction agrees at every T, and the largest relative
threshold difference. Results are merged (keyed by model/dataset/weights) into
docs/benchmarks/onnx_parity.json and the table docs/benchmarks/onnx_parity.md is rebuilt from it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from snnconv.backends.onnx_export import register_torch_qcfs_symbolic
from snnconv.api import conversion_pipeline, convert_graph, environment, resolve_model
from snnconv.config import ConversionConfig, RunConfig, parse_timesteps
from snnconv.data.datasets import dataset_info, load_dataset
from snnconv.frontends.onnx import from_onnx, onnxruntime_run
from snnconv.frontends.torch import from_torch
from snnconv.models.zoo import build_model
from snnconv.progress import progress
from snnconv.runtime.interpreter import run_ann
from snnconv.runtime.simulator import Simulator


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def thresholds(graph) -> list[torch.Tensor]:
    return [n.threshold.flatten() for n in graph.nodes.values() if n.spiking and hasattr(n, "threshold")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights", default=None, help="checkpoint (default: model cache / bundled)")
    ap.add_argument("--untrained", action="store_true", help="seeded random weights (parity of mechanics only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timesteps", default="1,2,4,8,16,32")
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--eval-samples", type=int, default=None, help="default: the whole test set")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--onnx-out", default=None, help="keep the exported .onnx here (default: a temp dir)")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ts = parse_timesteps(args.timesteps)
    T = max(ts)
    t_start = time.time()

    in_ch, ncls = dataset_info(args.dataset)
    if args.untrained:
        torch.manual_seed(args.seed)
        model = build_model(args.model, ncls, in_ch).eval()
        randomize_batchnorm(model, args.seed)
        size = 28 if in_ch == 1 else 32
        shape = (in_ch, size, size)
        source = {"weights": f"untrained (torch.manual_seed({args.seed}) init, randomised BN statistics)"}
    else:
        model, shape, source = resolve_model(RunConfig(model=args.model, dataset=args.dataset,
                                                       data_dir=args.data_dir, weights=args.weights))
    tmp = tempfile.TemporaryDirectory()
    onnx_path = Path(args.onnx_out or Path(tmp.name) / f"{args.model}.onnx")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    register_torch_qcfs_symbolic()  # QCFS-trained models: the custom op is written as Mul-Add-Floor-Clip-Mul
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *shape),), str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    g_torch, _ = from_torch(model, shape)
    g_onnx, coverage = from_onnx(onnx_path, shape)
    print(f"torch IR: {g_torch.kinds()}\nONNX IR:  {g_onnx.kinds()}", flush=True)

    test = load_dataset(args.dataset, args.data_dir, train=False).subset(args.eval_samples, args.seed)
    calib = load_dataset(args.dataset, args.data_dir, train=True).subset(args.calib_samples, args.seed + 1)
    calib_batches = [x for x, _ in calib.batches(256)]
    conv = ConversionConfig()
    snn_torch, _ = convert_graph(g_torch, calib_batches, conversion_pipeline(conv))
    snn_onnx, _ = convert_graph(g_onnx, calib_batches, conversion_pipeline(conv))
    th_t, th_o = thresholds(snn_torch), thresholds(snn_onnx)
    th_rel = max(float(((a - b).abs() / a.abs().clamp_min(1e-12)).max()) for a, b in zip(th_t, th_o))

    sim_t, sim_o = Simulator(snn_torch, T), Simulator(snn_onnx, T)
    ann_correct = {"torch": 0, "onnx": 0}
    ann_diff = ort_diff = snn_diff = 0.0
    agree = torch.zeros(T, dtype=torch.float64)
    n = 0
    for i, (x, y) in enumerate(progress(test.batches(args.batch_size), total=-(-len(test) // args.batch_size),
                                        desc="parity")):
        a_t, a_o = run_ann(g_torch, x), run_ann(g_onnx, x)
        ann_diff = max(ann_diff, float((a_t - a_o).abs().max()))
        if i < 2:  # onnxruntime on the first batches
            ort = torch.from_numpy(onnxruntime_run(onnx_path, x)[0])
            ort_diff = max(ort_diff, float((ort - a_o).abs().max()))
        ann_correct["torch"] += int((a_t.argmax(1) == y).sum())
        ann_correct["onnx"] += int((a_o.argmax(1) == y).sum())
        l_t, l_o = sim_t.run(x, y), sim_o.run(x, y)
        snn_diff = max(snn_diff, float((l_t[-1] - l_o[-1]).abs().max()))
        agree += (l_t.argmax(-1) == l_o.argmax(-1)).sum(1).double()
        n += len(y)
    acc_t, acc_o = sim_t.stats.accuracy(), sim_o.stats.accuracy()
    entry = {
        "model": args.model, "dataset": args.dataset, "trained": not args.untrained, "weights": source,
        "samples": n, "calib_samples": len(calib), "timesteps": ts, "conversion": conv.__dict__,
        "onnx": {"file_nodes": sum(int(r.split("|")[2]) for r in coverage.splitlines()[2:]), "opset": 17,
                 "exporter": "torch.onnx.export(dynamo=False)", "coverage": coverage},
        "ir_kinds": {"torch": g_torch.kinds(), "onnx": g_onnx.kinds()},
        "ann_accuracy": {k: 100.0 * v / n for k, v in ann_correct.items()},
        "ann_max_abs_diff_torch_vs_onnx_ir": ann_diff, "ann_max_abs_diff_onnx_ir_vs_onnxruntime": ort_diff,
        "snn_accuracy": {"torch": {str(t): acc_t[t - 1] for t in ts}, "onnx": {str(t): acc_o[t - 1] for t in ts}},
        "snn_prediction_agreement": {str(t): 100.0 * float(agree[t - 1]) / n for t in ts},
        "snn_max_abs_diff_at_T": snn_diff, "threshold_max_rel_diff": th_rel,
        "command": "python " + " ".join(sys.argv), "environment": environment(), "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - t_start, 1),
    }
    for t in ts:
        print(f"T={t:>3}: torch path {acc_t[t - 1]:.2f}%  ONNX path {acc_o[t - 1]:.2f}%  "
              f"agreement {entry['snn_prediction_agreement'][str(t)]:.2f}%", flush=True)
    write(Path(args.out), entry)


def _key(e: dict) -> str:
    return f"{e['model']}-{e['dataset']}-{'trained' if e['trained'] else 'untrained'}"


def write(out: Path, entry: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "onnx_parity.json"
    data = json.loads(jpath.read_text()) if jpath.is_file() else {"runs": {}}
    data["runs"][_key(entry)] = entry
    jpath.write_text(json.dumps(data, indent=2) + "\n")
    lines = ["# ONNX parity: the same model converted via the PyTorch frontend and via ONNX", "",
             "Each model is exported with `torch.onnx.export` (opset 17, TorchScript exporter: batch norm is "
             "fused into the convolutions in the file), ingested with `from_onnx` and with `from_torch`, "
             "converted by the same default pipeline (p99.9 channel-wise thresholds, v0 = theta/2) with the "
             "same calibration batches, and simulated on the same test samples. Produced by "
             "`scripts/bench_onnx.py`; the command of every row is below its table.", ""]
    for e in data["runs"].values():
        ts = e["timesteps"]
        status = "trained" if e["trained"] else "**untrained (random weights: accuracies are chance level; " \
                                                "only the parity is meaningful)**"
        lines += [f"## {e['model']} on {e['dataset']}: {status}", "",
                  f"Weights: {e['weights'].get('weights')}; {e['samples']} test samples, {e['calib_samples']} "
                  f"calibration samples; {e['date']}, {e['seconds']} s.", "",
                  "| path | ANN | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|---:|" + "---:|" * len(ts)]
        for p in ("torch", "onnx"):
            lines.append(f"| {'PyTorch' if p == 'torch' else 'ONNX'} | {e['ann_accuracy'][p]:.2f} | "
                         + " | ".join(f"{e['snn_accuracy'][p][str(t)]:.2f}" for t in ts) + " |")
        lines.append("| same prediction (%) | | " + " | ".join(f"{e['snn_prediction_agreement'][str(t)]:.2f}"
                                                             for t in ts) + " |")
        lines += ["", f"Max abs difference: ANN output torch-IR vs ONNX-IR {e['ann_max_abs_diff_torch_vs_onnx_ir']:.2e}, "
                      f"ONNX-IR vs onnxruntime {e['ann_max_abs_diff_onnx_ir_vs_onnxruntime']:.2e}, SNN output at "
                      f"T={max(ts)} {e['snn_max_abs_diff_at_T']:.2e}; largest relative threshold difference "
                      f"{e['threshold_max_rel_diff']:.2e}. IR node kinds: PyTorch {e['ir_kinds']['torch']}, "
                      f"ONNX {e['ir_kinds']['onnx']}.", "", f"Command: `{e['command']}`", ""]
    (out / "onnx_parity.md").write_text("\n".join(lines))
    print(f"wrote {out}/onnx_parity.md and .json")


if __name__ == "__main__":
    main()
