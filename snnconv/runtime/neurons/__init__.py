"""Neuron dynamics run by the simulator.

``NEURON_DYNAMICS`` maps an IR neuron node kind to ``fn(node, current, state) -> (output, counts, state)``:
``current`` is ``[T, B, ...]`` for one time chunk, ``state`` is whatever the function returned for
the previous chunk (None on the first; opaque to the simulator), ``output`` is what downstream
layers receive and ``counts`` the spike events per step (used for firing-rate and SynOps
statistics). Every model's equations, discretisation and time step are in its IR node's docstring.
"""
from snnconv.runtime.neurons.adaptive_lif import run_adaptive_lif
from snnconv.runtime.neurons.cuba_lif import run_cuba_lif
from snnconv.runtime.neurons.function_neuron import run_function_neuron
from snnconv.runtime.neurons.hodgkin_huxley import run_hodgkin_huxley
from snnconv.runtime.neurons.integrate_fire import run_spiking_neuron
from snnconv.runtime.neurons.izhikevich import run_izhikevich
from snnconv.runtime.neurons.signed_if import run_signed_neuron

NEURON_DYNAMICS = {
    "neuron": run_spiking_neuron,
    "adaptive_lif": run_adaptive_lif,
    "cuba_lif": run_cuba_lif,
    "izhikevich": run_izhikevich,
    "hodgkin_huxley": run_hodgkin_huxley,
    "signed_neuron": run_signed_neuron,
    "function_neuron": run_function_neuron,
}
