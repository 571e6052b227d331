r"""SRP: error compensation through the residual membrane potential (Hao et al., AAAI 2023).

Hao, Bu, Ding, Huang, Yu, "Reducing ANN-SNN Conversion Error through Residual Membrane
Potential", AAAI 2023. The largest part of the unevenness error of a converted (QCFS) SNN at
small T is neurons whose ANN activation is zero but which fire in the SNN. After running the
network for ``tau`` steps, such a neuron is recognised by its residual membrane potential not
being above zero; SRP silences those neurons, restarts every membrane at ``v_init`` and runs the
network again for T steps, counting only these T steps in the readout. The latency is therefore
``tau + T`` steps and the energy includes the pre-run; benchmarks report both.

This pass sets ``presim = tau`` on every IF neuron (dynamics in :class:`snnconv.ir.SpikingNeuron`);
:func:`simulate_srp` runs such a graph and scores the readout over steps ``tau+1 .. tau+t``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.passes.contracts import HAS_NEURONS
from snnconv.passes.base import Pass, PassContext, register_pass, simulator_for


@register_pass
class ResidualMembranePotential(Pass):
    name = "srp"
    requires = (HAS_NEURONS,)

    @dataclass
    class Config:
        presim: int = 4  # tau: steps of the pre-run

        def validate(self, where: str) -> None:
            if not isinstance(self.presim, int) or self.presim < 1:
                raise SnnconvError(f"{where}: presim must be a positive integer")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        done = []
        for name, node in list(graph.nodes.items()):
            if node.kind == "neuron" and not node.refractory:
                graph.replace(name, node.replace(presim=self.config.presim))
                done.append(name)
        ctx.log(self.name, f"SRP pre-run of {self.config.presim} steps on {len(done)} neuron layer(s)", layers=done)
        return graph


def presim_steps(graph: Graph) -> int:
    """The SRP pre-run length of a graph (0 without SRP); all neurons must agree."""
    taus = {getattr(n, "presim", 0) for n in graph.nodes.values() if n.kind == "neuron"}
    if len(taus) > 1:
        raise SnnconvError(f"neurons disagree on the SRP pre-run length: {sorted(taus)}")
    return taus.pop() if taus else 0


@torch.no_grad()
def simulate_srp(graph: Graph, split, timesteps: int, batch_size: int = 128, chunk: int = 8, simulator=None):
    """Simulate ``tau + timesteps`` steps; returns ``(accuracy[t-1] for t <= timesteps, stats)``,
    the accuracy scored on the readout accumulated over steps ``tau+1 .. tau+t`` only. ``stats``
    (firing, SynOps, energy) covers all ``tau + timesteps`` steps."""
    from snnconv.progress import progress

    tau = presim_steps(graph)
    sim = simulator_for(simulator)(graph, tau + timesteps, chunk=chunk)
    correct = torch.zeros(timesteps)
    n = 0
    for x, y in progress(split.batches(batch_size), total=-(-len(split) // batch_size), desc=f"SNN SRP {tau}+{timesteps}"):
        logits = sim.run(x)  # running means over steps 1..s
        steps = torch.arange(1, tau + timesteps + 1, dtype=logits.dtype).view(-1, 1, 1)
        csum = logits * steps
        window = csum[tau:] - (csum[tau - 1] if tau else 0)
        correct += (window.argmax(-1) == y.view(1, -1)).sum(1).float()
        n += len(y)
    return (100.0 * correct / max(n, 1)).tolist(), sim.stats
