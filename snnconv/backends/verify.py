"""Equivalence check of a NIR file against real peer simulators (``snnconv verify``).

The reference is snnconv's own simulation of the file as read by :func:`snnconv.backends.nir.import_nir`
(for files snnconv wrote, that is the lowered graph it exported, node for node). Each peer loads
the same file with its own NIR importer and runs the same input for the same number of steps:

* SpikingJelly 2.0: ``spikingjelly.activation_based.nir_exchange.import_from_nir(path, dt=dt)``, batched
  input, explicit ``state`` passed back every step.
* Norse: ``norse.torch.from_nir(graph, dt=dt)``; its ``Flatten`` is torch's with NIR's ``start_dim``
  (which counts without the batch dimension), so samples are fed unbatched, one at a time.
* snnTorch: ``snntorch.import_nir.import_from_nir(graph)``, unbatched like Norse.

Per spiking layer the report gives the spike counts of both and the number of (step, neuron)
entries where the spike trains differ; for the output, whether the raw per-step outputs are
identical, the largest difference of the integrated readout and the agreement of predictions.
A peer that cannot import the file or run it is reported with the exception it raised and where.
"""
from __future__ import annotations

import contextlib
import io
import keyword
import traceback
from pathlib import Path

import torch

from snnconv.errors import SnnconvError
from snnconv.runtime.simulator import Simulator

PEERS = ("spikingjelly", "norse", "snntorch")


class _TracingSimulator(Simulator):
    """The simulator, recording every spiking node's output and the raw output layer per step."""

    def __init__(self, graph, timesteps):
        super().__init__(graph, timesteps, chunk=timesteps, collect_stats=False)
        self.trace: dict[str, list[torch.Tensor]] = {}
        self.raw: list[torch.Tensor] = []

    def _stateful(self, name, node, cur, state):
        y = super()._stateful(name, node, cur, state)
        if node.spiking:
            self.trace.setdefault(name, []).append(torch.sign(y).to(torch.int8))  # -1/0/1: signed spikes too
        return y

    def _run_chunk(self, x, tc, t0, state, sums, enc_state):
        out, static = super()._run_chunk(x, tc, t0, state, sums, enc_state)
        self.raw.append(out.unsqueeze(0).expand(tc, *out.shape) if static else out.view(tc, x.shape[0], *out.shape[1:]))
        return out, static


def reference_run(graph, x: torch.Tensor, timesteps: int) -> dict:
    """snnconv's run of ``graph``: ``{"spikes": {node: int8 sign [T, B, ...]}, "outputs": [T, B, K]}`` (spikes as
    -1 / 0 / 1: whether a neuron fired and the spike's sign)."""
    sim = _TracingSimulator(graph, timesteps)
    sim.run(x)
    return {"spikes": {k: torch.cat(v) for k, v in sim.trace.items()}, "outputs": torch.cat(sim.raw)}


def _module_name(name: str) -> str:
    """nirtorch's name for a NIR node's module (dots -> underscores, keywords prefixed)."""
    name = name.replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


def _hook_spikes(model: torch.nn.Module, names: list[str], store: dict):
    modules = dict(model.named_modules())
    hooks = []
    for n in names:
        m = modules.get(_module_name(n))
        if m is None:
            continue

        def hook(_mod, _inp, out, n=n):
            o = out[0] if isinstance(out, tuple) else out
            store.setdefault(n, []).append(torch.sign(o.detach()).to(torch.int8))
        hooks.append(m.register_forward_hook(hook))
    return hooks


@torch.no_grad()
def _run_batched(model, x, T, names):
    store: dict[str, list] = {}
    hooks = _hook_spikes(model, names, store)
    state, outs = None, []
    for _ in range(T):
        out, state = model(x, state)
        outs.append(out.detach())
    for h in hooks:
        h.remove()
    return {"spikes": {k: torch.stack(v) for k, v in store.items()}, "outputs": torch.stack(outs)}


