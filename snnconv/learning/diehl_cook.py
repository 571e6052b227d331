"""Unsupervised STDP digit learner of Diehl & Cook (Front. Comput. Neurosci. 2015), the
reference STDP network for MNIST, in a CPU-cheap vectorised form.

Network: 784 Poisson inputs (rate = pixel/255 × 63.75 Hz × intensity, dt = 1 ms) fully connected
to ``n`` excitatory LIF neurons; every excitatory spike inhibits all other excitatory neurons
(the excitatory→inhibitory→excitatory loop of the paper collapsed into direct lateral
inhibition of strength ``w_inh``, as in BindsNET's ``DiehlAndCook2015`` model), which makes the
layer a soft winner-take-all.

Excitatory neuron (current-based approximation of the paper's conductance synapses)::

    v ← v_rest + (v - v_rest) e^{-1/τ_m} + Σ_j w_ij s_j(t) - w_inh Σ_{k≠i} z_k(t-1)
    spike z_i when v ≥ v_thresh + θ_i (and not refractory, 5 ms); then v ← v_reset
    adaptive threshold (homeostasis): θ_i ← θ_i + θ+ at each spike (decay τ_θ = 10^7 ms ≈ none)

Learning (only while training), the paper's pre-and-post rule with traces ``x_pre``, ``x_post``
(τ = 20 ms, nearest-spike: set to 1 at a spike)::

    at a presynaptic spike:  Δw_ij = -η_pre  x_post,i
    at a postsynaptic spike: Δw_ij = +η_post x_pre,j

weights clipped to [0, w_max] and each neuron's incoming weights renormalised to sum 78.4 after
every image (the paper's normalisation). If the layer fires fewer than 5 spikes, the image is
presented again with the input rate raised by one unit of intensity (as in the paper).
Simplifications against the paper: the weight and threshold changes of one presentation are
summed and applied at its end (the sums of the rule above over the image; the within-image
feedback of the changes is dropped, which lets the updates be two matrix products), 1 ms steps, ``steps`` ms per image (paper: 350 ms at 0.5 ms)
with state reset between images instead of a 150 ms rest, current-based synapses, direct
lateral inhibition. Evaluation: each neuron is labelled with the class for which its mean
response on labelling images is highest; a test image is classified by the class whose
neurons have the highest mean spike count ("all activity" readout of the paper); learning and
threshold adaptation are off during labelling and testing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class DiehlCookConfig:
    n_neurons: int = 100
    steps: int = 250
    max_rate_hz: float = 63.75
    v_rest: float = -65.0
    v_reset: float = -60.0
    v_thresh: float = -52.0
    tau_m: float = 100.0
    refractory: int = 5
    w_inh: float = 17.5
    theta_plus: float = 0.05
    tau_theta: float = 1e7
    eta_pre: float = 1e-4
    eta_post: float = 1e-2
    tau_trace: float = 20.0
    w_max: float = 1.0
    norm: float = 78.4
    min_spikes: int = 5
    seed: int = 0


class DiehlCookNetwork:
    """Diehl & Cook (2015) two-layer WTA network with STDP (see the module docstring)."""

    def __init__(self, cfg: DiehlCookConfig | None = None, n_inputs: int = 784):
        self.cfg = c = cfg or DiehlCookConfig()
        self.gen = torch.Generator().manual_seed(c.seed)
        self.w = torch.rand(n_inputs, c.n_neurons, generator=self.gen) * 0.3  # [N_in, N_exc]
        self.theta = torch.zeros(c.n_neurons)
        self.labels: torch.Tensor | None = None

    def run(self, x01: torch.Tensor, learn: bool = False, intensity: float = 1.0) -> torch.Tensor:
        """Present images ``[B, 784]`` in [0, 1]; returns excitatory spike counts ``[B, n]``.
        With ``learn`` (B must be 1) the weights and thresholds adapt online."""
        c, B = self.cfg, x01.shape[0]
        if learn and B != 1:
            raise ValueError("learning presents one image at a time")
        p = (x01 * c.max_rate_hz * intensity / 1000.0).clamp(max=1.0)  # spike probability per 1 ms step
        decay, tdec = math.exp(-1.0 / c.tau_m), math.exp(-1.0 / c.tau_trace)
        v = torch.full((B, c.n_neurons), c.v_rest)
        refr = torch.zeros(B, c.n_neurons)
        z = torch.zeros(B, c.n_neurons)
        counts = torch.zeros(B, c.n_neurons)
        x_pre, x_post = torch.zeros(B, x01.shape[1]), torch.zeros(B, c.n_neurons)
        theta = self.theta
        spikes = torch.rand(c.steps, *p.shape, generator=self.gen) < p
        rec = []  # learning: (pre spikes, pre trace, post spikes, post trace before this step's spikes)
        for t in range(c.steps):
            s = spikes[t].to(v.dtype)
            inh = c.w_inh * (z.sum(1, keepdim=True) - z)
            v = c.v_rest + (v - c.v_rest) * decay + (s @ self.w - inh) * (refr <= 0)
            z = ((v >= c.v_thresh + theta) & (refr <= 0)).to(v.dtype)
            v = torch.where(z > 0, torch.full_like(v, c.v_reset), v)
            refr = torch.where(z > 0, torch.full_like(refr, c.refractory), refr - 1)
            counts += z
            if learn:
                x_pre = torch.where(s > 0, torch.ones_like(x_pre), x_pre * tdec)
                x_post = x_post * tdec
                rec.append((s[0], x_pre[0], z[0], x_post[0]))
                x_post = torch.where(z > 0, torch.ones_like(x_post), x_post)
        if learn:
            S, XP, Z, XQ = (torch.stack(r) for r in zip(*rec))  # [T, N]
            self.w += c.eta_post * XP.T @ Z - c.eta_pre * S.T @ XQ
            self.theta = (theta + c.theta_plus * counts[0]) * math.exp(-c.steps / c.tau_theta)
            self.w.clamp_(0, c.w_max)
            self.w *= c.norm / self.w.sum(0, keepdim=True).clamp_min(1e-12)
        return counts

    def train(self, images01: torch.Tensor, progress_fn=None) -> None:
        """One pass of unsupervised learning over ``images01`` ``[N, 784]``, one image at a time."""
        for i in range(images01.shape[0]):
            intensity = 1.0
            for _ in range(4):
                counts = self.run(images01[i:i + 1], learn=True, intensity=intensity)
                if counts.sum() >= self.cfg.min_spikes:
                    break
                intensity += 1.0
            if progress_fn:
                progress_fn(i)

    def responses(self, images01: torch.Tensor, batch: int = 250) -> torch.Tensor:
        return torch.cat([self.run(images01[i:i + batch]) for i in range(0, images01.shape[0], batch)])

    def assign_labels(self, images01: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
        """Label each neuron by the class with its highest mean response (no learning)."""
        r = self.responses(images01)
        mean = torch.stack([r[labels == k].mean(0) if (labels == k).any() else torch.zeros(r.shape[1])
                            for k in range(classes)])
        self.labels = mean.argmax(0)
        return self.labels

    def predict(self, images01: torch.Tensor, classes: int = 10) -> torch.Tensor:
        """Class with the highest mean spike count over its assigned neurons."""
        if self.labels is None:
            raise ValueError("assign_labels() first")
        r = self.responses(images01)
        votes = torch.stack([r[:, self.labels == k].mean(1) if (self.labels == k).any() else torch.zeros(len(r))
                             for k in range(classes)], 1)
        return votes.argmax(1)
