#!/usr/bin/env python
"""Results unchanged by the restructuring: the same `snnconv convert` commands run on a base revision and on
the working tree must give bit-identical accuracies and operation counts.

The base revision is checked out into a temporary git worktree and run with the same Python environment
(``PYTHONPATH`` set to it); every command writes its own run folder; the reports' ``ann_accuracy``,
``snn_accuracy_all_t`` and ``energy`` (SynOps, MACs per T) are compared exactly.

    python scripts/check_unchanged.py --base afcf281~1 --data-dir ../shared/datasets

writes docs/benchmarks/unchanged.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, checkpoints_line, command, environment_block, sha256  # noqa: E402

MNIST = "snnconv/assets/mnist_cnn-mnist.pt"
MNIST_QCFS = "snnconv/assets/mnist_cnn_qcfs4-mnist.pt"
R20 = "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_swa.pt"
#: name -> convert arguments (explicit model, checkpoint and recipe: no defaults that changed on purpose)
RUNS = {
    "quick-start (bundled subset, percentile)": ["--model", "mnist_cnn", "--dataset", "mnist-bundled", "--weights",
                                                 MNIST, "--method", "percentile", "--timesteps", "1,2,4,8,16,32"],
    "MNIST rows (full test set, qcfs)": ["--model", "mnist_cnn", "--dataset", "mnist", "--weights", MNIST_QCFS,
                                         "--method", "qcfs", "--timesteps", "1,2,4,8,16,32,64"],
    "MNIST rows (full test set, percentile)": ["--model", "mnist_cnn", "--dataset", "mnist", "--weights", MNIST,
                                               "--method", "percentile", "--timesteps", "1,2,4,8,16,32,64"],
    "ResNet-20 (500 CIFAR-10 test images, qcfs)": ["--model", "resnet20", "--dataset", "cifar10", "--weights", R20,
                                                   "--method", "qcfs", "--eval-samples", "500", "--timesteps",
                                                   "1,2,4,8,16"],
    # one run per other neuron model (the per-model IR neuron classes): signed, graded, leaky
    "MNIST (full test set, qcfs, signed IF)": ["--model", "mnist_cnn", "--dataset", "mnist", "--weights", MNIST_QCFS,
                                               "--method", "qcfs", "--signed", "--timesteps", "1,2,4,8,16,32"],
    "MNIST (bundled subset, sfn, multi-level IF)": ["--model", "mnist_cnn", "--dataset", "mnist-bundled", "--weights",
                                                    MNIST_QCFS, "--method", "sfn", "--timesteps", "1,2,4,8"],
    "MNIST (bundled subset, percentile, LIF)": ["--model", "mnist_cnn", "--dataset", "mnist-bundled", "--weights",
                                                MNIST, "--method", "percentile", "--neuron", "lif", "--leak", "0.95",
                                                "--timesteps", "1,2,4,8,16,32"],
}
FIELDS = ("ann_accuracy", "snn_accuracy_all_t", "energy")


def run(src: Path, args: list[str], out: Path, data_dir: str) -> dict:
    args = [str(REPO / a) if a in (MNIST, MNIST_QCFS, R20) else a for a in args]  # the same checkpoint bytes
    env = {**os.environ, "PYTHONPATH": str(src), "SNNCONV_DATA_DIR": data_dir, "SNNCONV_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-c", "from snnconv.cli import main; main()", "convert", *args, "--output-dir", str(out)]
    r = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{src}: {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1:]}")
    rep = json.loads((out / "report.json").read_text())
    return {k: rep[k] for k in FIELDS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="revision before the restructuring")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "unchanged"))
    ap.add_argument("--what", default="before the layering / recipes / contracts / registries work",
                    help="what the base revision is, for the page")
    ap.add_argument("--render-only", action="store_true", help="re-render the page from the JSON")
    args = ap.parse_args()
    if args.render_only:
        data = json.loads(Path(args.out).with_suffix(".json").read_text())
        data["what"] = args.what
        Path(args.out).with_suffix(".json").write_text(json.dumps(data, indent=1))
        return render(data, Path(args.out))
    data_dir = str(Path(args.data_dir).resolve())
    base_rev = subprocess.run(["git", "rev-parse", args.base], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    head_rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), base_rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for i, (name, cargs) in enumerate(RUNS.items()):
                a = run(wt, cargs, Path(tmp) / f"base{i}", data_dir)
                b = run(REPO, cargs, Path(tmp) / f"head{i}", data_dir)
                same = a == b
                rows.append({"run": name, "args": cargs, "identical": same, "base": a, "head": b})
                print(f"{name}: {'identical' if same else 'DIFFERENT'}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=REPO, capture_output=True)
    from snnconv.report import environment

    data = {"command": command("check_unchanged.py", args.data_dir), "base": base_rev, "head": head_rev, "what": args.what,
            "checkpoints": {c: sha256(c) for c in (MNIST, MNIST_QCFS, R20)}, "rows": rows,
            "environment": environment()}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    render(data, out)


def render(data: dict, out: Path) -> None:
    rows = data["rows"]
    lines = ["# Results unchanged by the restructuring (issue 19)", "",
             f"Command: `{data['command']}`. Base `{data['base'][:10]}` ({data.get('what', '')}) against "
             f"`{data['head'][:10]}`: the same `snnconv convert` commands, the same data and "
             "checkpoints; compared exactly: ANN accuracy, SNN accuracy at every t, SynOps and MACs per T.", "",
             "| run | identical | ANN (%) | SNN (%) at t = 1, 2, ..., 8 |", "|---|---|---:|---|"]
    for r in rows:
        acc = r["head"]["snn_accuracy_all_t"]
        lines.append(f"| {r['run']} | {'yes' if r['identical'] else '**no**'} | {r['head']['ann_accuracy']:.2f} | "
                     f"{' / '.join(f'{v:.2f}' for v in acc[:8])}{' ...' if len(acc) > 8 else ''} |")
    lines += ["", checkpoints_line(data["checkpoints"])]
    lines += environment_block(data["environment"])
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    if not all(r["identical"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