@torch.no_grad()
def _run_unbatched(make_model, x, T, names):
    """One sample at a time (the peer's Flatten would otherwise merge the batch dimension)."""
    spikes: dict[str, list] = {}
    outs = []
    for b in range(x.shape[0]):
        model = make_model()
        store: dict[str, list] = {}
        hooks = _hook_spikes(model, names, store)
        state, o = None, []
        for _ in range(T):
            out, state = model(x[b], state)
            o.append(out.detach().reshape(-1))
        for h in hooks:
            h.remove()
        outs.append(torch.stack(o))
        for k, v in store.items():
            spikes.setdefault(k, []).append(torch.stack(v))
    return {"spikes": {k: torch.stack(v, 1) for k, v in spikes.items()}, "outputs": torch.stack(outs, 1)}


def run_peer(peer: str, path: Path, x: torch.Tensor, T: int, dt: float, names: list[str]) -> dict:
    """Load ``path`` in ``peer`` and run ``x`` for ``T`` steps (raises on failure; see :func:`verify`)."""
    import nir

    quiet = contextlib.redirect_stdout(io.StringIO())  # snnTorch prints progress to stdout
    if peer == "spikingjelly":
        from spikingjelly.activation_based.nir_exchange import import_from_nir
        with quiet:
            model = import_from_nir(str(path), dt=dt)
        return _run_batched(model, x, T, names)
    if peer == "norse":
        import norse.torch as norse_torch
        with quiet:
            norse_torch.from_nir(nir.read(path), dt=dt)  # load errors are reported as load errors
        return _run_unbatched(lambda: norse_torch.from_nir(nir.read(path), dt=dt), x, T, names)
    if peer == "snntorch":
        from snntorch.import_nir import import_from_nir
        with quiet:
            import_from_nir(nir.read(path))

        def make():
            with contextlib.redirect_stdout(io.StringIO()):
                return import_from_nir(nir.read(path))
        return _run_unbatched(make, x, T, names)
    raise SnnconvError(f"unknown peer '{peer}' (known: {', '.join(PEERS)})")


def compare(ref: dict, got: dict) -> dict:
    """Per-layer spike agreement and output agreement of a peer run with the reference run."""
    layers = {}
    for name, r in ref["spikes"].items():
        p = got["spikes"].get(name)
        if p is None:
            layers[name] = {"ref_spikes": int((r != 0).sum()), "peer_spikes": None, "mismatches": None,
                            "note": "layer not observable in the peer model"}
            continue
        p = torch.sign(p.reshape(r.shape).float()).to(torch.int8)
        diff = (p != r)
        steps = diff.flatten(1).any(1).nonzero()
        layers[name] = {"ref_spikes": int((r != 0).sum()), "peer_spikes": int((p != 0).sum()), "mismatches": int(diff.sum()),
                        "first_mismatch_step": int(steps[0]) + 1 if len(steps) else None}
    ro, po = ref["outputs"], got["outputs"].reshape(ref["outputs"].shape).to(ref["outputs"].dtype)
    steps = torch.arange(1, ro.shape[0] + 1, dtype=ro.dtype).view(-1, *([1] * (ro.dim() - 1)))
    rm, pm = ro.cumsum(0) / steps, po.cumsum(0) / steps
    return {"layers": layers,
            "spikes_identical": all(v["mismatches"] == 0 for v in layers.values()),
            "outputs_identical": bool(torch.equal(ro, po)),
            "readout_max_abs_diff": float((rm - pm).abs().max()),
            "prediction_agreement": float((rm[-1].argmax(-1) == pm[-1].argmax(-1)).float().mean())}


