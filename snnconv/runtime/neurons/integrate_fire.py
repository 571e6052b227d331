"""Multi-step integrate-and-fire dynamics (IF, LIF, multi-threshold, signed), fused over a time chunk.

Implements the update of the six integrate-and-fire models of :mod:`snnconv.ir.neurons` (IF, LIF and
their graded and signed forms; the equations are in their docstrings), which share the IR kind
``"neuron"``. The loop over
time is the only sequential part of the simulator; everything inside one step is a handful of
in-place tensor ops so no per-step temporaries are kept. A refractory period needs a per-neuron
step counter and runs in :func:`integrate_fire_refractory`; without one the fast path
:func:`integrate_fire` is used.
"""
from __future__ import annotations

import torch


def threshold_view(threshold: torch.Tensor, sample_dims: int) -> torch.Tensor:
    """Broadcast a scalar or per-channel ``[C]`` threshold over ``[B, C, ...]`` tensors."""
    if threshold.numel() == 1:
        return threshold.reshape(())
    return threshold.view((-1,) + (1,) * (sample_dims - 1))


@torch.no_grad()
def integrate_fire(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, leak: float = 1.0,
                   reset: str = "subtract", levels: int = 1,
                   v_reset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``T`` steps on ``current`` ``[T, B, ...]`` from membrane ``v`` ``[B, ...]``.

    Returns ``(output, counts, v)``: the output spikes with amplitude ``theta`` ``[T, B, ...]``,
    the integer spike counts per step (graded: 0..levels) and the final membrane potential.
    ``reset="zero"`` sets the membrane to ``v_reset`` after a spike.
    """
    th = threshold_view(threshold, v.dim() - 1)
    counts = torch.empty_like(current)
    for t in range(current.shape[0]):
        if leak != 1.0:
            v.mul_(leak)
        v.add_(current[t])
        s = counts[t]
        if levels == 1:
            torch.ge(v, th, out=s)
        else:
            torch.div(v, th, out=s).floor_().clamp_(0, levels)
        if reset == "subtract":
            v.addcmul_(s, th, value=-1)  # v -= s * theta without a temporary
        else:
            v.masked_fill_(s > 0, v_reset)
    return counts * th, counts, v


@torch.no_grad()
def integrate_fire_refractory(current: torch.Tensor, v: torch.Tensor, ref: torch.Tensor, threshold: torch.Tensor,
                              leak: float = 1.0, reset: str = "subtract", levels: int = 1, v_reset: float = 0.0,
                              refractory: int = 0):
    """:func:`integrate_fire` with a refractory period of ``refractory`` steps.

    ``ref`` ``[B, ...]`` counts the refractory steps each neuron still has to sit out; while it is
    positive the neuron neither leaks nor integrates nor fires. Returns ``(output, counts, v, ref)``.
    """
    th = threshold_view(threshold, v.dim() - 1)
    counts = torch.empty_like(current)
    for t in range(current.shape[0]):
        active = ref == 0
        v = torch.where(active, v * leak + current[t], v)
        s = counts[t]
        if levels == 1:
            torch.ge(v, th, out=s)
        else:
            torch.div(v, th, out=s).floor_().clamp_(0, levels)
        s.mul_(active)
        fired = s > 0
        if reset == "subtract":
            v = v - s * th
        else:
            v = v.masked_fill(fired, v_reset)
        ref = torch.where(fired, torch.full_like(ref, refractory), (ref - 1).clamp_(min=0))
    return counts * th, counts, v, ref


@torch.no_grad()
def integrate_fire_ext(current: torch.Tensor, state: dict, threshold: torch.Tensor, leak: float = 1.0,
                       reset: str = "subtract", levels: int = 1, v_reset: float = 0.0, signed: bool = False,
                       presim: int = 0, v_start: torch.Tensor | None = None):
    """:func:`integrate_fire` with signed spikes and/or the SRP pre-run (equations in
    :class:`snnconv.ir.SpikingNeuron`). ``state`` holds ``v``, the net spike count ``n``, the step
    counter ``t`` and the SRP output mask (None until the pre-run ends); ``v_start`` is the
    membrane the neurons restart from after the pre-run. Returns ``(output, counts, state)``.
    """
    th = threshold_view(threshold, current.dim() - 2)
    v, n, t, mask = state["v"], state["n"], state["t"], state["mask"]
    counts = torch.empty_like(current)
    for i in range(current.shape[0]):
        if leak != 1.0:
            v.mul_(leak)
        v.add_(current[i])
        if levels == 1:
            s = torch.ge(v, th).to(v.dtype)
        else:
            s = torch.div(v, th).floor_().clamp_(0, levels)
        if signed:  # negative spikes only while the net count is positive
            neg = torch.maximum(torch.div(v, th).floor_(), -n.clamp(max=levels))
            s = torch.where(v < 0, neg, s)
            n.add_(s)
        if reset == "subtract":
            v.sub_(s * th)
        else:
            v.masked_fill_(s != 0, v_reset)
        counts[i] = s if mask is None else s * mask
        t += 1
        if presim and t == presim:  # SRP: silence neurons without residual potential, restart membranes
            mask = (v > 1e-3 * th).to(v.dtype)
            v.copy_(v_start.expand_as(v))
            n.zero_()
    state.update(v=v, n=n, t=t, mask=mask)
    return counts * th, counts, state


def run_spiking_neuron(node, current: torch.Tensor, state):
    """Simulator entry for :class:`snnconv.ir.SpikingNeuron`: ``(output, counts, state)`` over a chunk.

    ``state`` is None on the first chunk; the membrane then starts at ``v_init * theta``. Without a
    refractory period the state is the membrane tensor ``v``; with one it is ``(v, ref)``, ``ref``
    being the remaining refractory steps per neuron.
    """
    refractory = node.refractory
    extended = getattr(node, "signed", False) or getattr(node, "presim", 0)
    if state is None:
        v = torch.zeros_like(current[0])  # same memory format as the input (channels-last in the simulator)
        if node.v_init:
            v += node.v_init * threshold_view(node.threshold, v.dim() - 1)
        if getattr(node, "v_offset", None) is not None:  # potential calibration
            off = node.v_offset
            v += off.view(-1, *([1] * (v.dim() - 2))) if off.dim() == 1 and v.dim() > 2 else off
        if extended:
            state = {"v": v, "n": torch.zeros_like(v), "t": 0, "mask": None, "v_start": v[:1].clone()}
        else:
            state = v if not refractory else (v, torch.zeros(current.shape[1:], dtype=torch.int32, device=v.device))
    if extended:
        return integrate_fire_ext(current, state, node.threshold, node.leak, node.reset, node.levels, node.v_reset,
                                  node.signed, node.presim, state["v_start"])
    if not refractory:
        return integrate_fire(current, state, node.threshold, node.leak, node.reset, node.levels, node.v_reset)
    out, counts, v, ref = integrate_fire_refractory(current, *state, node.threshold, node.leak, node.reset,
                                                    node.levels, node.v_reset, refractory)
    return out, counts, (v, ref)
