"""Plasticity rules on spike tensors and online evolution of converted SNNs.

One rule per module: :mod:`~snnconv.learning.stdp` (pair / online-trace STDP with Gütig weight
dependence), :mod:`~snnconv.learning.triplet` (Pfister & Gerstner 2006),
:mod:`~snnconv.learning.rstdp` (reward-modulated STDP with eligibility traces),
:mod:`~snnconv.learning.ed` (Kaneko's error diffusion with E/I pairs),
:mod:`~snnconv.learning.diehl_cook` (Diehl & Cook 2015 unsupervised WTA network) and
:mod:`~snnconv.learning.evolve` (``snnconv evolve``). Spikes are ``[T, B, N]``, weights
``[N_post, N_pre]``. See ``docs/learning.md``.
"""
from snnconv.learning.ed import EDNetwork, EDReadout, ed_delta
from snnconv.learning.rstdp import RewardSTDP
from snnconv.learning.stdp import TraceSTDP, WeightDependence, pair_stdp_dw, stdp_window
from snnconv.learning.triplet import TripletSTDP

__all__ = ["EDNetwork", "EDReadout", "ed_delta", "RewardSTDP", "TraceSTDP", "WeightDependence", "pair_stdp_dw",
           "stdp_window", "TripletSTDP"]
