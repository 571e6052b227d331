#!/usr/bin/env python
"""Hybrid fine-tuning benchmark: binary-spike SNNs at T = 1, 2 before and after ``snnconv finetune-snn``.

For each network x T: convert (QCFS thresholds), fine-tune by BPTT with surrogate gradients on the
training part (validation split held out), keep the epoch best on validation, then score the test set
once before and once after with the simulator.

    python scripts/bench_finetune_snn.py --data-dir ../shared/datasets

writes docs/benchmarks/finetune_snn.json and .md (command, data, checkpoint hashes at the top).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, footer, save, sha256  # noqa: E402

from snnconv.api import ann_accuracy, conversion_pipeline, convert_graph, ingest, resolve_model, simulate  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig  # noqa: E402
from snnconv.runtime.interpreter import run_ann  # noqa: E402
from snnconv.runtime.simulator import E_MAC_PJ  # noqa: E402
from snnconv.data.datasets import load_dataset, load_part, load_train_val  # noqa: E402
from snnconv.training.snn_finetune import activation_memory_mb, finetune  # noqa: E402

NETWORKS = {  # name -> (model, dataset, checkpoint, conversion)
    "mnist_cnn": ("mnist_cnn", "mnist", "snnconv/assets/mnist_cnn_qcfs4-mnist.pt", {"method": "qcfs"}),
    # trained on the training part only (validation split held out): validation numbers are clean
    "mnist_cnn_l2_55k": ("mnist_cnn", "mnist", "snnconv/assets/mnist_cnn_qcfs2-mnist-55k.pt", {"method": "qcfs"}),
    "resnet20": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_swa.pt",
                 {"method": "qcfs", "signed": True}),
    # trained on the 45k training part only: validation numbers are clean
    "resnet20_45k": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt",
                     {"method": "qcfs", "signed": True}),
    # the same network fine-tuned as a QCFS ANN at L=2 (`snnconv finetune --levels 2`): a QCFS SNN at T steps
    # follows the QCFS ANN with T levels (docs/design.md), so at T=2 it starts from the L=2 ANN; judged against
    # the L=4 ANN it came from (the 5th field: the network the user brought)
    "resnet20_45k_l2": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs2_cifar10_45k.pt",
                        {"method": "qcfs", "signed": True}, "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt"),
    # the L=2 (for T=2) and L=1 (for T=1) ANN fine-tunes distilled from the L=4 ANN (`snnconv finetune --levels L
    # --teacher <L=4> --distill 0.5`; training records train_resnet20_cifar10_qcfs2_kd.md / _qcfs1_kd.md)
    "resnet20_45k_l2kd": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs2_kd_cifar10_45k.pt",
                          {"method": "qcfs", "signed": True}, "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt"),
    # a second distilled L=2 cycle (12 more epochs from resnet20_45k_l2kd; train_resnet20_cifar10_qcfs2_kd24_45k.md)
    "resnet20_45k_l2kd24": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs2_kd24_cifar10_45k.pt",
                            {"method": "qcfs", "signed": True},
                            "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt"),
    "resnet20_45k_l1kd": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs1_kd_cifar10_45k.pt",
                          {"method": "qcfs", "signed": True}, "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt"),
    # 40 distilled epochs at L=1 from resnet20_45k_l2kd24 (train_resnet20_cifar10_qcfs1_kd40_45k.md)
    "resnet20_45k_l1kd40": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs1_kd40_cifar10_45k.pt",
                            {"method": "qcfs", "signed": True},
                            "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt"),
    # 60 distilled epochs at L=1 from resnet20_45k_l2kd24, max lr 0.05 (train_resnet20_cifar10_qcfs1_kd60_45k.md)
    "resnet20_45k_l1kd60": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs1_kd60_cifar10_45k.pt",
                            {"method": "qcfs", "signed": True},
                            "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--networks", default="mnist_cnn")
    ap.add_argument("--timesteps", default="1,2")
    ap.add_argument("--epochs", default="2", help="epochs for every T, or per T as 'T:E,...' (e.g. 2:6,1:3)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-samples", type=int, default=None, help="default: the whole training part")
    ap.add_argument("--test-samples", type=int, default=None, help="default: the whole test set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chain", action="store_true",
                    help="largest T first; each smaller T starts from the previous T's fine-tuned network "
                         "(gradual timestep reduction, Chowdhury et al. 2021) instead of from the conversion")
    ap.add_argument("--distill", type=float, default=0.0,
                    help="distil from the ANN the gap is judged against (the network's reference ANN) with this "
                         "weight (Hinton et al. 2015; 0 = labels only)")
    ap.add_argument("--temperature", type=float, default=4.0, help="softmax temperature of --distill")
    ap.add_argument("--state-dir", default=None,
                    help="keep each run's resumable state here (re-run the same command to continue)")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "finetune_snn"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    per_t = dict(tuple(int(v) for v in item.split(":")) for item in args.epochs.split(",")) if ":" in args.epochs else {}
    epochs_for = lambda t: per_t[t] if per_t else int(args.epochs)  # noqa: E731
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rows = {}
    for key in args.networks.split(","):
        model, dataset, ckpt, conv, *reference = NETWORKS[key]
        m, shape, _ = resolve_model(RunConfig(model=model, dataset=dataset, data_dir=args.data_dir,
                                              weights=str(REPO / ckpt)), log_fn=lambda _: None)
        g, _ = ingest(m, shape)
        train_part, val = load_train_val(dataset, args.data_dir)
        train_part = train_part.subset(args.train_samples, 3)
        calib = [x for x, _ in load_part(dataset, args.data_dir, "train").subset(1024, 1).batches(256)]
        snn, _ = convert_graph(g, calib, conversion_pipeline(ConversionConfig(**conv)))
        test = load_dataset(dataset, args.data_dir, train=False).subset(args.test_samples, 0)
        ann_test, ann_macs = ann_accuracy(g, test)
        own_ann_test, ref_graph = ann_test, g
        if reference:  # the gap is judged against the ANN this network was derived from
            ref, _, _ = resolve_model(RunConfig(model=model, dataset=dataset, data_dir=args.data_dir,
                                                weights=str(REPO / reference[0])), log_fn=lambda _: None)
            ref_graph = ingest(ref, shape)[0]
            ann_test, ann_macs = ann_accuracy(ref_graph, test)
        teacher = (lambda x, rg=ref_graph: run_ann(rg, x)) if args.distill > 0 else None
        start, prev_t = snn, None
        for t in sorted((int(v) for v in args.timesteps.split(",")), reverse=args.chain):
            t0 = time.time()
            tag = f"{key}_T{t}{'_chain' if args.chain else ''}{f'_kd{args.distill:g}' if args.distill else ''}"
            state = Path(args.state_dir) / f"{tag}.state.pt" if args.state_dir else None
            if state is not None:
                state.parent.mkdir(parents=True, exist_ok=True)
            res = finetune(start if args.chain else snn, train_part, val, t, epochs_for(t), args.lr, args.batch_size,
                           augment=not dataset.startswith("mnist"), log=log, state_path=state, teacher=teacher,
                           distill=args.distill, temperature=args.temperature)
            conv_stats = simulate(snn, test, t, layer_error=False)
            stats = simulate(res["graph"], test, t, layer_error=False)
            before, after = conv_stats.accuracy()[t - 1], stats.accuracy()[t - 1]
            rows[f"{key}:T{t}"] = {
                "network": key, "dataset": dataset, "timesteps": t, "conversion": conv, "checkpoint": ckpt,
                "checkpoint_sha256": sha256(ckpt), "started_from": f"T={prev_t} fine-tuned" if args.chain and prev_t
                else "conversion",
                "train_samples": len(train_part), "val_samples": len(val), "test_samples": len(test),
                "epochs": epochs_for(t), "lr": args.lr, "batch_size": args.batch_size, "distill": args.distill,
                "temperature": args.temperature if args.distill else None,
                "teacher": (reference[0] if reference else ckpt) if args.distill else None,
                "val_before": res["history"][0]["val_acc"], "val_after": res["val_accuracy"],
                "best_epoch": res["best_epoch"], "test_before": before, "test_after": after, "ann_test": ann_test,
                "own_ann_test": own_ann_test, "ann_reference": reference[0] if reference else ckpt,
                "energy_uj_after": stats.energy_uj()[t - 1], "synops_after": stats.synops_per_sample()[t - 1],
                "ann_energy_uj": ann_macs * E_MAC_PJ * 1e-6,
                "history": res["history"], "seconds": round(time.time() - t0, 1),
                "bptt_activation_mb_per_batch": round(activation_memory_mb(snn, t, args.batch_size), 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            log(f"[{key} T={t}] test {before:.2f}% -> {after:.2f}% (val {res['history'][0]['val_acc']:.2f} -> "
                f"{res['val_accuracy']:.2f}, epoch {res['best_epoch']})")
            save(args.out, list(rows.values()), key=row_key, markdown=markdown,
                 script="bench_finetune_snn.py", data_dir=args.data_dir, hide={"<state-dir>": args.state_dir})  # after every row: progress is kept
            start, prev_t = res["graph"], t


def row_key(r: dict) -> tuple:
    """One row per route: network, T, where it started, epochs and distillation weight (a re-run of the same
    route replaces its row; another route is kept beside it and the targets choose among them on validation)."""
    return (r["network"], r["timesteps"], r.get("started_from", "conversion"), r["epochs"], r.get("distill", 0.0))


def train_seconds(row: dict) -> float:
    """Training + validation time summed over the epochs of the history (right across resumed runs; rows
    from before the per-epoch times were kept show the process's time)."""
    epochs = [h["seconds"] for h in row["history"] if "seconds" in h]
    return round(sum(epochs), 1) if epochs else row["seconds"]


def markdown(data: dict) -> str:
    lines = ["# Hybrid fine-tuning (`snnconv finetune-snn`): binary spikes at low T", "",
             f"Last command: `{data['command']}` (rows of other runs are kept; each row records its settings)", "",
             "Converted network (QCFS thresholds) fine-tuned by BPTT over T steps with the rectangular surrogate "
             "(Wu et al. 2018): weights, biases, per-channel thresholds and initial membranes, Adam with cosine "
             "decay. The epoch kept is the best on the validation split (5,000 training images held out; epoch 0 "
             "is the network the run started from); the test set is scored once before and once after. `val before` is the "
             "network the run started from (the conversion, or with `--chain` the larger T's fine-tuned network); "
             "`test before` is always the conversion at that T. Caveat: the `mnist_cnn` and `resnet20` checkpoints "
             "were trained on the whole training split before the validation split existed, so their ANN saw the "
             "validation images (the fine-tuning did not): their validation numbers run high; judge them on the test "
             "columns. `mnist_cnn_l2_55k` was trained on the training part only: its validation numbers are clean. `ANN test` is "
             "the ANN the network came from (for `resnet20_45k_l2`, the L=4 `resnet20_45k` it was fine-tuned from at "
             "L=2; its own L=2 ANN is in `own ANN`; `resnet20_45k_l2kd` and `resnet20_45k_l1kd` are the same L=4 ANN fine-tuned "
             "at L=2 and L=1 with distillation from it, `snnconv finetune --teacher`, `resnet20_45k_l2kd24` the L=2 one after a second "
             "distilled cycle of 12 epochs, `resnet20_45k_l1kd40` 40 distilled epochs at L=1 from it, and `resnet20_45k_l1kd60` 60 at a higher learning rate). `KD`: the weight of knowledge distillation from the `ANN test` network "
             "(Hinton et al. 2015; temperature in the JSON), `-` for labels only. `BPTT MB/batch` is the estimate the run printed; rows "
             "before 2026-12-05 (second half) counted layer outputs only, about a third of what autograd keeps "
             "([bptt_memory.md](bptt_memory.md)).", "",
             "| network | T | conversion | train imgs | epochs | KD | val before | val after | test before | test after | "
             "ANN test | own ANN | gap to ANN | energy uJ (SNN / ANN) | started from | kept epoch | BPTT MB/batch | "
             "training s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['network']} | {r['timesteps']} | {r['conversion']} | {r['train_samples']} | {r['epochs']} | "
                     f"{r.get('distill') or '-'} | "
                     f"{r['val_before']:.2f} | {r['val_after']:.2f} | {r['test_before']:.2f} | "
                     f"**{r['test_after']:.2f}** | {r.get('ann_test', float('nan')):.2f} | "
                     f"{r.get('own_ann_test', r.get('ann_test', float('nan'))):.2f} | "
                     f"{r['test_after'] - r.get('ann_test', float('nan')):+.2f} | "
                     + (f"{r['energy_uj_after']:.3g} / {r['ann_energy_uj']:.3g}" if "energy_uj_after" in r else "-")
                     + f" | {r.get('started_from', 'conversion')} | {r['best_epoch']} | "
                     f"{r['bptt_activation_mb_per_batch']} | "
                     f"{train_seconds(r)} |")
    return "\n".join(lines + footer(data))


if __name__ == "__main__":
    main()
