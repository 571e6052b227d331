"""Error-diffusion (ED) learning with excitatory/inhibitory pairs (Kaneko, 1999), in the
formulation of Fujita ("A basic evaluation of neural networks trained with the error diffusion
learning algorithm", arXiv:2504.14814, 2025) and the ED-SNN implementations that followed it.

What is implemented, precisely:

* Every unit ``i`` has a type ``τ_i = +1`` (excitatory, E) or ``-1`` (inhibitory, I). Each
  input value is fed to an E *and* an I input unit (the E/I pair); hidden layers alternate
  E, I, E, I, ...; the output unit is excitatory. A bias pair (value 1) feeds every layer.
* Sign constraints (the ED form of Dale's principle): every synapse keeps the sign
  ``sign(w_ij) = τ_i τ_j`` given at initialisation: E units excite E targets and inhibit I
  targets, I units inhibit E targets and excite I targets. Along any path, E units therefore
  raise the output and I units lower it.
* Activation ``f(u) = 1 / (1 + exp(-2u / u0))`` (Kaneko's sigmoid), ``f'`` taken as
  ``f (1 - f)``.
* The output error ``e = t - y`` is split into two non-negative "amine" signals
  ``δ+ = max(e, 0)`` (output should rise) and ``δ- = max(-e, 0)`` (output should fall), which
  are broadcast unchanged to every layer (no backpropagation through weights). Update, for
  every layer::

      Δw_ij = η · a_j · f'(u_i) · τ_i τ_j · (δ+ if τ_j = +1 else δ-)

  Since ``sign(Δw_ij) = τ_i τ_j = sign(w_ij)``, weights only grow in magnitude and never
  change sign; growing a synapse from an E unit raises the output, from an I unit lowers it.
* Several outputs use one independent network each (Kaneko's multi-output arrangement).

For a spiking readout (:class:`EDReadout`) the activity ``a_j`` is the presynaptic neuron's
mean output over the presentation window (firing rate × spike amplitude, i.e. exactly what the
readout integrates), the output is the readout's linear integrator (``f' = 1``) and the error
is ``onehot(label) - softmax(z)``. With one layer this is the sign-split, sign-constrained delta
rule that ED reduces to; each signed readout weight ``w`` is split into an E synapse
``max(w, 0)`` and an I synapse ``min(w, 0)`` from the E and I copies of the presynaptic neuron.
"""
from __future__ import annotations

import torch


def ed_delta(a: torch.Tensor, fprime: torch.Tensor, err: torch.Tensor, pre_type: torch.Tensor,
             post_type: torch.Tensor, lr: float) -> torch.Tensor:
    """ED weight change ``[N_post, N_pre]`` for activities ``a`` ``[B, N_pre]``, ``f'(u)`` ``[B, N_post]``
    and the output error ``err`` ``[B]`` (diffused to every post unit): see the module docstring."""
    up, down = err.clamp_min(0).view(-1, 1), (-err).clamp_min(0).view(-1, 1)
    e_pre = pre_type > 0
    amine = torch.where(e_pre.view(1, -1), up, down)  # [B, N_pre]: δ+ for E pre units, δ- for I pre units
    sign = post_type.view(-1, 1) * pre_type.view(1, -1)
    return lr * sign * torch.einsum("bi,bj->ij", fprime, a * amine)


