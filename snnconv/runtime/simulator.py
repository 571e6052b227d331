"""Multi-step SNN simulator over the IR.

Execution model (per batch, per time chunk of ``chunk`` steps):

* Tensors that do not change over time ("static": the directly encoded input and every
  stateless layer fed only by static tensors) are computed once as ``[B, ...]``. With direct
  encoding the first conv + BN therefore runs once, not T times.
* Time-varying tensors are ``[Tc*B, ...]``: every stateless layer runs once per chunk on all
  its timesteps together (multi-step mode); only neurons and max-pool gates loop over time.
* State (membrane potentials, max-pool gate counters) is carried across chunks, so peak memory
  is set by ``chunk``, not by ``T``.
* The readout is the accumulated membrane potential of the output layer (a non-spiking
  integrator): logits at step t are the running mean of its input, so predictions for every
  t <= T come out of one run.

Max pooling (``MaxPool2d.spike_mode``): ``count`` emits the change of the window maximum of the
accumulated inputs (exact: the output total is the max of the input totals at every step); ``gate`` is
the gating scheme of Rueckauer et al. (Front. Neurosci. 2017, §2.2.3): each window passes the spikes of
the input that has fired the most so far (accumulated output, including the current step), which
converges to the max of the input rates; ``wta`` latches each window onto its first input to fire
(winner-take-all by lateral inhibition) and passes that input's spikes.

Devices: ``device`` (``cpu``, ``cuda``, ``cuda:N``) holds the graph's tensors, the inputs, the states and
every intermediate on that device; statistics are accumulated on the CPU (a few numbers per chunk) and
:meth:`Simulator.run` / :meth:`Simulator.mean_outputs` return their results on the device the input came
from, so callers (passes, reports) do not depend on where the simulation ran. Nothing imports CUDA
unless a CUDA device is asked for.

Statistics: spike events per neuron node; synaptic operations (SynOps, accumulates) per
synaptic node = sum over incoming events of each source's outgoing synapse count (exact,
from the nonzero weight pattern); MACs for synaptic nodes fed by analog (static) input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from snnconv.encoders import Encoder
from snnconv.ir import Graph
from snnconv.runtime.neurons import NEURON_DYNAMICS
from snnconv.runtime.interpreter import _consumer_counts, run_ann
from snnconv.runtime.kernels import KERNELS
from snnconv.runtime.lowp import KERNEL_SETS, int8_plan
from snnconv.runtime.operators import run_operator, running_sum

E_AC_PJ = 0.9  # 45 nm CMOS energy per accumulate (Horowitz, ISSCC 2014)
E_MAC_PJ = 4.6  # energy per multiply-accumulate


@dataclass
class SimStats:
    """Totals over all simulated samples; per-t arrays are cumulative up to step t (index t-1)."""

    timesteps: int
    samples: int = 0
    correct: torch.Tensor | None = None  # [T] correct predictions using the readout up to t
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> [T] events per step
    neurons: dict[str, int] = field(default_factory=dict)  # node -> neurons per sample
    synops: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> [T] ACs per step
    macs: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> [T] MACs per step
    layer_error: dict[str, float] = field(default_factory=dict)  # node -> sum of per-batch rel. errors
    error_batches: int = 0

    def accuracy(self) -> list[float]:
        return (100.0 * self.correct / max(self.samples, 1)).tolist()

    def firing_rates(self) -> dict[str, float]:
        """Mean spike events per neuron per timestep, per spiking node."""
        return {k: float(v.sum() / (self.neurons[k] * self.samples * self.timesteps)) for k, v in self.spikes.items()}

    def synops_per_sample(self) -> list[float]:
        """Cumulative SynOps per sample up to each t."""
        total = sum(self.synops.values(), torch.zeros(self.timesteps, dtype=torch.float64))
        return (total.cumsum(0) / max(self.samples, 1)).tolist()

    def macs_per_sample(self) -> list[float]:
        total = sum(self.macs.values(), torch.zeros(self.timesteps, dtype=torch.float64))
        return (total.cumsum(0) / max(self.samples, 1)).tolist()

    def energy_uj(self) -> list[float]:
        """Energy per sample up to each t in microjoules: E_AC * SynOps + E_MAC * MACs."""
        return [(E_AC_PJ * s + E_MAC_PJ * m) * 1e-6 for s, m in zip(self.synops_per_sample(), self.macs_per_sample())]

    def layer_errors(self) -> dict[str, float]:
        return {k: v / max(self.error_batches, 1) for k, v in self.layer_error.items()}


class Simulator:
    """Runs a converted graph for ``timesteps`` steps; accumulate statistics over batches with :meth:`run`.

    ``kernels="int8"`` runs the conv/linear layers fed by spikes whose weights are int8 codes on exact integer
    kernels (:mod:`snnconv.runtime.lowp`); ``int8_skipped`` then names every other such layer and why not."""

    def __init__(self, graph: Graph, timesteps: int, chunk: int = 8, collect_stats: bool = True,
                 encoder: Encoder | None = None, record: tuple[str, ...] = (), channels_last: bool = True,
                 device: str | torch.device | None = None, kernels: str = "fp32"):
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ValueError("the simulator needs a graph with one input and one output")
        if kernels not in KERNEL_SETS:
            raise ValueError(f"kernels must be 'fp32' or 'int8', not {kernels!r}")
        self.device = torch.device(device) if device is not None else None
        if self.device is not None:
            graph = graph.to(self.device)
        self.graph, self.T, self.chunk, self.collect = graph, timesteps, max(1, min(chunk, timesteps)), collect_stats
        # statistics are integer counts held in float64: exact, so sums over batches (or over
        # processes, runtime.distributed) do not depend on the order they are added in
        self.stats = SimStats(timesteps, correct=torch.zeros(timesteps, dtype=torch.float64))
        self._consumers = _consumer_counts(graph)
        self._fanout: dict[str, torch.Tensor] = {}
        self._macs: dict[str, float] = {}  # dense MACs per sample of layers fed by analog input
        self._t0 = 0  # first timestep of the chunk being simulated
        self.encoder = encoder or Encoder("direct")
        self._batches = 0
        # hook for plasticity (snnconv.learning): outputs of these nodes, [T, B, ...], of the last run()
        unknown = [n for n in record if n not in graph.nodes]
        if unknown:
            raise ValueError(f"cannot record unknown nodes {unknown}")
        self.record, self.recorded = tuple(record), {}
        self._taps: dict[str, list[torch.Tensor]] = {}
        # performance (docs/benchmarks/simulator.md): 4-D activations flow channels-last and conv
        # weights are converted once (oneDNN's fast layout on CPU; the same math, summed in another
        # order); spike events of binary neurons are reused for SynOps instead of re-deriving them
        self.channels_last = channels_last
        self._fast: dict[str, object] = {}
        if channels_last:
            for name, node in graph.nodes.items():
                w = getattr(node, "weight", None)
                if node.kind == "conv2d" and isinstance(w, torch.Tensor) and w.dim() == 4:
                    self._fast[name] = node.replace(weight=w.contiguous(memory_format=torch.channels_last))
        self._events: dict[str, torch.Tensor] = {}  # node -> its 0/1 spike counts [Tc*B, ...] this chunk
        # kernels="int8": synaptic layers with int8 weights fed by a neuron with one threshold run oneDNN's
        # u8 x s8 -> int32 kernels on the spike counts (runtime.lowp; exact sums, fp32 result); int8_skipped
        # says for every other synaptic node why it stays fp32
        self.kernels = kernels
        self._int8, self.int8_skipped = int8_plan(graph, self.device) if kernels == "int8" else ({}, {})
        self._code_users: dict[str, int] = {}  # neuron -> how many int8 layers read its counts
        for k in self._int8.values():
            self._code_users[k.source] = self._code_users.get(k.source, 0) + 1
        self._codes: dict[str, torch.Tensor] = {}  # neuron -> its spike counts [Tc*B, ...] for int8 consumers
        # ``chunk`` is an upper bound: a chunk's largest activation is kept under ``chunk_bytes``
        # (large fresh buffers cost page faults and fall out of cache; per-step batches of 64-128
        # samples keep oneDNN convolutions fastest). Results do not depend on the chunk size.
        sizes = [math.prod(n.shape) for n in graph.nodes.values() if getattr(n, "shape", None)]
        self._sample_numel = max(sizes) if sizes else 1
        self.chunk_bytes = 8 * 2 ** 20

    def _chunk_for(self, batch: int) -> int:
        return max(1, min(self.chunk, self.chunk_bytes // max(1, batch * self._sample_numel * 4)))

    @torch.no_grad()
    def run(self, x: torch.Tensor, labels: torch.Tensor | None = None, layer_error: bool = False) -> torch.Tensor:
        """Simulate one batch ``x`` ``[B, ...]``; returns readout logits for every t: ``[T, B, classes]``."""
        B = x.shape[0]
        home = x.device  # results go back where the input came from
        if self.device is not None:
            x = x.to(self.device)
        state: dict[str, torch.Tensor] = {}
        enc_state = None if self.encoder.static else self.encoder.start(x, self._batches)
        self._batches += 1
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        acc = None
        self._taps = {n: [] for n in self.record}
        sums: dict[str, torch.Tensor] = {} if layer_error else None
        logits = []
        chunk = self._chunk_for(B)
        for t0 in range(0, self.T, chunk):
            tc = min(chunk, self.T - t0)
            out, static = self._run_chunk(x, tc, t0, state, sums, enc_state)
            out = out.unsqueeze(0).expand(tc, *out.shape) if static else out.view(tc, B, *out.shape[1:])
            csum = out.cumsum(0) if acc is None else acc + out.cumsum(0)
            acc = csum[-1]
            steps = torch.arange(t0 + 1, t0 + tc + 1, dtype=csum.dtype, device=csum.device).view(
                tc, *([1] * (csum.dim() - 1)))
            logits.append(csum / steps)
        logits = torch.cat(logits)
        self.recorded = {n: torch.cat(v) for n, v in self._taps.items()}
        self.stats.samples += B
        if labels is not None:
            self.stats.correct += (logits.argmax(-1) == labels.to(logits.device).view(1, -1)).sum(1).double().cpu()
        if layer_error:
            self._layer_error(x, sums)
        return logits.to(home)

    @torch.no_grad()
    def mean_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Time-averaged output (sum over the T steps / T) of every spiking node for batch ``x``
        ``[B, ...]``; used by calibration passes to compare the SNN with the ANN layer by layer."""
        home = x.device
        if self.device is not None:
            x = x.to(self.device)
        state: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        enc_state = None if self.encoder.static else self.encoder.start(x, self._batches)
        self._batches += 1
        chunk = self._chunk_for(x.shape[0])
        for t0 in range(0, self.T, chunk):
            self._run_chunk(x, min(chunk, self.T - t0), t0, state, sums, enc_state)
        return {k: (v / self.T).to(home) for k, v in sums.items()}

    # -- one chunk -------------------------------------------------------------------------------
    def _run_chunk(self, x, tc, t0, state, sums, enc_state):
        g, B = self.graph, x.shape[0]
        self._t0 = t0
        if enc_state is None:  # direct coding: the same analog input every step
            values: dict[str, tuple[torch.Tensor, bool]] = {g.inputs[0]: (x, True)}  # name -> (tensor, static?)
        else:
            spikes = self.encoder.encode(x, t0, tc, enc_state)
            values = {g.inputs[0]: (spikes.reshape(tc * B, *x.shape[1:]), False)}
        remaining = dict(self._consumers)
        code_left = dict(self._code_users)
        for name, node in g.nodes.items():
            if node.kind == "input":
                continue
            srcs = g.edges[name]
            ins = [values[s] for s in srcs]
            if node.spiking or node.kind == "maxpool2d":
                cur = ins[0][0]
                if ins[0][1]:
                    cur = cur.unsqueeze(0).expand(tc, *cur.shape)
                else:
                    cur = cur.view(tc, B, *cur.shape[1:])
                y = self._stateful(name, node, cur, state)
                if sums is not None and node.spiking:
                    sums[name] = sums.get(name, 0) + y.sum(0)
                values[name] = (y.reshape(tc * B, *y.shape[2:]), False)
            elif getattr(node, "operator", False) and not all(s for _, s in ins):
                # spiking-operator node (softmax, layer norm, matmul, ...): accumulate-and-difference
                cur = [v.unsqueeze(0).expand(tc, *v.shape) if s else v.view(tc, B, *v.shape[1:]) for v, s in ins]
                y, state[name] = run_operator(node, cur, state.get(name), KERNELS[node.kind])
                values[name] = (y.reshape(tc * B, *y.shape[2:]), False)
            else:
                static = all(s for _, s in ins)
                tensors = [v if (s == static or not s) else v.repeat(tc, *([1] * (v.dim() - 1))) for v, s in ins]
                if self.collect and node.synaptic:
                    self._count_synops(name, node, ins[0], t0, tc, B, self._events.get(srcs[0]))
                if name in self._int8:  # its source neuron ran earlier in this chunk and left its counts
                    src = self._int8[name].source
                    values[name] = (self._int8[name](self._codes[src]), False)
                    code_left[src] -= 1
                    if code_left[src] == 0:  # its last int8 reader this chunk
                        del self._codes[src]
                else:
                    values[name] = (KERNELS[node.kind](self._fast.get(name, node), tensors), static)
            if name in self._taps:
                v, st = values[name]
                self._taps[name].append(v.unsqueeze(0).expand(tc, *v.shape) if st else v.view(tc, B, *v.shape[1:]))
            for s in srcs:
                remaining[s] -= 1
                if remaining[s] == 0 and s not in g.outputs:
                    del values[s]
                    self._events.pop(s, None)
        self._events.clear()
        self._codes.clear()
        return values[g.outputs[0]]

    def _stateful(self, name, node, cur, state):
        if node.kind == "maxpool2d":
            if node.spike_mode == "gate":
                return self._gated_maxpool(name, node, cur, state)
            if node.spike_mode == "wta":
                return self._wta_maxpool(name, node, cur, state)
            return self._count_maxpool(name, node, cur, state)
        y, counts, state[name] = NEURON_DYNAMICS[node.kind](node, cur, state.get(name))
        if name in self._code_users:
            self._codes[name] = counts.reshape(-1, *counts.shape[2:])
        if self.collect:
            t0 = self._t0
            dims = tuple(range(1, counts.dim()))  # reduce in place: no copy of a channels-last tensor
            if node.kind == "neuron" and node.levels == 1 and not getattr(node, "signed", False) \
                    and counts[0].numel() < 2 ** 24:  # 0/1 counts: their float32 sum is exact
                per_step = counts.sum(dims).double()
            else:
                per_step = torch.count_nonzero(counts, dim=dims).double()
            st = self.stats.spikes.setdefault(name, torch.zeros(self.T, dtype=torch.float64))
            st[t0:t0 + len(per_step)] += per_step.cpu()
            self.stats.neurons[name] = counts[0, 0].numel()
            if node.kind == "neuron" and node.levels == 1 and not getattr(node, "signed", False):
                # binary spikes: the counts are the events (output = counts * theta, theta > 0)
                self._events[name] = counts.reshape(-1, *counts.shape[2:])
        return y

    def _count_maxpool(self, name, node, cur, state):
        """``count`` mode: the change of the window max of the accumulated inputs, for the whole chunk at once."""
        tc = cur.shape[0]
        acc0, prev = state.get(name, (None, None))
        acc = running_sum(cur, acc0)  # chunk-independent: an ulp would move a window max and count as an event
        m = F.max_pool2d(acc.reshape(tc * cur.shape[1], *cur.shape[2:]), node.kernel_size, node.stride, node.padding,
                         node.dilation, node.ceil_mode)
        m = m.view(tc, cur.shape[1], *m.shape[1:])
        first = m[:1] if prev is None else m[:1] - prev.unsqueeze(0)
        state[name] = (acc[-1], m[-1])
        return torch.cat([first, m[1:] - m[:-1]])

    def _gated_maxpool(self, name, node, cur, state):
        tc = cur.shape[0]
        acc = state.get(name)
        if acc is None:
            acc = torch.zeros_like(cur[0])
        outs = []
        for t in range(tc):
            acc = acc + cur[t]
            _, idx = F.max_pool2d(acc, node.kernel_size, node.stride, node.padding, node.dilation, node.ceil_mode,
                                  return_indices=True)
            outs.append(_window_pick(cur[t], idx))
        state[name] = acc
        return torch.stack(outs)

    def _wta_maxpool(self, name, node, cur, state):
        """``wta`` mode: each window latches onto its first input to fire and passes only that input's spikes."""
        winner = state.get(name)
        outs = []
        for t in range(cur.shape[0]):
            x = cur[t]
            m, idx = F.max_pool2d(x, node.kernel_size, node.stride, node.padding, node.dilation, node.ceil_mode,
                                  return_indices=True)
            if winner is None:
                winner = torch.full_like(idx, -1)
            winner = torch.where((winner < 0) & (m > 0), idx, winner)
            outs.append(_window_pick(x, winner.clamp(min=0)) * (winner >= 0))
        state[name] = winner
        return torch.stack(outs)

    # -- statistics ------------------------------------------------------------------------------
    def _count_synops(self, name, node, inp, t0, tc, B, events=None):
        x, static = inp
        if static:  # analog input: dense MACs every timestep (the hardware recomputes them)
            m = self.stats.macs.setdefault(name, torch.zeros(self.T, dtype=torch.float64))
            if name not in self._macs:
                self._macs[name] = self._dense_ops(node, x.shape)
            m[t0:t0 + tc] += self._macs[name] * B
            return
        fan = self._fanout_map(name, node, x.shape[1:])
        src = x if events is None else events
        if src.dim() == 4 and not src.is_contiguous() and src.is_contiguous(memory_format=torch.channels_last):
            # channels-last: read it as [N, H, W, C] (a view) against the fan-out map in that order
            key = name + "@cl"
            if key not in self._fanout:
                self._fanout[key] = fan.view(x.shape[1:]).permute(1, 2, 0).reshape(-1).contiguous()
            fan, src = self._fanout[key], src.permute(0, 2, 3, 1)
        src = src.reshape(tc * B, -1)
        events = src.ne(0).to(fan.dtype) if events is None else src
        s = self.stats.synops.setdefault(name, torch.zeros(self.T, dtype=torch.float64))
        s[t0:t0 + tc] += torch.mv(events, fan).view(tc, B).sum(1).cpu()

    def _fanout_map(self, name, node, in_shape) -> torch.Tensor:
        """Outgoing synapse count of every input element (exact, from the weight pattern)."""
        if name not in self._fanout:
            x = torch.ones(1, *in_shape, device=self.device, requires_grad=True)
            with torch.enable_grad():
                if node.kind in ("conv2d", "linear", "conv_transpose2d"):
                    pattern = node.replace(weight=(node.weight != 0).float(), bias=None)
                    y = KERNELS[node.kind](pattern, [x])
                elif node.kind == "avgpool2d":
                    k = node.kernel_size
                    y = KERNELS[node.kind](node, [x]) * (k[0] * k[1])
                else:  # adaptive average pooling: each input feeds exactly one output window here
                    y = x
                (grad,) = torch.autograd.grad(y.sum(), x)
            self._fanout[name] = grad.flatten().detach().round()
        return self._fanout[name]

    @staticmethod
    def _dense_ops(node, in_shape) -> float:
        if node.kind == "conv2d":
            w = node.weight
            out = F.conv2d(torch.zeros(1, *in_shape[1:], device=w.device), w, None, node.stride, node.padding,
                           node.dilation, node.groups)
            return float(out[0].numel() * w[0].numel())
        if node.kind == "conv_transpose2d":  # every input element feeds C_out/groups * kH * kW outputs
            return float(torch.Size(in_shape[1:]).numel() * node.weight[0].numel())
        if node.kind == "linear":  # once per token for [B, S, D] inputs
            return float(node.weight.numel() * torch.Size(in_shape[1:-1]).numel())
        return float(torch.Size(in_shape[1:]).numel())

    def _layer_error(self, x, sums):
        """Relative L2 error between each neuron's mean SNN output and its ANN-mode activation."""
        ann: dict[str, torch.Tensor] = {}
        run_ann(self.graph, x, record=lambda n, t: ann.__setitem__(n, t) if n in sums else None)
        for name, s in sums.items():
            rate = s / self.T
            ref = ann[name]
            err = float((rate - ref).norm() / ref.norm().clamp_min(1e-12))
            self.stats.layer_error[name] = self.stats.layer_error.get(name, 0.0) + err
        self.stats.error_batches += 1


def _window_pick(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` at the flat per-channel positions ``idx`` ``[B, C, Ho, Wo]`` (max-pool indices)."""
    return x.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
