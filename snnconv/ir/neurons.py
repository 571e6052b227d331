r"""Integrate-and-fire conversion neurons: one small dataclass per model, like NIR's primitives.

A converted layer's neuron is one of six models, the product of a membrane model and a spike code:

=================  ======================  ==============================  =============================
                   binary spikes           graded spikes (multi-level)     signed spikes
=================  ======================  ==============================  =============================
IF (no leak)       :class:`IFNeuron`       :class:`MultiLevelIFNeuron`     :class:`SignedIFNeuron`
LIF (leak beta)    :class:`LIFNeuron`      :class:`MultiLevelLIFNeuron`    :class:`SignedLIFNeuron`
=================  ======================  ==============================  =============================

Each class carries only the parameters its model has (``leak`` on the LIF models, ``levels`` on the
graded and signed ones) and states its equations. They share the IR kind ``"neuron"``, one
simulator kernel (:mod:`snnconv.runtime.neurons.integrate_fire`) and what :class:`SpikingNeuron`
documents below. ``SpikingNeuron(threshold, model=..., leak=..., levels=..., signed=...)`` builds the
class those parameters name, and ``node.replace(signed=True)`` (say) returns the model it becomes,
so passes move a neuron between models without knowing the classes.

Not to be confused with :class:`snnconv.ir.transformer.SignedNeuron` (kind ``"signed_neuron"``): a
*bipolar* neuron whose rate follows its input of either sign (the identity, for spiking
transformers), whereas the signed neurons here follow a ReLU and only send negative spikes to take
back earlier positive ones.

**Shared by every model.** Threshold :math:`\theta` (scalar, or one per channel along dim 1);
``v_init`` is the initial membrane as a fraction of :math:`\theta`, plus ``v_offset`` (absolute,
shaped like one sample's output or ``[C]``; potential calibration, :mod:`snnconv.passes.calibration`).

*Reset.* ``"subtract"``: :math:`v_t \leftarrow v_t - \theta s_t` (keeps the residue, so the firing
rate tracks :math:`\mathrm{clip}(I, 0, \theta)/\theta`; Rueckauer et al. 2017, Han et al. 2020).
``"zero"``: reset *to* ``v_reset`` (default 0, hence the name) after a spike; ``v_reset`` is an
absolute membrane value and is only used by ``reset="zero"``.

*Refractory period.* ``refractory = r`` steps: after a spike at step t the neuron ignores its
input for steps :math:`t+1, \dots, t+r` and its membrane is held at the post-reset value (no leak,
no integration); the rate is at most :math:`1/(r+1)` spikes per step.

*Residual-membrane-potential pre-run* (``presim = tau > 0``; Hao et al., AAAI 2023, SRP): after the
first ``tau`` steps a neuron whose membrane is not above zero (:math:`v \le 10^{-3}\theta`) is
silenced for the rest of the run, and every membrane restarts at ``v_init``; the readout then only
counts steps after the pre-run (see :mod:`snnconv.passes.srp`).

*Output.* The output carries the amplitude :math:`\theta` (:math:`o_t = \theta s_t`) so downstream
weights stay those of the ANN; exporters fold it into the next layer.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from snnconv.ir.node import Node, register_node

RESET_MODES = ("subtract", "zero")
#: membrane models of the integrate-and-fire family (the spike codes: binary, graded, signed)
MODELS = ("if", "lif")


class _ModelFromParameters(type):
    """``SpikingNeuron(...)`` builds the model class its parameters name (see :func:`neuron_class`)."""

    def __call__(cls, *args, **kwargs):
        if cls is not SpikingNeuron:
            return super().__call__(*args, **kwargs)
        model, leak = kwargs.pop("model", "if"), kwargs.pop("leak", 1.0)
        levels, signed = kwargs.pop("levels", 1), kwargs.pop("signed", False)
        target = neuron_class(model, leak, levels, signed)
        own = {f.name for f in dataclasses.fields(target)}
        kwargs.update({k: v for k, v in (("leak", leak), ("levels", levels)) if k in own})
        return target(*args, **kwargs)


def neuron_class(model: str = "if", leak: float = 1.0, levels: int = 1, signed: bool = False) -> type:
    """The class of the neuron with these parameters; a one-line ``ValueError`` for a combination that is none."""
    if model not in MODELS:
        raise ValueError(f"neuron model must be one of {', '.join(repr(m) for m in MODELS)}, got {model!r}")
    if not 0.0 < leak <= 1.0:
        raise ValueError("leak must be in (0, 1]")
    if model == "if" and leak != 1.0:
        raise ValueError(f"leak={leak}: only the 'lif' model leaks (an IF neuron has leak 1)")
    if isinstance(levels, bool) or levels < 1 or int(levels) != levels:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    code = "signed" if signed else "graded" if levels > 1 else "binary"
    return NEURON_MODELS[(model, code)]


@register_node
@dataclasses.dataclass(eq=False)
class SpikingNeuron(Node, metaclass=_ModelFromParameters):
    """What every integrate-and-fire conversion neuron has (module docstring); the models are its subclasses."""

    kind = "neuron"
    spiking = True
    threshold: torch.Tensor  # scalar (per layer) or [C] (per channel, dim 1)
    reset: str = "subtract"
    v_init: float = 0.0  # fraction of theta
    v_reset: float = 0.0  # absolute reset-to value, used by reset="zero"
    refractory: int = 0  # steps the neuron ignores input after a spike
    presim: int = 0  # SRP pre-run steps (0: off)
    v_offset: torch.Tensor | None = None  # absolute initial-membrane offset (potential calibration)

    model: ClassVar[str] = "if"  # membrane model: "if" or "lif"
    code: ClassVar[str] = "binary"  # spike code: "binary", "graded" or "signed"
    #: the model parameters; a model without one has it at the value that means "absent" (declared after the
    #: fields: a subclass that makes one a field then adds it after the fields without a default)
    leak: ClassVar[float] = 1.0
    levels: ClassVar[int] = 1
    signed: ClassVar[bool] = False
    MODEL_PARAMETERS: ClassVar[tuple] = ("model", "leak", "levels", "signed")

    def __post_init__(self):
        cls = neuron_class(self.model, self.leak, self.levels, self.signed)  # the model's own parameters are valid
        if cls is not type(self):
            raise ValueError(f"{type(self).__name__} with levels={self.levels}: these parameters are those of "
                             f"{cls.__name__} (build neurons with SpikingNeuron(...))")
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {self.reset!r}")
        if torch.any(self.threshold <= 0):
            raise ValueError("thresholds must be positive")
        if isinstance(self.refractory, bool) or not isinstance(self.refractory, int) or self.refractory < 0:
            raise ValueError(f"refractory must be a non-negative integer number of steps, got {self.refractory!r}")
        if self.v_reset != 0.0 and self.reset != "zero":
            raise ValueError("v_reset is only used with reset='zero'")
        if (self.signed or self.presim) and self.refractory:
            raise ValueError("signed spikes and the SRP pre-run are not supported with a refractory period")
        if isinstance(self.presim, bool) or not isinstance(self.presim, int) or self.presim < 0:
            raise ValueError(f"presim must be a non-negative integer number of steps, got {self.presim!r}")
        if torch.any(self.v_reset >= self.threshold):
            raise ValueError("v_reset must be below the threshold (else the neuron fires on every step)")

    @classmethod
    def field_names(cls) -> set[str]:
        return super().field_names() | set(cls.MODEL_PARAMETERS)

    def parameters(self) -> dict:
        """Every parameter, the model's (``model``, ``leak``, ``levels``, ``signed``) included."""
        out = {k: getattr(self, k) for k in self.MODEL_PARAMETERS}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return out

    def replace(self, **changes) -> "SpikingNeuron":
        """This neuron with ``changes``; the result is the model the new parameters name."""
        return SpikingNeuron(**{**self.parameters(), **changes})

    def attrs(self) -> dict:
        return {k: v for k, v in self.parameters().items() if k != "shape" and not isinstance(v, torch.Tensor)}

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters().items()}}

    def describe(self) -> str:
        th = self.threshold
        thr = f"{th.item():.4g}" if th.numel() == 1 else f"[{th.numel()} ch, mean {th.mean().item():.4g}]"
        extra = f" v_reset={self.v_reset}" if self.v_reset else ""
        extra += f" refractory={self.refractory}" if self.refractory else ""
        extra += " signed" if self.signed else ""
        extra += f" presim={self.presim}" if self.presim else ""
        extra += " v_offset" if self.v_offset is not None else ""
        return (f"{self.model.upper()} theta={thr} reset={self.reset} levels={self.levels} leak={self.leak} "
                f"v0={self.v_init}{extra}")


