"""Plot the neuron models against theory: (a) LIF f-I curve, simulated vs analytic; (b) IF rate vs
input (subtractive reset, with and without a refractory period); (c) membrane traces of the four
Izhikevich presets; (d) Hodgkin-Huxley traces above and below threshold.

    python scripts/plot_neuron_theory.py [--out docs/neuron_theory.png]

CPU only, about a minute. The same comparisons are asserted in tests/test_neuron_theory.py.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from snnconv.ir import HodgkinHuxley, Izhikevich, SpikingNeuron  # noqa: E402
from snnconv.runtime.neurons import NEURON_DYNAMICS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run(node, current, state=None):
    return NEURON_DYNAMICS[node.kind](node, current, state)


def trace(node, current: torch.Tensor, record):
    """Step ``node`` through ``current`` ``[T, 1, N]`` one step at a time; returns ``record(state)``
    per step ``[T, N]`` and the spike counts ``[T, N]``."""
    state, values, counts = None, [], []
    for t in range(current.shape[0]):
        _, c, state = run(node, current[t:t + 1], state)
        values.append(record(state).reshape(-1))
        counts.append(c.reshape(-1))
    return torch.stack(values), torch.stack(counts)


def lif_fi(ax):
    tau, dt, v_th, ref = 10.0, 0.1, 1.0, 20  # ms, ms, -, steps (2 ms)
    beta = math.exp(-dt / tau)
    ri = torch.linspace(0.0, 5.0, 101)
    node = SpikingNeuron(torch.tensor(v_th), model="lif", leak=beta, reset="zero", refractory=ref)
    T = 5000  # 500 ms
    _, counts, _ = run(node, ((1 - beta) * ri).view(1, 1, -1).expand(T, 1, -1).contiguous())
    sim = []
    for j in range(len(ri)):
        times = torch.nonzero(counts[:, 0, j]).flatten().double() * dt
        sim.append(1000.0 / times.diff().mean().item() if len(times) > 2 else 0.0)
    fine = torch.linspace(0.0, 5.0, 1001)
    theory = [1000.0 / (ref * dt + tau * math.log(x / (x - v_th))) if x > v_th else 0.0 for x in fine.tolist()]
    ax.plot(fine, theory, "k-", lw=1.2, label=r"analytic $1/(t_\mathrm{ref} + \tau\ln\frac{RI}{RI-V_\mathrm{th}})$")
    ax.plot(ri, sim, "o", ms=3, color="tab:red", label=r"simulated ($\Delta t$ = 0.1 ms)")
    ax.set(xlabel=r"$RI / V_\mathrm{th}$", ylabel="rate (Hz)",
           title=r"(a) LIF f-I curve ($\tau$ = 10 ms, $t_\mathrm{ref}$ = 2 ms)")
    ax.legend(fontsize=8, loc="lower right")


def if_rate(ax):
    theta, T = 1.0, 1000
    x = torch.linspace(0.0, 1.3, 66)
    cur = x.view(1, 1, -1).expand(T, 1, -1).contiguous()
    for r, color in ((0, "tab:blue"), (2, "tab:green")):
        _, counts, _ = run(SpikingNeuron(torch.tensor(theta), refractory=r), cur)
        rho = torch.clamp(x / theta, 0, 1)
        ax.plot(x, rho / (1 + r * rho), "-", color=color, lw=1.2,
                label=r"$\min(x/\theta, 1)$" if r == 0 else r"$\rho/(1 + r\rho)$, $r$ = 2")
        ax.plot(x, counts.sum(0)[0] / T, "o", ms=3, color=color, mfc="none",
                label=f"simulated, refractory = {r}")
    ax.set(xlabel=r"input per step $x$ ($\theta$ = 1)", ylabel="spikes per step",
           title="(b) IF rate vs input (subtractive reset, T = 1000)")
    ax.legend(fontsize=8, loc="upper left")


def izhikevich(axes):
    T = 300  # ms (1 ms per simulator step)
    cur = torch.full((T, 1, 1), 10.0)
    cur[:20] = 0.0
    for ax, name in zip(axes, ("regular_spiking", "fast_spiking", "chattering", "intrinsically_bursting")):
        node = Izhikevich.preset(name)
        v, c = trace(node, cur, lambda s: s[0])
        v = torch.where(c > 0, torch.full_like(v, node.v_peak), v)[:, 0]  # draw spikes at the peak
        ax.plot(torch.arange(T), v, lw=0.8, color="tab:purple")
        ax.set(title=f"{name.replace('_', ' ')}\n(a={node.a}, b={node.b}, c={node.c:g}, d={node.d:g})",
               xlabel="t (ms)", ylim=(-90, 40))
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("v (mV)")


def hodgkin_huxley(ax):
    node = HodgkinHuxley(dt=0.025, substeps=4)  # 0.1 ms per simulator step, RK4
    T = 1200  # 120 ms
    amps = [2.0, 5.0, 10.0]
    cur = torch.tensor(amps).view(1, 1, -1).repeat(T, 1, 1)
    cur[:100] = 0.0  # step on at 10 ms
    v, c = trace(node, cur, lambda s: s[0])
    t = torch.arange(T) * 0.1
    labels = {2.0: "2 (below threshold: no spike)", 5.0: "5 (one onset spike)", 10.0: "10 (repetitive)"}
    for j, (a, color) in enumerate(zip(amps, ("tab:gray", "tab:orange", "tab:blue"))):
        ax.plot(t, v[:, j], lw=1.0, color=color, label=rf"I = {labels[a]} $\mu$A/cm$^2$, spikes: {int(c[:, j].sum())}")
    ax.axhline(0.0, color="k", lw=0.5, ls=":")
    ax.set(xlabel="t (ms)", ylabel="V (mV)",
           title="(d) Hodgkin-Huxley, current step at t = 10 ms (RK4, dt = 0.025 ms); spike = upward crossing of 0 mV")
    ax.legend(fontsize=8, loc="upper right")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "neuron_theory.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    fig = plt.figure(figsize=(13, 12), layout="constrained")
    top, mid, bottom = fig.subfigures(3, 1, height_ratios=[1.1, 0.9, 1.0])
    ax_a, ax_b = top.subplots(1, 2)
    lif_fi(ax_a)
    if_rate(ax_b)
    izhikevich(mid.subplots(1, 4, sharey=True))
    mid.suptitle("(c) Izhikevich presets, I = 10 from t = 20 ms (forward Euler, dt = 0.5 ms, 1 ms per step)")
    hodgkin_huxley(bottom.subplots())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