def verify(path: str | Path, x: torch.Tensor, timesteps: int, peers=PEERS, dt: float | None = None) -> dict:
    """Run the NIR file in snnconv and in each peer on ``x`` ``[B, ...]``; per-peer agreement report."""
    import nir

    from snnconv.backends.nir import import_nir

    path = Path(path)
    graph = import_nir(path, dt)
    dt = float(graph.meta.get("dt", 1.0))
    names = [n for n, node in graph.nodes.items() if node.spiking]
    ref = reference_run(graph, x, timesteps)
    report = {"file": str(path), "nir_version": nir.version, "dt": dt, "timesteps": timesteps,
              "samples": int(x.shape[0]), "reference": "snnconv simulation of import_nir(file)",
              "reference_spikes": {k: int(v.sum()) for k, v in ref["spikes"].items()}, "peers": {}}
    for peer in peers:
        entry: dict = {}
        try:
            mod = __import__({"spikingjelly": "spikingjelly", "norse": "norse", "snntorch": "snntorch"}[peer])
            from importlib.metadata import version
            entry["version"] = version(mod.__name__)
        except Exception as e:
            entry.update(status="not installed", error=f"{type(e).__name__}: {e}")
            report["peers"][peer] = entry
            continue
        try:
            got = run_peer(peer, path, x, timesteps, dt, names)
        except Exception as e:  # report exactly what the peer raised and where, never hide it
            entry.update(_failure(e))
        else:
            try:
                entry.update(status="ran", **compare(ref, got))
            except RuntimeError as e:  # ran, but produced tensors of another shape than snnconv's
                shapes = {k: tuple(v.shape) for k, v in got["spikes"].items()} | {"output": tuple(got["outputs"].shape)}
                entry.update(status="ran, outputs not comparable", error=f"{type(e).__name__}: {e}"[:300],
                             peer_shapes={k: list(v) for k, v in shapes.items()},
                             expected_output=list(ref["outputs"].shape))
        report["peers"][peer] = entry
    return report


def format_report(rep: dict) -> str:
    lines = [f"{rep['file']}: T={rep['timesteps']}, {rep['samples']} samples, dt={rep['dt']} "
             f"(reference: {rep['reference']})"]
    for peer, e in rep["peers"].items():
        head = f"{peer} {e.get('version', '')}".strip()
        if e.get("status") != "ran":
            lines.append(f"  {head}: {e['status']}: {e.get('error', '')}"
                         + (f" (at {e['where']})" if e.get("where") else ""))
            continue
        lines.append(f"  {head}: spikes identical={e['spikes_identical']}, outputs identical={e['outputs_identical']}, "
                     f"readout max |diff|={e['readout_max_abs_diff']:.3g}, "
                     f"prediction agreement={100 * e['prediction_agreement']:.1f}%")
        for name, l in e["layers"].items():
            lines.append(f"    {name:<24} snnconv {l['ref_spikes']:>9}  peer {l['peer_spikes'] if l['peer_spikes'] is not None else '-':>9}"
                         f"  mismatches {l['mismatches'] if l['mismatches'] is not None else '-'}")
    return "\n".join(lines)


# -- deployment targets (snnconv.interop loaders): the gate behind `snnconv verify` -----------------------