@dataclasses.dataclass(eq=False)
class IFNeuron(SpikingNeuron):
    r"""Integrate-and-fire neuron with binary spikes (Cao et al. 2015; Diehl et al. 2015; Rueckauer et al. 2017).

    .. math::
        v_t = v_{t-1} + I_t, \qquad s_t = [\, v_t \ge \theta \,] \in \{0, 1\}, \qquad o_t = \theta s_t

    then the reset. IF is a discrete-time model: exact for a step of one time bin.
    """


@dataclasses.dataclass(eq=False)
class LIFNeuron(SpikingNeuron):
    r"""Leaky integrate-and-fire neuron with binary spikes.

    .. math::
        v_t = \beta\, v_{t-1} + I_t, \qquad s_t = [\, v_t \ge \theta \,], \qquad o_t = \theta s_t

    with leak :math:`\beta` = ``leak`` in (0, 1], then the reset. This is the exact solution of
    :math:`\tau \dot v = -v + R\, i(t)` over one step :math:`\Delta t` for an input held constant over
    the step (zero-order hold): :math:`\beta = e^{-\Delta t/\tau}`, :math:`I_t = (1-\beta) R\, i_t`; the only
    discretisation error is that spike times are rounded up to the next step boundary.
    """

    model = "lif"
    leak: float = 1.0