class EDNetwork:
    """Kaneko's ED network: one independent E/I network per output, sigmoid units, trained online."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (8,), outputs: int = 1, lr: float = 0.5,
                 u0: float = 0.4, init_scale: float = 1.0, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.lr, self.u0, self.outputs = lr, u0, outputs
        sizes = [2 * in_features + 2] + [2 * h for h in hidden] + [1]
        self.types = []  # τ per layer's units (input layer includes the bias pair at the end)
        for k, n in enumerate(sizes):
            if k == len(sizes) - 1:
                self.types.append(torch.ones(1))
            elif k == 0:
                self.types.append(torch.cat([torch.ones(in_features), -torch.ones(in_features), torch.tensor([1.0, -1.0])]))
            else:
                self.types.append(torch.tensor([1.0, -1.0]).repeat(n // 2))
        self.weights = []  # per layer [outputs, N_out, N_in (+2 bias units for hidden inputs)]
        for k in range(1, len(sizes)):
            pre_t = self.types[k - 1] if k == 1 else torch.cat([self.types[k - 1], torch.tensor([1.0, -1.0])])
            sign = self.types[k].view(-1, 1) * pre_t.view(1, -1)
            mag = torch.rand(outputs, len(self.types[k]), len(pre_t), generator=gen) * init_scale
            self.weights.append(mag * sign)
        self.signs = [torch.sign(w) for w in self.weights]

    def _f(self, u):
        return torch.sigmoid(2.0 * u / self.u0)

    def _pre(self, k, a):  # inputs of layer k (hidden layers get a bias pair)
        return a if k == 0 else torch.cat([a, torch.ones(*a.shape[:-1], 2)], -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs ``[B, outputs]`` and the per-layer activities ``[outputs, B, N]`` (inputs included)."""
        B = x.shape[0]
        a = torch.cat([x, x, torch.ones(B, 2)], 1).unsqueeze(0).expand(self.outputs, B, -1)
        acts = [a]
        for k, w in enumerate(self.weights):
            a = self._f(torch.einsum("oij,obj->obi", w, self._pre(k, a)))
            acts.append(a)
        return a[..., 0].T, acts

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    def learn(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One online ED update on a batch (contributions summed); returns the squared error before it."""
        y, acts = self.forward(x)
        err = target.view_as(y) - y  # [B, outputs]
        for k, w in enumerate(self.weights):
            pre_t = self.types[k] if k == 0 else torch.cat([self.types[k], torch.tensor([1.0, -1.0])])
            pre = self._pre(k, acts[k])
            post = acts[k + 1]
            for o in range(self.outputs):
                w[o] += ed_delta(pre[o], post[o] * (1 - post[o]), err[:, o], pre_t, self.types[k + 1], self.lr)
        return (err ** 2).mean()


def ei_split(weight: torch.Tensor, bias: torch.Tensor | None):
    """Signed weights and bias as E (>= 0) and I (<= 0) sub-synapse pairs (copies):
    ``(w_e, w_i, b_e, b_i)`` with ``w_e + w_i == weight``; a missing bias is a zero pair."""
    b = torch.zeros(weight.shape[0]) if bias is None else bias
    return weight.clamp_min(0).clone(), weight.clamp_max(0).clone(), b.clamp_min(0).clone(), b.clamp_max(0).clone()


class EDReadout:
    """ED on a spiking network's linear readout: signed weights split into E (>= 0) and I (<= 0)
    synapses from the E and I copies of each presynaptic neuron (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, lr: float = 0.01):
        self.w_e, self.w_i, self.b_e, self.b_i = ei_split(weight, bias)
        self.lr = lr

    @property
    def weight(self) -> torch.Tensor:
        return self.w_e + self.w_i

    @property
    def bias(self) -> torch.Tensor:
        return self.b_e + self.b_i

    def logits(self, rates: torch.Tensor) -> torch.Tensor:
        return rates @ self.weight.T + self.bias

    def update(self, rates: torch.Tensor, labels: torch.Tensor) -> None:
        """ED step for readout inputs ``rates`` ``[B, N]`` (mean presynaptic output) and ``labels`` ``[B]``."""
        z = self.logits(rates)
        err = torch.nn.functional.one_hot(labels, z.shape[1]).to(z.dtype) - z.softmax(1)  # [B, K]
        up, down = err.clamp_min(0), (-err).clamp_min(0)
        self.w_e += self.lr * up.T @ rates  # E pre, E output: τ_i τ_j = +1, amine δ+
        self.w_i -= self.lr * down.T @ rates  # I pre, E output: τ_i τ_j = -1, amine δ-
        self.b_e += self.lr * up.sum(0)
        self.b_i -= self.lr * down.sum(0)