def verify_targets(path: str | Path, x: torch.Tensor, timesteps: int, targets, y: torch.Tensor | None = None,
                   batch_size: int = 250, report_t: list[int] | None = None) -> dict:
    """Run the NIR file in snnconv (the reference: ``import_nir`` + the simulator) and, through
    :mod:`snnconv.interop`, in each target with that framework's own neurons, on ``x`` (labels ``y``
    optional), batch by batch. Per target: prediction agreement with snnconv, spike-train mismatch rate
    over all (step, neuron) entries, both accuracies; at ``timesteps`` and at each t in ``report_t``
    (``per_t``). A target that is missing or fails is reported with why."""
    from snnconv.backends.nir import import_nir, needs_snnconv_dynamics
    from snnconv.interop import TARGETS
    from snnconv.interop.base import get_target, load

    path = Path(path)
    graph = import_nir(path)
    names = [n for n, node in graph.nodes.items() if node.spiking]
    ts = sorted(set((report_t or []) + [timesteps]))
    report = {"file": str(path), "timesteps": timesteps, "samples": int(x.shape[0]),
              "dynamics": "snnconv" if needs_snnconv_dynamics(graph) else "nir",  # as import_nir read the neurons "reference": "snnconv simulation of import_nir(file)",
              "targets": {}}
    nets, acc = {}, {}
    for name in targets:
        if name == "lava":
            continue
        t = get_target(name) if name in TARGETS else None
        entry: dict = {"route": "snnconv.interop loader"}
        why = t.available() if t else f"unknown target (known: {', '.join(TARGETS)}, lava)"
        if why:
            entry.update(status="not installed", error=why)
        else:
            entry["version"] = t.version()
            try:
                nets[name] = load(path, name)
            except Exception as e:  # noqa: BLE001 - report what the target raised
                entry.update(_failure(e))
        report["targets"][name] = entry
        acc[name] = {"agree": torch.zeros(len(ts)), "correct": torch.zeros(len(ts)), "mism": 0, "total": 0,
                     "layers": {}}
    ref_correct = torch.zeros(len(ts))
    ref_final = []
    idx = torch.tensor([t - 1 for t in ts])

    def preds(outputs):  # prediction at each reported t: argmax of the running sum of outputs
        return outputs.cumsum(0)[idx].argmax(-1)  # [len(ts), B]

    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        ref = reference_run(graph, xb, timesteps)
        rp = preds(ref["outputs"])
        ref_final.append(rp[-1])
        if y is not None:
            ref_correct += (rp == y[i:i + batch_size]).float().sum(1)
        for name in list(nets):
            a = acc[name]
            try:
                got = nets[name].run(xb, timesteps, record=True)
            except Exception as e:  # noqa: BLE001
                report["targets"][name].update(_failure(e))
                del nets[name]
                continue
            gp = preds(got["outputs"])
            a["agree"] += (gp == rp).float().sum(1)
            if y is not None:
                a["correct"] += (gp == y[i:i + batch_size]).float().sum(1)
            for k in names:
                if k not in got["spikes"]:
                    continue
                r = ref["spikes"][k]
                g = torch.sign(got["spikes"][k].reshape(r.shape).float()).to(torch.int8)
                d = int((g != r).sum())
                lay = a["layers"].setdefault(k, {"ref_spikes": 0, "target_spikes": 0, "mismatches": 0})
                lay["ref_spikes"] += int((r != 0).sum())
                lay["target_spikes"] += int((g != 0).sum())
                lay["mismatches"] += d
                a["mism"] += d
                a["total"] += r.numel()
    n = len(x)
    pct = lambda v: [float(100 * c / n) for c in v]  # noqa: E731
    report["snnconv_accuracy"] = pct(ref_correct)[-1] if y is not None else None
    report["snnconv_per_t"] = {str(t): a for t, a in zip(ts, pct(ref_correct))} if y is not None else {}
    for name in nets:
        a = acc[name]
        ag, co = pct(a["agree"]), pct(a["correct"])
        report["targets"][name].update(
            status="ran", agreement=ag[-1], accuracy=co[-1] if y is not None else None,
            spike_mismatch_rate=a["mism"] / max(a["total"], 1), spike_mismatches=a["mism"], spike_entries=a["total"],
            layers=a["layers"],
            per_t={str(t): {"agreement": g, "accuracy": c if y is not None else None} for t, g, c in zip(ts, ag, co)})
    if "lava" in targets:
        report["targets"]["lava"] = _lava_entry(graph, x, y, timesteps, torch.cat(ref_final))
    return report


def _lava_entry(graph, x: torch.Tensor, y, timesteps: int, ref_pred: torch.Tensor) -> dict:
    """The Lava target (:mod:`snnconv.backends.lava`, IF route): the graph as one integer Lava network, every
    input streamed through it; agreement and accuracy against snnconv's float simulation at ``timesteps``.
    Spike mismatches are counted against snnconv's integer reference of the exported network (Lava must
    reproduce it exactly). The 8-bit input scale comes from the verified inputs."""
    import tempfile

    from snnconv.backends import lava

    entry: dict = {"route": "snnconv.backends.lava (IF route, Loihi2SimCfg fixed_pt)"}
    try:
        lava.lava_python()
        net = lava.build_network(graph, x, timesteps)
        x_int = lava.quantize_input(net, x)
        ref = lava.reference_run(net, x_int)
        with tempfile.TemporaryDirectory() as d:
            lava.write_network(net, Path(d) / "network.npz")
            got = lava.run_lava(Path(d), x_int)
    except Exception as e:  # noqa: BLE001 - a failing target is a result
        entry.update(_failure(e))
        return entry
    comp = lava.compare(net, ref, got)
    pred = torch.from_numpy(got["readout"].argmax(1))
    agree = float((pred == ref_pred).float().mean() * 100)
    acc = float((pred == y).float().mean() * 100) if y is not None else None
    entries = sum(v["neurons"] for v in comp["layers"].values())
    mism = sum(v["neurons_with_different_counts"] for v in comp["layers"].values())
    entry.update(status="ran", version="lava-nc 0.9.0", agreement=agree, accuracy=acc, spike_mismatches=mism,
                 spike_entries=entries, spike_mismatch_rate=mism / max(entries, 1),
                 readout_equals_integer_reference=comp["readout_identical"],
                 per_t={str(timesteps): {"agreement": agree, "accuracy": acc}})
    return entry


