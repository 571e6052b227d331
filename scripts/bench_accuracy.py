"""Accuracy benchmark of the conversion methods (issue 3) -> docs/benchmarks/accuracy.{md,json}.

    python scripts/bench_accuracy.py --suite mnist --data-dir ../shared/datasets
    python scripts/bench_accuracy.py --suite cifar10 --data-dir ../shared/datasets --eval-samples 1000 \\
        --methods qcfs,sfn
    python scripts/bench_accuracy.py --suite resnet18 --data-dir ../shared/datasets \\
        --methods qcfs,qcfs_signed,sfn,qcfs_signed_bc4 --timesteps 1,2,4,8,16,32   # issue 21's suite

For each suite (model/dataset) it loads the ANN checkpoints, converts with each method and
simulates once to max(T); accuracy, firing rate, SynOps and energy at every smaller T come from
the same run. Methods (``--methods``, comma-separated):

* ``max``: layer-wise max-norm thresholds (Diehl et al. 2015), v0 = theta/2
* ``percentile``: 99.9th percentile per channel (Rueckauer et al. 2017), v0 = theta/2 (snnconv default)
* ``calibration``: percentile + layer-wise bias calibration for T = --calib-T (Li et al. ICML 2021)
* ``calibration_pc``: percentile + potential (initial membrane) calibration (Li et al. ICML 2021)
* ``qcfs``: IF neurons with the trained QCFS thresholds, v0 = theta/2 (Bu et al. ICLR 2022)
* ``sfn``: scale-and-fire multi-level neurons (graded spikes), exact at T = 1 on QCFS nets
* ``qcfs_signed``: qcfs + negative spikes that cancel over-firing
* ``qcfs_srp``: qcfs + SRP pre-run of --srp-tau steps (Hao et al. AAAI 2023); latency tau + T
* ``<m>_bc<T>`` for a QCFS method m (e.g. ``qcfs_signed_bc4``): m + layer-wise bias calibration for T steps
  (Li et al. ICML 2021) towards the clip(0, lambda) mean, run on the converted (signed) SNN; the latency
  stays T (the calibration only changes biases), accuracy at other T is not what it was tuned for
* ``<m>_hseo<T>`` for a QCFS method m (e.g. ``qcfs_l2_signed_hseo2``): m + the HSEO pass at T (CMA-ES over
  per-layer threshold scales, v0 and the leak; search and re-selection on held-out samples of the training
  part, with the settings chosen on the validation split by scripts/choose_hseo_settings.py; in the row's pipeline)
* ``<m>_l<L>`` for m in qcfs, qcfs_signed, qcfs_srp, sfn (e.g. ``qcfs_l2_signed``): the same method on the
  suite's QCFS checkpoint trained with L levels (``--qcfs-weights L=PATH``; MNIST bundles L=2, fine-tuned
  from the L=4 net with ``snnconv finetune --levels 2``). With T = L an IF layer with constant input
  equals the quantized ANN exactly (Bu et al. 2022), so an L = 2 net is the one to run at T = 2; what
  remains is the unevenness error of the layers fed by spikes, which negative spikes (Hu et al.,
  Fast-SNN, TPAMI 2023) and SRP reduce but do not remove (see the MNIST table).

ReLU methods (max, percentile, calibration*) use the suite's ReLU checkpoint when it has one
(MNIST: the bundled ReLU CNN); otherwise (CIFAR-10) they run on the QCFS-trained weights with the
quantized clips treated as plain clip(0, lambda) (``qcfs_as_clip``), the comparison Bu et al. make.

Resumable: results are cached per (suite, method) in the JSON; a method already there with the
same samples, timesteps and checkpoint content is skipped unless --force. With ``--state-dir`` a row
itself is resumable: its simulation keeps its totals there every few minutes, and the same command run
again after a kill continues the row where it stopped (same totals as one uninterrupted run). The markdown and the per-suite plots
(``accuracy_<suite>.png``: gap to the ANN vs T, accuracy vs energy) are re-rendered from the JSON
(``--render-only`` does just that).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import torch

from snnconv.api import (ann_accuracy, convert_graph, environment, held_out_split, resolve_model, simulate,
                         spike_format)
from snnconv.checkpoints import BUNDLED_DIR, load_checkpoint
from snnconv.config import ConversionConfig, RunConfig, parse_timesteps
from snnconv.data.datasets import load_dataset, load_part
from snnconv.frontends.torch import from_torch
from snnconv.passes import Pipeline
from snnconv.runtime.simulator import E_AC_PJ, E_MAC_PJ
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, command, shown_path  # noqa: E402

RELU_METHODS = ("max", "percentile", "calibration", "calibration_pc")
METHODS = ("max", "percentile", "calibration", "calibration_pc", "qcfs", "sfn", "qcfs_signed", "qcfs_srp")

SUITES = {
    # checkpoints trained on the training part only (the validation split held out), so that every choice made
    # from these rows (checkpoint, method, T) can be made on validation
    "mnist": {"model": "mnist_cnn", "dataset": "mnist", "relu": str(BUNDLED_DIR / "mnist_cnn-mnist-55k.pt"),
              "qcfs": str(BUNDLED_DIR / "mnist_cnn_qcfs4-mnist-55k.pt"),
              "qcfs_levels": {2: str(BUNDLED_DIR / "mnist_cnn_qcfs2-mnist-55k.pt")}},
    "cifar10": {"model": "resnet20", "dataset": "cifar10", "relu": None,
                "qcfs": "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt", "qcfs_levels": {}},
    # the headline network (issue 21): the checkpoint `snnconv convert --model resnet18 --dataset cifar10` finds,
    # written by `snnconv train --model resnet18 --dataset cifar10 --activation qcfs --levels 4` (45k images)
    "resnet18": {"model": "resnet18", "dataset": "cifar10", "relu": None,
                 "qcfs": "docs/benchmarks/checkpoints/resnet18-cifar10.pt", "qcfs_levels": {}},
}
#: suite -> the ANN accuracy its issue asks for (full test set, checkpoint chosen on validation)
ANN_TARGET = {"cifar10": 88.0, "resnet18": 93.0}
LEVEL_METHOD = re.compile(r"(qcfs|qcfs_signed|qcfs_srp|sfn)_l(\d+)")


TUNED = re.compile(r"(.+)_(bc|hseo)(\d+)")


def tuning_suffix(method: str) -> tuple[str, tuple[str, int] | None]:
    """``qcfs_signed_bc4`` -> (``qcfs_signed``, ("bc", 4)): the method and the pass tuning it for a T."""
    m = TUNED.fullmatch(method)
    return (m[1], (m[2], int(m[3]))) if m else (method, None)


def split_method(method: str) -> tuple[str, int | None]:
    """``qcfs_l2_signed`` / ``qcfs_signed_l2`` -> (``qcfs_signed``, 2); a plain method -> (method, None)."""
    m = LEVEL_METHOD.fullmatch(method) or LEVEL_METHOD.fullmatch(re.sub(r"_l(\d+)(_signed|_srp)$", r"\2_l\1", method))
    return (m[1], int(m[2])) if m else (method, None)

# Published anchors (same architectures, CIFAR-10; their ANNs and training, not ours).
QCFS_SRC = ("Bu et al., ICLR 2022, arXiv:2303.04347 (code github.com/putshua/SNN_conversion_QCFS); "
            "values as quoted in issue 3, not re-read from the paper's tables here")
ANCHORS = [
    {"what": "QCFS ResNet-20 (ANN 91.77)", "dataset": "cifar10", "acc": {"4": 83.75, "8": 89.55}, "source": QCFS_SRC},
    {"what": "QCFS ResNet-18 (ANN 96.04)", "dataset": "cifar10", "acc": {"4": 90.43, "8": 94.82},
     "source": QCFS_SRC.replace("issue 3", "issues 3 and 21")},
    {"what": "ECL ResNet-18 (Liu et al., ICML 2025, 'Efficient ANN-SNN Conversion with Error Compensation "
             "Learning')", "dataset": "cifar10", "acc": {"2": 94.75},
     "source": "arXiv:2506.01968, abstract (checked)"},
    {"what": "NQ ResNet-18 (ANN 95.52)", "dataset": "cifar10", "acc": {"1": 89.64, "4": 95.37},
     "source": "as quoted in issues 3 and 21 (not verified here)"},
]


def method_config(method: str, args, qcfs_as_clip: bool, calibrate_for: int | None = None) -> list:
    if method in RELU_METHODS:
        kw = {"max": dict(method="max", granularity="layer"), "percentile": dict(method="percentile"),
              "calibration": dict(method="calibration", calibration="bias", calibration_timesteps=args.calib_T),
              "calibration_pc": dict(method="calibration", calibration="potential",
                                     calibration_timesteps=args.calib_T)}[method]
        return RunConfig(conversion=ConversionConfig(qcfs_as_clip=qcfs_as_clip, **kw)).pipeline_spec()
    if method == "sfn":
        return RunConfig(conversion=ConversionConfig(method="sfn")).pipeline_spec()
    spec = RunConfig(conversion=ConversionConfig(method="qcfs", signed=method == "qcfs_signed",
                                                 calibrate=calibrate_for is not None,
                                                 calibration_timesteps=calibrate_for or 4)).pipeline_spec()
    if method == "qcfs_srp":
        spec.append({"name": "srp", "presim": args.srp_tau})
    return spec


def per_t(stats, ts, acc, offset: int = 0, val_acc=None) -> dict:
    """Accuracy, firing rate (spike events per neuron per step), SynOps, MACs and energy at each t
    (cumulative over the first offset + t steps: SRP's pre-run is paid for); ``val_acc``: the same network's
    accuracy on the validation split at each t (what choices are made on)."""
    neurons = sum(stats.neurons.values())
    spikes = sum(stats.spikes.values(), torch.zeros(stats.timesteps)).cumsum(0)
    synops, macs, energy = stats.synops_per_sample(), stats.macs_per_sample(), stats.energy_uj()
    out = {}
    for t in ts:
        k = offset + t - 1
        out[str(t)] = {"acc": acc[t - 1], "firing_rate": float(spikes[k] / (neurons * stats.samples * (k + 1))),
                       "synops": synops[k], "macs": macs[k], "energy_uj": energy[k], "latency": offset + t}
        if val_acc is not None:
            out[str(t)]["val_acc"] = val_acc[t - 1]
    return out


def run_method(suite, method, args, ts, test, calib_batches, store, val=None) -> dict | None:
    s = SUITES[suite]
    relu = method in RELU_METHODS
    core, tuned = tuning_suffix(method)
    base, levels = split_method(core)
    weights = s["relu"] if relu and s["relu"] else s["qcfs"] if levels is None else s["qcfs_levels"].get(levels, "")
    if levels is not None and not weights:
        print(f"[{suite}/{method}] skipped: no QCFS L={levels} checkpoint (--qcfs-weights {levels}=PATH)", flush=True)
        return None
    if not Path(weights).is_file():
        print(f"[{suite}/{method}] skipped: no checkpoint {weights}", flush=True)
        return None
    qcfs_as_clip = relu and not s["relu"]
    cfg = RunConfig(model=s["model"], dataset=s["dataset"], data_dir=args.data_dir, weights=weights)
    model, shape, source = resolve_model(cfg, log_fn=lambda m: None)
    graph, _ = from_torch(model, shape)
    # the content hash keeps a retrained checkpoint (same file name) from reusing the old ANN accuracy
    key = f"ann:{Path(weights).name}:{weights_digest(weights)}:{len(test)}"
    if key not in store.setdefault("ann", {}):
        acc, macs = ann_accuracy(graph, test)
        # the validation split is what checkpoints are chosen on; it is held out only if the checkpoint was
        # trained without it (snnconv train records val_samples since the split exists)
        held_out = (load_checkpoint(weights).get("val_samples") or 0) > 0
        val_acc = ann_accuracy(graph, val if val is not None else load_part(s["dataset"], args.data_dir, "val"))[0]
        store["ann"][key] = {"weights": shown_path(weights), "activation": source["activation"], "levels": source["levels"],
                             "samples": len(test), "acc": acc, "energy_uj": macs * E_MAC_PJ * 1e-6,
                             "val_acc": val_acc, "val_held_out": held_out}
    spec = method_config(base, args, qcfs_as_clip, tuned[1] if tuned and tuned[0] == "bc" else None)
    labelled = None
    if tuned and tuned[0] == "hseo":
        from choose_hseo_settings import chosen_settings

        # the search settings were chosen on the validation split (scripts/choose_hseo_settings.py)
        chosen = chosen_settings(Path(args.out) / "hseo_settings.json", weights, tuned[1])
        if chosen is None:
            print(f"[{suite}/{method}] skipped: no HSEO settings chosen on validation for {Path(weights).name} at "
                  f"T={tuned[1]} (run scripts/choose_hseo_settings.py)", flush=True)
            return None
        spec.append(chosen)
        n = chosen["samples"] + chosen["selection_samples"]
        labelled = list(held_out_split(s["dataset"], args.data_dir, args.calib_samples, 1, size=n).batches(256))
    t0 = time.time()
    snn, records = convert_graph(graph, calib_batches, Pipeline.from_config(spec), labelled=labelled)
    t_conv = time.time() - t0
    row = {"method": method, "weights": shown_path(weights), "ann_key": key, "qcfs_as_clip": qcfs_as_clip, "pipeline": spec,
           "samples": len(test), "timesteps": ts, "calib_samples": sum(len(x) for x in calib_batches),
           "spikes": spike_format(snn), "convert_seconds": round(t_conv, 1)}
    if qcfs_as_clip:  # the ANN these thresholds approximate: the QCFS weights with plain clips
        deq, _ = convert_graph(graph, calib_batches, Pipeline.from_config(["dequantize_clips"]))
        ckey = key + ":as_clip"
        if ckey not in store["ann"]:
            store["ann"][ckey] = {**store["ann"][key], "activation": "clip(0, lambda)", "acc": ann_accuracy(deq, test)[0]}
        row["ann_clip_key"] = ckey
    if base == "qcfs_srp":
        from snnconv.passes.srp import simulate_srp

        acc, stats = simulate_srp(snn, test, max(ts), args.batch_size)
        val_acc = simulate_srp(snn, val, max(ts), args.batch_size)[0] if val is not None else None
        row["per_t"] = per_t(stats, ts, acc, offset=args.srp_tau, val_acc=val_acc)
        row["srp_tau"] = args.srp_tau
    else:
        say = lambda m: print(f"[{suite}/{method}] {m}", flush=True)  # noqa: E731 - progress of a long row
        state = (lambda part: Path(args.state_dir) / f"{suite}-{method}-{part}.pt" if args.state_dir else None)
        stats = simulate(snn, test, max(ts), args.batch_size, layer_error=False, log_fn=say, state=state("test"))
        val_acc = (simulate(snn, val, max(ts), args.batch_size, layer_error=False, log_fn=say,
                            state=state("val")).accuracy() if val is not None else None)
        row["per_t"] = per_t(stats, ts, stats.accuracy(), val_acc=val_acc)
    if val is not None:
        row["val_samples"] = len(val)
    row["seconds"] = round(time.time() - t0, 1)
    print(f"[{suite}/{method}] ANN {store['ann'][key]['acc']:.2f} (val {store['ann'][key]['val_acc']:.2f}) | " +
          " ".join(f"T{t}={row['per_t'][str(t)]['acc']:.2f}" for t in ts) + f" ({row['seconds']}s)", flush=True)
    return row


def best_on_validation(rows: list[dict], ts: list[int], anns: dict) -> list[str]:
    """The "best method" at each T, chosen on the validation split (ties: fewer SynOps); its test accuracy is
    the number reported. Rows without validation scores (measured before the split existed) take no part."""
    out = []
    for t in ts:
        cands = [r for r in rows if "val_acc" in r["per_t"].get(str(t), {})]
        if not cands:
            continue
        best = max(cands, key=lambda r: (r["per_t"][str(t)]["val_acc"], -r["per_t"][str(t)]["synops"]))
        p = best["per_t"][str(t)]
        a = anns[best.get("ann_clip_key") or best["ann_key"]]
        out.append(f"| {t} | `{best['method']}` | {p.get('latency', t)} | {p['val_acc']:.2f} | {p['acc']:.2f} | "
                   f"{p['acc'] - a['acc']:+.2f} | {p['energy_uj']:.3g} |")
    if not out:
        return []
    return (["Best method at each T, chosen on the validation split (the test column is read once, after the "
             "choice; latency counts an SRP pre-run):", "",
             "| T | method | latency (steps) | validation % | test % | test gap to its ANN | energy (uJ) |",
             "|---:|---|---:|---:|---:|---:|---:|"] + out + [""])


def accuracy_table(rows: list[dict], ts: list[int], anns: dict) -> list[str]:
    """The method x T table: validation % / test % (test gap to the ANN the method converts)."""
    lines = ["| method | ANN | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|---:|" + "---:|" * len(ts)]
    for r in rows:
        a = anns[r.get("ann_clip_key") or r["ann_key"]]
        ann = a["acc"]
        cells = [(f"{r['per_t'][str(t)]['val_acc']:.2f} / " if "val_acc" in r["per_t"][str(t)] else "") +
                 f"{r['per_t'][str(t)]['acc']:.2f} ({r['per_t'][str(t)]['acc'] - ann:+.2f})"
                 if str(t) in r["per_t"] else "-" for t in ts]
        ann_cell = (f"{a['val_acc']:.2f} / " if "val_samples" in r and a.get("val_acc") is not None else "") + f"{ann:.2f}"
        lines.append(f"| {r['method']}{' (latency tau+T, tau=' + str(r['srp_tau']) + ')' if r.get('srp_tau') else ''} "
                     f"| {ann_cell} | " + " | ".join(cells) + " |")
    return lines


def earlier_section(earlier: dict, anns: dict) -> list[str]:
    """The rows of an earlier checkpoint under the same file name, apart (not in the choices, targets or plot)."""
    rows = list(earlier.get("methods", {}).values())
    if not rows:
        return []
    ts = sorted({t for r in rows for t in r["timesteps"]})
    keys = list(dict.fromkeys(r["ann_key"] for r in rows))
    commands = list(dict.fromkeys(r["command"] for r in rows if "command" in r))
    return (["### Rows of an earlier checkpoint, not yet re-measured", "",
             "Measured on an earlier checkpoint saved under the same file name (" +
             ", ".join(f"`{anns[k]['weights']}` sha1 {k.split(':')[2]}, ANN {anns[k]['acc']:.2f} %" for k in keys) +
             "); kept for the record until re-measured, and left out of the choices, targets and plot above. "
             "Command(s): " + "; ".join(f"`{c}`" for c in commands), ""]
            + accuracy_table(rows, ts, anns) + [""])


def targets(suite: str, sd: dict, earlier: dict | None = None) -> list[str]:
    """Issue 3's targets next to what was measured (gaps to the method's own ANN)."""
    goals = {"mnist": [("qcfs", 2, 0.2), ("qcfs_l2", 2, 0.2), ("qcfs_l2_signed", 2, 0.2), ("qcfs_l2_srp", 2, 0.2),
                       ("qcfs_l2_signed_hseo2", 2, 0.2),
                       ("sfn", 1, 0.5), ("sfn_l2", 1, 0.5)],
             "cifar10": [(m, t, tol) for m in ("qcfs", "qcfs_signed", "qcfs_srp") for t, tol in ((4, 1.0), (8, 0.3))]
             + [("qcfs_signed_bc4", 4, 1.0), ("qcfs_signed_bc8", 8, 0.3), ("qcfs_l4_signed_bc4", 4, 1.0),
                ("qcfs_l4_signed_bc4", 8, 0.3), ("qcfs_l4_signed", 8, 0.3)]
             + [("sfn", 1, None), ("sfn_l4", 1, None)],
             # issue 21: within 0.5 of its own ANN at T=4 with binary spikes, at T=1 with graded spikes
             "resnet18": [("qcfs", 4, 0.5), ("qcfs_signed", 4, 0.5), ("qcfs_signed_bc4", 4, 0.5), ("sfn", 1, 0.5)]}[suite]
    out = []
    if suite in ANN_TARGET:  # the gaps are asked of a network whose own ANN reaches ANN_TARGET
        # the checkpoint is chosen on the validation split (never on the test set), then its test accuracy is judged
        used = {r["ann_key"] for r in sd.get("methods", {}).values()}
        cands = [a for k, a in sd.get("ann", {}).items() if k in used and a["activation"] == "qcfs"
                 and a["samples"] == 10000]
        scored = [a for a in cands if a.get("val_acc") is not None and a.get("val_held_out")]
        if scored:
            best = max(scored, key=lambda a: a["val_acc"])
            goal = ANN_TARGET[suite]
            out.append(f"- target QCFS ANN >= {goal:g}% on the full test set, checkpoint chosen on the validation "
                       f"split: `{Path(best['weights']).name}` (validation {best['val_acc']:.2f}%), test "
                       f"{best['acc']:.2f}%" + (" -> met" if best["acc"] >= goal else " -> NOT met"))
        elif cands:
            out.append(f"- target QCFS ANN >= {ANN_TARGET[suite]:g}%: not judged: no checkpoint here was trained without the validation "
                       "split, so none can be chosen without looking at the test set")
    for m, t, tol in goals:
        r = sd.get("methods", {}).get(m)
        if not r or str(t) not in r["per_t"]:
            again = m in (earlier or {}).get("methods", {})  # measured on an earlier checkpoint only
            out.append(f"- target {m} T={t}" + (f" within {tol} of the ANN" if tol else "") +
                       (": not yet re-measured on the current checkpoint (the earlier one's row is below)" if again
                        else ": not measured yet"))
            continue
        gap = r["per_t"][str(t)]["acc"] - sd["ann"][r["ann_key"]]["acc"]
        verdict = "" if tol is None else (" -> met" if gap >= -tol else " -> NOT met")
        if r.get("srp_tau"):  # the pre-run is latency too: say so next to the verdict
            verdict += f" (after an SRP pre-run of {r['srp_tau']} steps: latency {r['srp_tau'] + t} steps)"
        out.append(f"- target {m} T={t}" + (f" within {tol}" if tol else " (report the gap)") +
                   f": measured gap {gap:+.2f} points to ANN {sd['ann'][r['ann_key']]['acc']:.2f} "
                   f"on {r['samples']} images{verdict}")
    return [("Issue 21 targets:" if suite == "resnet18" else "Issue 3 targets:"), ""] + out + [""]


def plot_suite(path: Path, suite: str, sd: dict) -> None:
    """Two panels per suite: each method's gap to its own ANN against T (log2 axis), and its accuracy
    against energy per sample (the accuracy-energy trade-off; points are T = 1, 2, 4, ...)."""
    from snnconv.report import pyplot

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    all_t = set()
    for i, r in enumerate(sd.get("methods", {}).values()):
        ann = sd["ann"][r.get("ann_clip_key") or r["ann_key"]]["acc"]
        ts = sorted(int(t) for t in r["per_t"])
        all_t.update(ts)
        acc = [r["per_t"][str(t)]["acc"] for t in ts]
        style = dict(color=plt.cm.tab20(i % 20), marker="os^vD"[i % 5], ms=4, lw=1)  # > 10 methods per suite
        a1.plot(ts, [a - ann for a in acc], label=r["method"], **style)
        a2.plot([r["per_t"][str(t)]["energy_uj"] for t in ts], acc, **style)
    a1.axhline(0, color="gray", lw=0.8, ls="--")
    a1.set_xscale("log", base=2)
    a1.set_xticks(sorted(all_t), [str(t) for t in sorted(all_t)])
    a1.set_ylim(bottom=max(a1.get_ylim()[0], -10))  # T=1 gaps of tens of points would flatten the rest
    a1.set_xlabel("timesteps T")
    a1.set_ylabel("SNN - own ANN (points; clipped at -10)")
    a2.set_xscale("log")
    a2.set_xlabel("energy per sample (uJ)")
    a2.set_ylabel("SNN accuracy (%)")
    a2.set_ylim(max(a2.get_ylim()[0], max(a["acc"] for a in sd["ann"].values()) - 15), min(a2.get_ylim()[1], 100.2))
    for a in (a1, a2):
        a.grid(alpha=0.3)
    a1.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{suite}: {sd['title']} (scripts/bench_accuracy.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: issue 20's hybrid fine-tuning targets: (networks in finetune_snn.json, T, largest gap below the ANN, points);
#: of several routes to one ANN (resnet20_45k_l2 is resnet20_45k fine-tuned at L=2 first), the one with the best
#: validation accuracy after fine-tuning is judged
# the routes from one ANN (the L=4 resnet20_45k): the conversion itself, or its L=2 / L=1 fine-tunes (with or
# without distillation) converted; every one is judged against the L=4 ANN and the route is chosen on validation
R20_ROUTES = ("resnet20_45k", "resnet20_45k_l2", "resnet20_45k_l2kd", "resnet20_45k_l2kd24", "resnet20_45k_l1kd",
              "resnet20_45k_l1kd40", "resnet20_45k_l1kd60")
FINETUNE_TARGETS = [(R20_ROUTES, 2, 1.0), (R20_ROUTES, 1, 3.0), (("mnist_cnn_l2_55k",), 1, 0.2)]


def route(r: dict) -> str:
    """A fine-tuning route in words: network, where it started, epochs, distillation."""
    kd = f", KD {r['distill']:g}" if r.get("distill") else ""
    kept = f", kept epoch {r['best_epoch']}" if "best_epoch" in r else ""
    return f"`{r['network']}` ({r.get('started_from', 'conversion')}, {r['epochs']} ep{kd}{kept})"


def finetune_section(ft: dict | None) -> list[str]:
    """Binary spikes after hybrid fine-tuning (rows of docs/benchmarks/finetune_snn.json) next to the targets."""
    if not ft or not ft.get("rows"):
        return []
    lines = ["## Binary spikes at T = 1, 2 after hybrid fine-tuning (`snnconv finetune-snn`)", "",
             f"From `finetune_snn.json` (details, history and memory in [finetune_snn.md](finetune_snn.md)); "
             f"command: `{ft.get('command', '?')}`. Binary (not graded) spikes; the epoch kept is chosen on the "
             "validation split, the test set is read once before and once after.", "",
             "| network | T | started from | epochs | KD | val after | test before | test after | ANN test | gap | "
             "energy uJ (SNN / ANN) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ft["rows"]:
        energy = f"{r['energy_uj_after']:.3g} / {r['ann_energy_uj']:.3g}" if "energy_uj_after" in r else "-"
        ann = r.get("ann_test")
        lines.append(f"| {r['network']} | {r['timesteps']} | {r.get('started_from', 'conversion')} | "
                     f"{r['epochs']} | {r.get('distill') or '-'} | {r['val_after']:.2f} | {r['test_before']:.2f} | "
                     f"**{r['test_after']:.2f}** | "
                     + (f"{ann:.2f} | {r['test_after'] - ann:+.2f}" if ann is not None else "- | -") + f" | {energy} |")
    lines += ["", "Issue 20 targets:", ""]
    for nets, t, tol in FINETUNE_TARGETS:
        cands = [r for r in ft["rows"] if r["network"] in nets and r["timesteps"] == t]
        if not cands:
            lines.append(f"- {nets[0]} T={t} within {tol} of its ANN: not measured yet")
            continue
        r = max(cands, key=lambda c: c["val_after"])  # the route: chosen on validation
        gap = r["test_after"] - r["ann_test"]
        chosen = (f" (route {route(r)}, chosen on validation {r['val_after']:.2f} among "
                  + ", ".join(route(c) for c in cands) + ")") if len(cands) > 1 else ""
        lines.append(f"- {nets[0]} T={t} within {tol} of its ANN: gap {gap:+.2f} on {r['test_samples']} test images"
                     + chosen + (" -> met" if gap >= -tol else " -> NOT met"))
    return lines + [""]


def render(data: dict, finetune: dict | None = None) -> str:
    lines = ["# Accuracy of the conversion methods vs timesteps", "",
             "Produced by `scripts/bench_accuracy.py` (commands per suite below) on the project's 2-core CPU machine,",
             "shared with other jobs. Every number is measured here unless it is in the *published anchors* table.",
             f"Energy: E_AC = {E_AC_PJ} pJ per SynOp, E_MAC = {E_MAC_PJ} pJ per MAC, the first layer (analog input) "
             "counted as MACs every step. Firing rate: spike events per neuron per step, averaged over all neurons "
             "(a graded spike of any size is one event).", "",
             "Methods: `max` (layer-wise max, v0 = theta/2), `percentile` (99.9th per channel, v0 = theta/2), "
             "`calibration` / `calibration_pc` (percentile + bias / initial-potential calibration of Li et al. 2021, "
             "calibrated for the T in their pipeline, so their accuracy at other T is not what they were tuned for), "
             "`qcfs` (IF neurons at the trained QCFS thresholds), `sfn` (multi-level scale-and-fire neurons, "
             "graded spikes), `qcfs_signed` (+ negative spikes), `qcfs_srp` (+ SRP pre-run; its T excludes the "
             "pre-run, energy includes it); a suffix `_bc<T>` (`qcfs_signed_bc4`) adds the bias calibration of Li et al. 2021 "
             "for T steps on the converted SNN (latency unchanged), `_hseo<T>` the HSEO search for T on held-out training "
             "samples with the settings chosen on the validation split (docs/benchmarks/hseo_settings.md); a suffix `_l2` (`qcfs_l2`, `qcfs_l2_signed`, ...) runs the method on "
             "the suite's QCFS net trained with L = 2 levels (T = L = 2), compared to that L = 2 ANN. On CIFAR-10 there is no ReLU checkpoint: the ReLU methods convert the "
             "QCFS-trained weights with every quantized clip treated as plain clip(0, lambda) (`qcfs_as_clip`, the "
             "comparison Bu et al. make); their gap is to that clip ANN. See docs/conversion_methods.md.", ""]
    for suite, whole in data.get("suites", {}).items():
        sd, earlier = split_rows(whole)
        # the commands that produced the rows shown (a row re-measured later drops its old command)
        commands = list(dict.fromkeys(r["command"] for r in sd.get("methods", {}).values() if "command" in r))
        lines += [f"## {suite}: {sd['title']}", "", f"Command(s): {'; '.join(f'`{c}`' for c in commands)}", "",
                  f"![gap to the ANN vs T, accuracy vs energy](accuracy_{suite}.png)", ""]
        anns = sd.get("ann", {})
        used = {r.get(f) for r in sd.get("methods", {}).values() for f in ("ann_key", "ann_clip_key")}
        for k, a in anns.items():
            if k not in used:  # an earlier checkpoint or sample count no method row refers to any more
                continue
            energy = f"; {a['energy_uj']:.3g} uJ/sample at {E_MAC_PJ} pJ/MAC" if "energy_uj" in a else ""
            lines.append(f"- ANN `{Path(a['weights']).name}` ({a['activation']}{', L=' + str(a['levels']) if a['levels'] else ''}): "
                         f"**{a['acc']:.2f}%** on {a['samples']} test images{energy}")
        lines.append("")
        rows = [r for r in sd.get("methods", {}).values()]
        if not rows:
            lines += ["(no method measured yet)", ""]
            continue
        ts = sorted({t for r in rows for t in r["timesteps"]})
        lines += accuracy_table(rows, ts, anns)
        lines += ["", "Cells: validation accuracy % / test accuracy % (test gap to the ANN the method converts, on the "
                  "same images); rows without a validation score show the test accuracy only. Test images per method: "
                  + ", ".join(f"{r['method']} {r['samples']}" for r in rows) + "; validation images: "
                  + ", ".join(f"{r['method']} {r.get('val_samples', 0)}" for r in rows) + ".", ""]
        lines += best_on_validation(rows, ts, anns)
        lines += ["Firing rate / energy per sample (uJ) at each T:", "",
                  "| method | spikes | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|---|" + "---|" * len(ts)]
        for r in rows:
            sp = r["spikes"]
            kind = f"graded <= {sp['max_levels']}" if sp["graded"] else "binary"
            kind += ", signed" if sp["signed"] else ""
            lines.append(f"| {r['method']} | {kind} | " + " | ".join(
                f"{r['per_t'][str(t)]['firing_rate']:.3f} / {r['per_t'][str(t)]['energy_uj']:.3g}"
                if str(t) in r["per_t"] else "-" for t in ts) + " |")
        lines.append("")
        lines += targets(suite, sd, earlier)
        for r in rows:
            lines.append(f"- `{r['method']}`: pipeline `{json.dumps(r['pipeline'])}`; "
                         f"{'QCFS weights with clips as clip(0, lambda); ' if r['qcfs_as_clip'] else ''}"
                         f"calibration images {r['calib_samples']}; convert {r['convert_seconds']} s, total {r['seconds']} s")
        lines.append("")
        lines += earlier_section(earlier, anns)
    lines += finetune_section(finetune)
    lines += ["## Published anchors (their ANNs and training, CIFAR-10)", "", "| what | T | accuracy | source |", "|---|---|---:|---|"]
    for a in ANCHORS:
        for t, v in a["acc"].items():
            lines.append(f"| {a['what']} | {t} | {v} | {a['source']} |")
    lines += ["", "## Environment", "", "```", json.dumps(data.get("environment", {}), indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=sorted(SUITES), default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--methods", default="max,percentile,calibration,qcfs,sfn")
    ap.add_argument("--timesteps", default="1,2,4,8,16,32,64")
    ap.add_argument("--eval-samples", type=int, default=None, help="seeded test subset (default: full test set)")
    ap.add_argument("--calib-samples", type=int, default=1024, help="calibration images, from the training part")
    ap.add_argument("--val-samples", type=int, default=None,
                    help="seeded validation subset every row is also scored on (default: the whole validation split)")
    ap.add_argument("--reset", action="store_true",
                    help="drop the suite's stored rows first (rows of earlier checkpoints stay in git history)")
    ap.add_argument("--calib-T", type=int, default=4, help="T the calibration methods calibrate for")
    ap.add_argument("--srp-tau", type=int, default=4)
    ap.add_argument("--qcfs-weights", action="append", default=[], metavar="L=PATH",
                    help="QCFS checkpoint trained with L levels, for the <method>_l<L> methods (repeatable)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="re-run methods already in the JSON")
    ap.add_argument("--state-dir", default=None,
                    help="keep each row's simulation totals here as it runs (snnconv.api.simulate's state): a row "
                         "killed part-way continues where it was when the same command is run again")
    ap.add_argument("--out", default="docs/benchmarks")
    ap.add_argument("--render-only", action="store_true", help="re-render the markdown and plots from the JSON")
    args = ap.parse_args()
    if args.render_only:
        return write_outputs(Path(args.out))
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    parsed = {m: (*split_method(tuning_suffix(m)[0]), tuning_suffix(m)[1]) for m in methods}  # base, L, tuning
    bad = [m for m, (base, levels, tuned) in parsed.items() if base not in METHODS or
           (levels is not None and levels < 1) or
           (tuned is not None and (tuned[1] < 1 or base in RELU_METHODS + ("sfn", "qcfs_srp")))]
    if bad:
        sys.exit(f"unknown method(s) {bad}; known: {', '.join(METHODS)}")
    ts = parse_timesteps(args.timesteps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "accuracy.json"
    data = json.loads(jpath.read_text()) if jpath.is_file() else {}
    s = SUITES[args.suite]
    for item in args.qcfs_weights:
        lv, _, path = item.partition("=")
        if not lv.isdigit() or not path:
            sys.exit(f"--qcfs-weights {item!r}: expected L=PATH")
        s["qcfs_levels"][int(lv)] = path
    store = data.setdefault("suites", {}).setdefault(args.suite, {"title": f"{s['model']} on {s['dataset']}"})
    cmd = command("bench_accuracy.py", args.data_dir, hide={"<state-dir>": args.state_dir})  # no machine paths
    if args.reset:
        store = data["suites"][args.suite] = {"title": store["title"]}
    test = load_dataset(s["dataset"], args.data_dir, train=False).subset(args.eval_samples, 0)
    val = load_part(s["dataset"], args.data_dir, "val").subset(args.val_samples, 0)
    # calibration from the training part: nothing fitted has seen the validation split
    calib = load_part(s["dataset"], args.data_dir, "train").subset(args.calib_samples, 1)
    calib_batches = [x for x, _ in calib.batches(256)]
    for m in methods:
        old = store.setdefault("methods", {}).get(m)
        if old and not args.force and old["samples"] == len(test) and old["timesteps"] == ts and same_weights(old):
            print(f"[{args.suite}/{m}] cached", flush=True)
            continue
        row = run_method(args.suite, m, args, ts, test, calib_batches, store, val)
        if row is None:
            continue
        row["command"] = cmd
        store["methods"][m] = row
        # merge into the file as it is now (another suite may be running in parallel)
        data = json.loads(jpath.read_text()) if jpath.is_file() else {}
        if args.reset and m == methods[0]:
            data.setdefault("suites", {})[args.suite] = {"title": store["title"]}
        cur = data.setdefault("suites", {}).setdefault(args.suite, {"title": store["title"]})
        cur.setdefault("ann", {}).update(store.get("ann", {}))
        cur.setdefault("methods", {})[m] = row  # only this row: a parallel run of the same suite keeps its own
        data["environment"] = {**environment(), "date": time.strftime("%Y-%m-%d")}
        jpath.write_text(json.dumps(data, indent=1))
        (out / "accuracy.md").write_text(render(data, read_finetune(out)))
    write_outputs(out)


def recorded_digest_matches(row: dict) -> bool | None:
    """Whether the checkpoint a stored row was measured on (the digest in its ``ann_key``) is the file at its
    path now; ``None`` when that file is absent here."""
    path = REPO / row["weights"]
    return row["ann_key"].split(":")[2] == weights_digest(path) if path.is_file() else None


def same_weights(row: dict) -> bool:
    """Whether a stored row is of the checkpoint at its path now: a retrained checkpoint under the same name
    re-runs the row."""
    return recorded_digest_matches(row) is True


def superseded(row: dict) -> bool:
    """Whether a stored row was measured on an earlier checkpoint of the file now at its path (the file is
    there and its content digest differs); a row whose checkpoint is absent here is not judged."""
    return recorded_digest_matches(row) is False


def split_rows(sd: dict) -> tuple[dict, dict]:
    """``(current, earlier)``: a suite with its rows of the checkpoints as they are now, and one with the rows
    of earlier checkpoints under the same file names (shown apart until re-measured: never compared or chosen
    among with the current ones)."""
    methods = sd.get("methods", {})
    earlier = {m: r for m, r in methods.items() if superseded(r)}
    current = {m: r for m, r in methods.items() if m not in earlier}
    return {**sd, "methods": current}, {**sd, "methods": earlier}


def weights_digest(path: str | Path) -> str:
    """The short content digest a row's ``ann_key`` records for its checkpoint (sha1, 8 hex digits: the rows
    in accuracy.json carry it, so it stays sha1). Each file is read once per content (size and mtime): the
    report compares every row with its file, and several rows share one checkpoint."""
    st = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:8]


def read_finetune(out: Path) -> dict | None:
    """The hybrid fine-tuning rows (scripts/bench_finetune_snn.py) beside accuracy.json, if measured."""
    path = out / "finetune_snn.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_outputs(out: Path) -> None:
    """accuracy.md and one accuracy_<suite>.png per suite, from accuracy.json as it is on disk."""
    if not (out / "accuracy.json").is_file():  # nothing measured yet
        return
    data = json.loads((out / "accuracy.json").read_text())
    (out / "accuracy.md").write_text(render(data, read_finetune(out)))
    for suite, sd in data.get("suites", {}).items():
        current = split_rows(sd)[0]
        if current.get("methods"):
            plot_suite(out / f"accuracy_{suite}.png", suite, current)


if __name__ == "__main__":
    main()
