r"""Hybrid fine-tuning of a converted SNN: backpropagation through time with surrogate gradients.

Method (hybrid training: Rathi et al., ICLR 2020, "Enabling deep spiking neural networks with
hybrid conversion and spike timing dependent backpropagation"; Rathi & Roy, DIET-SNN, IEEE TNNLS
2021): start from the converted network (weights, per-channel thresholds, initial membranes of the
conversion), unroll it over the target ``T`` steps exactly as the simulator runs it, and train the
weights, biases, thresholds and initial membranes on the training split with the cross-entropy of
the readout (the mean over the ``T`` steps of the output layer, as :class:`Simulator` predicts).
The spike non-linearity :math:`s = H(v - \theta)` keeps its exact forward value and gets the
rectangular surrogate derivative of Wu et al. (STBP, Front. Neurosci. 2018),
:math:`\partial s/\partial v = \frac{1}{\theta}\,\mathbb{1}[|v-\theta| < \theta/2]`. Subtractive
reset (:math:`v \leftarrow v - \theta s`), signed spikes (binary, Wang et al. 2022) and LIF leak are
kept as in :class:`snnconv.ir.SpikingNeuron`. Every choice (the epoch kept, the learning rate) is
made on the validation split; the test split is scored once by the caller.

Knowledge distillation (optional, ``teacher`` and ``distill`` > 0): the loss becomes
:math:`(1-\alpha)\,\mathrm{CE}(s, y) + \alpha\,\tau^2\,\mathrm{KL}(\mathrm{softmax}(a/\tau)\,\|\,
\mathrm{softmax}(s/\tau))` with :math:`s` the SNN readout and :math:`a` the logits of a teacher ANN on the
same augmented batch (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network"; used to
train low-latency SNNs from their ANN by Takuya et al., COOL CHIPS 2021, and Xu et al., CVPR 2023). The
natural teacher is the ANN the SNN was converted from, or the higher-precision ANN that one was derived from.

Memory: BPTT keeps every step's activations, so it grows linearly with ``T`` (``T x`` one ANN
forward's activations; the layers before the first neuron run once, not ``T`` times); with activation
checkpointing per step (:meth:`DiffSNN.forward`, on by default above a quarter of the memory) only the
membrane state is kept per step and each step is recomputed in the backward pass. The result
is an IR graph like any conversion's: simulate, export, verify and report it as usual.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.utils.checkpoint
from torch import nn

from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.progress import ProgressLines
from snnconv.runtime.kernels import KERNELS
from snnconv.training.ann import distillation_loss, loss_with_teacher, optimizer_step  # noqa: F401 (re-exported)

_SUPPORTED = {"input", "conv2d", "linear", "avgpool2d", "adaptive_avgpool2d", "flatten", "add", "scale",
              "identity", "neuron", "concat"}


class _Spike(torch.autograd.Function):
    """Heaviside ``x >= 0`` forward; rectangular surrogate of width ``width`` backward (Wu et al. 2018)."""

    @staticmethod
    def forward(ctx, x, width):
        ctx.save_for_backward(x, width)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, width = ctx.saved_tensors
        return grad * (x.abs() < width / 2).to(grad.dtype) / width, None


def static_nodes(graph: Graph) -> set[str]:
    """Nodes fed only by the (directly coded, constant) input: they run once, not once per step."""
    static = set(graph.inputs)
    for name, n in graph.nodes.items():
        if n.kind != "input" and n.kind != "neuron" and all(s in static for s in graph.edges[name]):
            static.add(name)
    return static


class DiffSNN(nn.Module):
    """A converted IR graph as a differentiable multi-step module (direct input coding)."""

    def __init__(self, graph: Graph):
        super().__init__()
        bad = sorted({n.kind for n in graph.nodes.values() if n.kind not in _SUPPORTED})
        if bad:
            raise SnnconvError(f"finetune-snn: node kind(s) {', '.join(bad)} are not supported (max pooling, operator "
                               f"nodes and other neuron models have no surrogate here)")
        for name, n in graph.nodes.items():
            if n.kind == "neuron" and (n.levels != 1 or n.refractory or n.presim or n.reset != "subtract"):
                raise SnnconvError(f"finetune-snn: neuron '{name}' is graded, refractory, SRP or reset-to-zero; only "
                                   f"binary (optionally signed) neurons with subtractive reset are fine-tuned")
            if getattr(n, "weight_int", None) is not None:
                raise SnnconvError(f"finetune-snn: '{name}' holds quantized weights; fine-tune before quantizing")
        self.graph = graph.copy()
        self.key = {n: f"p{i}" for i, n in enumerate(self.graph.nodes)}
        self.w, self.b, self.th, self.v0 = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        for name, n in self.graph.nodes.items():
            k = self.key[name]
            if n.kind in ("conv2d", "linear"):
                self.w[k] = nn.Parameter(n.weight.detach().clone().float())
                if n.bias is not None:
                    self.b[k] = nn.Parameter(n.bias.detach().clone().float())
            elif n.kind == "neuron":
                self.th[k] = nn.Parameter(n.threshold.detach().clone().float())
                self.v0[k] = nn.Parameter(torch.tensor(float(n.v_init)))
        self.static = static_nodes(self.graph)

    def _node(self, name):
        n, k = self.graph.nodes[name], self.key[name]
        if n.kind in ("conv2d", "linear"):
            return n.replace(weight=self.w[k], bias=self.b[k] if k in self.b else None)
        return n

    def forward(self, x: torch.Tensor, timesteps: int, checkpoint_steps: bool = False) -> torch.Tensor:
        """Readout logits at ``timesteps``: the mean over the steps of the output layer ``[B, classes]``.

        ``checkpoint_steps``: activation checkpointing per time step (Chen et al. 2016, "Training deep nets
        with sublinear memory cost"): only each step's membrane state is kept for the backward pass and the
        step is recomputed there, so BPTT memory no longer grows with every layer's activations x T, for
        about one more forward pass of compute. Gradients are the same."""
        g = self.graph
        if x.dim() == 4:  # oneDNN's fast layout, as the simulator runs (about 20% faster per BPTT step here)
            x = x.contiguous(memory_format=torch.channels_last)
        vals: dict[str, torch.Tensor] = {g.inputs[0]: x}
        for name in g.nodes:  # layers fed only by the static input run once
            if name in self.static and g.nodes[name].kind != "input":
                vals[name] = KERNELS[g.nodes[name].kind](self._node(name), [vals[s] for s in g.edges[name]])
        state: dict[str, dict] = {}
        total = 0
        for _ in range(timesteps):
            if checkpoint_steps and torch.is_grad_enabled():
                out, state = torch.utils.checkpoint.checkpoint(self._step, vals, state, use_reentrant=False)
            else:
                out, state = self._step(vals, state)
            total = total + out
        return total / timesteps

    def _step(self, static_vals: dict, state: dict) -> tuple[torch.Tensor, dict]:
        """One time step: (output layer, the neurons' next state); ``state`` is read, never changed."""
        g = self.graph
        cur_vals = dict(static_vals)
        new_state: dict[str, dict] = {}
        for name, n in g.nodes.items():
            if name in self.static:
                continue
            ins = [cur_vals[s] for s in g.edges[name]]
            if n.kind == "neuron":
                cur_vals[name], new_state[name] = self._neuron_step(name, n, ins[0], state.get(name))
            else:
                cur_vals[name] = KERNELS[n.kind](self._node(name), ins)
        return cur_vals[g.outputs[0]], new_state

    def _neuron_step(self, name, n, current, st):
        k = self.key[name]
        th = self.th[k].clamp(min=1e-4)
        th = th.view((1, -1) + (1,) * (current.dim() - 2)) if th.numel() > 1 else th.reshape(())
        if st is None:
            v = self.v0[k] * th + torch.zeros_like(current)
            off = getattr(n, "v_offset", None)
            if off is not None:
                v = v + (off.view(-1, *([1] * (current.dim() - 2))) if off.dim() == 1 and current.dim() > 2 else off)
            st = {"v": v, "n": torch.zeros_like(current) if n.signed else None}  # net spike count: signed only
        v = st["v"] * n.leak + current if n.leak != 1.0 else st["v"] + current
        s = _Spike.apply(v - th, th.detach())
        count = st["n"]
        if n.signed:  # a negative spike while the net count is positive and the membrane is below zero
            neg = _Spike.apply(-v, th.detach()) * (count >= 1).to(v.dtype) * (v < 0).to(v.dtype)
            s = s - neg
            count = count + s.detach()
        return s * th, {"v": v - s * th, "n": count}

    @torch.no_grad()
    def to_graph(self) -> Graph:
        """The fine-tuned network as an IR graph (weights, biases, thresholds and initial membranes)."""
        g = self.graph.copy()
        for name, n in list(g.nodes.items()):
            k = self.key[name]
            if n.kind in ("conv2d", "linear"):
                new = n.replace(weight=self.w[k].detach().clone(), bias=self.b[k].detach().clone() if k in self.b else None)
            elif n.kind == "neuron":
                new = n.replace(threshold=self.th[k].detach().clamp(min=1e-4).clone(),
                                v_init=float(self.v0[k].detach().clamp(0.0, 1.0)))
            else:
                continue
            new.shape = n.shape
            g.nodes[name] = new
        g.meta = {**g.meta, "finetuned": True}
        return g


@torch.no_grad()
def accuracy(net: DiffSNN, split, timesteps: int, batch_size: int = 256) -> float:
    correct = 0
    for x, y in split.batches(batch_size):
        correct += (net(x, timesteps).argmax(1) == y).sum().item()
    return 100.0 * correct / len(split)


def finetune(graph: Graph, train, val, timesteps: int, epochs: int = 2, lr: float = 1e-4, batch_size: int = 64,
             augment: bool = True, seed: int = 0, log=print, max_batches: int | None = None,
             state_path: str | Path | None = None, state_every: float = 300.0, teacher=None, distill: float = 0.0,
             temperature: float = 4.0, checkpoint_steps: bool | None = None) -> dict:
    """Fine-tune ``graph`` for ``timesteps`` steps on ``train``; keep the epoch (0 = the conversion itself)
    with the best ``val`` accuracy. Returns ``{"graph", "history", "best_epoch", "val_accuracy"}``.

    With ``state_path`` the run is resumable: the full state (parameters, optimizer, scheduler, epoch,
    batch reached, the best epoch's parameters) is written there atomically every ``state_every``
    seconds and after every epoch; calling again with the same settings continues from it. A state
    written for other settings is refused, never silently mixed in.

    With ``teacher`` (a module or callable giving class logits for an input batch) and ``distill`` = alpha
    in (0, 1], the loss is :func:`distillation_loss` at ``temperature``; the teacher is not trained.

    ``checkpoint_steps`` (:meth:`DiffSNN.forward`): ``None`` turns it on when :func:`activation_memory_mb`
    estimates more than :func:`checkpoint_above_mb` (a quarter of the machine's memory) per batch, where it
    pays; results do not depend on it."""
    from snnconv.checkpoints import load_checkpoint, save_checkpoint

    if not 0 <= distill <= 1 or temperature <= 0:
        raise SnnconvError(f"finetune-snn: distillation weight must be in [0, 1] (got {distill}) and temperature "
                           f"> 0 (got {temperature})")
    if distill > 0 and teacher is None:
        raise SnnconvError("finetune-snn: a distillation weight needs a teacher network")
    if isinstance(teacher, nn.Module):
        teacher.eval()
    if checkpoint_steps is not False:
        kept_mb = activation_memory_mb(graph, timesteps, batch_size)
        checkpoint_steps = checkpoint_steps or kept_mb > checkpoint_above_mb()
        if checkpoint_steps:
            log(f"finetune-snn: activation checkpointing per time step (BPTT would keep about {kept_mb:.0f} MB "
                f"per batch)")
    torch.manual_seed(seed)
    net = DiffSNN(graph)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = -(-len(train) // batch_size)
    if max_batches:
        steps = min(steps, max_batches)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    settings = {"timesteps": timesteps, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                "train_samples": len(train), "val_samples": len(val), "max_batches": max_batches or 0}
    if distill > 0:  # (states written without distillation keep their settings)
        settings.update(distill=distill, temperature=temperature)

    def loss_of(x, y):
        return loss_with_teacher(net(x, timesteps, checkpoint_steps), x, y, teacher, distill, temperature,
                                 "finetune-snn")
    start, first, partial, best_params = 1, 0, (0.0, 0), None
    if state_path is not None and Path(state_path).is_file():
        st = load_checkpoint(state_path)
        if st.get("settings") != settings:
            raise SnnconvError(f"finetune-snn: state {state_path} was written for other settings "
                               f"({st.get('settings')}); use a new state path or the same settings")
        net.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, first, partial, history = st["epoch"], st["batch"], tuple(st["partial"]), st["history"]
        best_params = st.get("best_params")
        best_epoch = max(history, key=lambda h: (h["val_acc"], -h["epoch"]))["epoch"]
        best = {"epoch": best_epoch, "val": max(h["val_acc"] for h in history)}
        log(f"finetune-snn: resuming at epoch {start}/{epochs}, batch {first}/{steps} ({state_path})")
    else:
        best = {"epoch": 0, "val": accuracy(net, val, timesteps)}
        history = [{"epoch": 0, "val_acc": best["val"]}]
        log(f"finetune-snn: T={timesteps}, converted network: validation {best['val']:.2f}%")

    def save_state(epoch: int, batch: int, part: tuple) -> None:
        if state_path is not None:
            save_checkpoint(state_path, {"state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
                                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                         "epoch": epoch, "batch": batch, "partial": list(part), "history": history,
                                         "settings": settings, "best_params": best_params})

    for epoch in range(start, epochs + 1):
        t0 = last_save = time.time()
        total, seen = partial if epoch == start and first else (0.0, 0)
        skip = first if epoch == start else 0
        lines = ProgressLines(log, f"finetune-snn epoch {epoch}/{epochs}", steps, skip)
        net.train()
        batches = train.batches(batch_size, shuffle=True, augment=augment, seed=seed + epoch, start=skip)
        for i, (x, y) in enumerate(batches, start=skip):
            if i >= steps:
                break
            total += optimizer_step(opt, sched, loss_of(x, y)) * len(y)
            seen += len(y)
            lines.update(i + 1, total / seen)
            if time.time() - last_save > state_every and i + 1 < steps:
                save_state(epoch, i + 1, (total, seen))
                last_save = time.time()
        net.eval()
        val_acc = accuracy(net, val, timesteps)
        history.append({"epoch": epoch, "loss": total / max(seen, 1), "val_acc": val_acc,
                        "seconds": round(time.time() - t0, 1)})
        log(f"finetune-snn epoch {epoch}/{epochs}: loss {total / max(seen, 1):.4f}, validation {val_acc:.2f}% "
            f"({time.time() - t0:.0f}s)")
        if val_acc > best["val"]:
            best = {"epoch": epoch, "val": val_acc}
            best_params = {k: v.detach().clone() for k, v in net.state_dict().items()}
        save_state(epoch + 1, 0, (0.0, 0))
    if best_params is None:  # the conversion itself was best on validation
        return {"graph": graph, "history": history, "best_epoch": 0, "val_accuracy": best["val"]}
    net.load_state_dict(best_params)
    return {"graph": net.to_graph(), "history": history, "best_epoch": best["epoch"], "val_accuracy": best["val"]}


#: above this estimate of BPTT activations per batch (MB), finetune() checkpoints each time step by default;
#: None: a quarter of the machine's memory. Checkpointing costs about 1.5x the step time here and glibc keeps
#: part of the freed memory in the process (docs/benchmarks/bptt_memory.md), so it pays only when memory is short.
CHECKPOINT_ABOVE_MB: float | None = None


def checkpoint_above_mb() -> float:
    if CHECKPOINT_ABOVE_MB is not None:
        return CHECKPOINT_ABOVE_MB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4 / 2 ** 20


def activation_memory_mb(graph: Graph, timesteps: int, batch_size: int) -> float:
    """What BPTT keeps for the backward pass per batch (MB): the distinct tensors autograd saves during a
    forward over ``timesteps`` steps of a one-sample batch (every layer's inputs, membranes, surrogate masks;
    parameters excluded), times ``batch_size``. Activation memory is linear in the batch, so this is the
    plain (not checkpointed) BPTT's, measured rather than guessed from the layer outputs."""
    net = DiffSNN(graph)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    x = torch.zeros(1, *graph.nodes[graph.inputs[0]].shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, timesteps)
    return sum(kept.values()) * batch_size / 2 ** 20