def _failure(e: Exception) -> dict:
    """What a peer or target raised, and where (its first line and the innermost frame), for the report."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return {"status": "failed", "error": f"{type(e).__name__}: {msg}"[:400],
            "where": f"{'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno}"}


def gate(report: dict, min_agreement: float = 99.0, max_accuracy_diff: float = 0.3,
         max_mismatch_rate: float = 1e-3) -> list[str]:
    """The reasons ``report`` (from :func:`verify_targets`) fails; empty when every target passes."""
    bad = []
    for name, e in report["targets"].items():
        if e["status"] != "ran":
            bad.append(f"{name}: {e['status']}: {e.get('error', '')}")
            continue
        if e["agreement"] < min_agreement:
            bad.append(f"{name}: top-1 agreement {e['agreement']:.2f}% < {min_agreement}%")
        if e["accuracy"] is not None and abs(e["accuracy"] - report["snnconv_accuracy"]) > max_accuracy_diff:
            bad.append(f"{name}: accuracy {e['accuracy']:.2f}% vs snnconv {report['snnconv_accuracy']:.2f}% "
                       f"(more than {max_accuracy_diff} points apart)")
        if e["spike_mismatch_rate"] > max_mismatch_rate:
            bad.append(f"{name}: spike mismatch rate {e['spike_mismatch_rate']:.2e} > {max_mismatch_rate:g}")
    return bad


def format_targets(rep: dict) -> str:
    acc = rep["snnconv_accuracy"]
    lines = [f"{rep['file']}: {rep['dynamics']} dynamics, T={rep['timesteps']}, {rep['samples']} samples; snnconv"
             + (f" accuracy {acc:.2f}%" if acc is not None else " (no labels)")]
    for name, e in rep["targets"].items():
        head = f"{name} {e.get('version', '')}".strip()
        if e["status"] != "ran":
            lines.append(f"  {head}: {e['status']}: {e.get('error', '')}" + (f" (at {e['where']})" if e.get("where") else ""))
            continue
        lines.append(f"  {head}: agreement {e['agreement']:.2f}%"
                     + (f", accuracy {e['accuracy']:.2f}%" if e["accuracy"] is not None else "")
                     + f", spike mismatches {e['spike_mismatches']} of {e['spike_entries']} ({e['spike_mismatch_rate']:.1e})")
    return "\n".join(lines)


def verify_inputs(path: str | Path, dataset: str | None, data_dir, samples: int, seed: int = 0):
    """``(x, y or None, description)``: ``samples`` test images of ``dataset`` (default: mnist-bundled for a
    1x28x28 input), else seeded uniform random inputs of the file's input shape."""
    from snnconv.backends.nir import import_nir
    from snnconv.data.datasets import load_dataset

    g = import_nir(path)
    in_shape = tuple(next(n.shape for n in g.nodes.values() if n.kind == "input"))
    if dataset is None and in_shape == (1, 28, 28):
        dataset = "mnist-bundled"
    if dataset:
        split = load_dataset(dataset, data_dir, train=False).subset(samples, seed)
        x, y = next(iter(split.batches(len(split))))
        if tuple(x.shape[1:]) != in_shape:
            raise SnnconvError(f"{dataset} samples are {tuple(x.shape[1:])}, the file's input is {in_shape}")
        return x, y, f"{len(split)} test images of {dataset} (seeded subset, seed {seed})"
    x = torch.rand(samples, *in_shape, generator=torch.Generator().manual_seed(seed))
    return x, None, f"uniform random [0, 1), seed {seed}"