@dataclasses.dataclass(eq=False)
class MultiLevelIFNeuron(SpikingNeuron):
    r"""Integrate-and-fire neuron with graded spikes: up to ``levels`` = L threshold units per step.

    .. math::
        v_t = v_{t-1} + I_t, \qquad s_t = \mathrm{clip}(\lfloor v_t/\theta \rfloor, 0, L), \qquad o_t = \theta s_t

    then the reset (by subtraction: :math:`v_t - \theta s_t`). :math:`v_t \ge \theta` is again the test for at
    least one spike. With ``v_init = 1/2`` and L = the ANN's quantization levels it equals the quantized
    ANN at T = 1 (scale-and-fire neurons, Wang et al. 2025; multi-threshold neurons, Wang et al. 2023).
    """

    code = "graded"
    levels: int = 2


@dataclasses.dataclass(eq=False)
class MultiLevelLIFNeuron(LIFNeuron, MultiLevelIFNeuron):
    r"""Leaky integrate-and-fire neuron with graded spikes (:class:`MultiLevelIFNeuron` with a leak).

    .. math::
        v_t = \beta\, v_{t-1} + I_t, \qquad s_t = \mathrm{clip}(\lfloor v_t/\theta \rfloor, 0, L), \qquad
        o_t = \theta s_t

    with leak :math:`\beta` = ``leak`` and L = ``levels``, then the reset.
    """

    model = "lif"
    code = "graded"
    leak: float = 1.0  # (re-declared: a parent's class-level default would hide the other parent's field)
    levels: int = 2


@dataclasses.dataclass(eq=False)
class SignedIFNeuron(SpikingNeuron):
    r"""Integrate-and-fire neuron with signed spikes (Wang et al., IJCAI 2022, "Signed Neuron with Memory";
    Hu et al., TPAMI 2023, "Fast-SNN").

    .. math::
        v_t = v_{t-1} + I_t, \qquad
        s_t = \begin{cases} \mathrm{clip}(\lfloor v_t/\theta \rfloor, 0, L) & v_t \ge 0 \
                             \max(\lfloor v_t/\theta \rfloor, -\min(n_{t-1}, L)) & v_t < 0 \end{cases},
        \qquad o_t = \theta s_t

    where :math:`n_{t-1}` is the net spike count so far and L = ``levels`` (1: ternary spikes), reset
    by subtraction (:math:`v_t - \theta s_t`: a negative spike adds :math:`\theta` back). A negative spike
    cancels one fired too early (over-firing), so the net count tracks the cumulative input and never
    goes below zero: the rate still approximates a ReLU.
    """

    code = "signed"
    signed = True
    levels: int = 1


@dataclasses.dataclass(eq=False)
class SignedLIFNeuron(LIFNeuron, SignedIFNeuron):
    r"""Leaky integrate-and-fire neuron with signed spikes (:class:`SignedIFNeuron` with a leak).

    .. math::
        v_t = \beta\, v_{t-1} + I_t, \qquad
        s_t = \begin{cases} \mathrm{clip}(\lfloor v_t/\theta \rfloor, 0, L) & v_t \ge 0 \\
                             \max(\lfloor v_t/\theta \rfloor, -\min(n_{t-1}, L)) & v_t < 0 \end{cases},
        \qquad o_t = \theta s_t

    with leak :math:`\beta` = ``leak``, net spike count :math:`n_{t-1}` and L = ``levels``, reset by subtraction.
    """

    model = "lif"
    code = "signed"
    leak: float = 1.0
    levels: int = 1


#: (membrane model, spike code) -> class
NEURON_MODELS: dict[tuple[str, str], type[SpikingNeuron]] = {
    (c.model, c.code): c for c in (IFNeuron, LIFNeuron, MultiLevelIFNeuron, MultiLevelLIFNeuron, SignedIFNeuron,
                                   SignedLIFNeuron)}
