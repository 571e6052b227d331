"""The target plug-in interface and the NIR graph runner shared by every target (see the package doc)."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnconv.errors import SnnconvError

@dataclasses.dataclass
class NeuronSpec:
    """One NIR neuron node as snnconv means it (threshold in snnconv's ``v >= theta`` sense)."""

    name: str
    shape: tuple
    model: str  # "if" | "lif"
    theta: float  # fires when v >= theta
    leak: float = 1.0  # v <- leak * v + I
    gain: float = 1.0  # input current = gain * synaptic input (NIR's r * dt for IF)
    reset: str = "zero"  # "zero" | "subtract"
    v_reset: float = 0.0
    v_init: float = 0.0  # fraction of theta
    levels: int = 1
    signed: bool = False


def neuron_needs(reset: str, v_init: float, model: str, levels: int, signed: bool) -> set[str]:
    """What a target's neurons must provide (names of :attr:`Target.supports`) to run an IF/LIF neuron with these
    dynamics as written: its reset, a non-zero initial membrane, a leak, graded or signed spikes. Shared by
    :meth:`Target.check` (a NIR neuron) and ``snnconv.api.framework_fit`` (an IR graph)."""
    need = {reset}
    need.update(k for k, on in (("v_init", bool(v_init)), ("lif", model == "lif"), ("graded", levels > 1),
                                ("signed", bool(signed))) if on)
    return need


class Target:
    """A framework a converted SNN is delivered to. Subclasses build that framework's neuron module
    for a :class:`NeuronSpec` and say how to start and step it."""

    name = "target"
    package = ""  # the import name; its version is reported
    #: what the target's native neurons can do: subset of {"subtract", "zero", "v_init", "lif", "graded", "signed"}
    supports: frozenset = frozenset()
    #: how the target's fire test compares: ">=" exact for snnconv's test, or ">" (differs only at v == theta)
    fire_test = ">="

    def version(self) -> str:
        from importlib.metadata import version

        return version(self.package)

    def available(self) -> str | None:
        """None when the target imports, else why not (one line)."""
        try:
            importlib.import_module(self.package)
        except Exception as e:  # noqa: BLE001 - any import failure is reported, never hidden
            return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        return None

    def check(self, spec: NeuronSpec) -> None:
        """Refuse (one line) a neuron the target cannot run as written."""
        missing = sorted(neuron_needs(spec.reset, spec.v_init, spec.model, spec.levels, spec.signed) - set(self.supports))
        if missing:
            raise SnnconvError(f"{self.name}: neuron '{spec.name}' needs {', '.join(missing)}, which {self.name}'s "
                               f"neurons do not provide")

    def neuron(self, spec: NeuronSpec) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def begin(self, module: nn.Module, spec: NeuronSpec, batch: int) -> None:  # pragma: no cover - interface
        """Reset the module's state for a new run of ``batch`` samples, membrane at ``v_init * theta``."""
        raise NotImplementedError

    def step(self, module: nn.Module, spec: NeuronSpec, current: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """One step: input current ``[B, *shape]`` -> spikes ``[B, *shape]`` (counts for graded neurons)."""
        raise NotImplementedError


TARGETS: dict[str, Target] = {}


def register_target(cls):
    """Class decorator: register a :class:`Target` under its ``name``."""
    TARGETS[cls.name] = cls()
    return cls


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise SnnconvError(f"unknown target '{name}' (known: {', '.join(TARGETS)})")
    return TARGETS[name]


def uniform_value(a, what: str, node: str) -> float:
    """The single value of a NIR parameter array (shared with ``snnconv.backends.nir``'s import)."""
    u = np.unique(np.asarray(a, dtype=np.float64))
    if u.size != 1:
        raise SnnconvError(f"NIR node '{node}': non-uniform {what} is not supported")
    return float(u[0])


def neuron_spec(name: str, node, dt: float) -> NeuronSpec:
    """The :class:`NeuronSpec` of a NIR ``IF``/``LIF`` node (with snnconv-dynamics metadata if present)."""
    import nir

    thr = uniform_value(node.v_threshold, "v_threshold", name)
    theta = float(np.nextafter(np.float32(thr), np.float32(np.inf)))  # NIR's v > thr is v >= theta
    shape = tuple(np.asarray(node.v_threshold).shape)
    md = node.metadata if isinstance(node.metadata, dict) else {}
    r = uniform_value(node.r, "r", name)
    if isinstance(node, nir.IF):
        model, leak, gain = "if", 1.0, r * dt
    else:
        tau = uniform_value(node.tau, "tau", name)
        model, leak, gain = "lif", 1.0 - dt / tau, dt * r / tau
    return NeuronSpec(name=name, shape=shape, model=model, theta=theta, leak=leak, gain=gain,
                      reset=str(md.get("snnconv_reset", "zero")), v_reset=uniform_value(node.v_reset, "v_reset", name),
                      v_init=float(md.get("snnconv_v_init", 0.0)), levels=int(md.get("snnconv_levels", 1)),
                      signed=bool(md.get("snnconv_signed", False)))


def topological_order(graph, why: str) -> tuple[list[str], dict[str, list[str]]]:
    """``(order, preds)`` of a ``nir.NIRGraph``: its nodes in a topological order (Kahn's, stable in the
    file's node order) and each node's sources; a cycle is a one-line error ending in ``why``. Shared by
    the runner here and ``snnconv.backends.nir.from_nir``."""
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for s, d in graph.edges:
        preds[d].append(s)
    order, done, names = [], set(), list(graph.nodes)
    while len(order) < len(names):
        progress = False
        for n in names:
            if n not in done and all(p in done for p in preds[n]):
                order.append(n)
                done.add(n)
                progress = True
        if not progress:
            raise SnnconvError(f"NIR graph has a cycle ({why})")
    return order, preds


class _SumPool(nn.Module):
    def __init__(self, k, s, p):
        super().__init__()
        self.k, self.s, self.p = k, s, p

    def forward(self, x):
        return F.avg_pool2d(x, self.k, self.s, self.p, divisor_override=1)  # an exact sum


def nir_pair(v) -> tuple:
    """A NIR 2-D size (one value or two) as an int pair (shared with ``snnconv.backends.nir``)."""
    v = np.asarray(v).reshape(-1).tolist()
    return tuple(int(x) for x in (v * 2 if len(v) == 1 else v))


def _synapse(name: str, node) -> nn.Module:
    """A NIR synaptic/structural node as the plain torch layer all these frameworks use."""
    import nir

    if isinstance(node, nir.Conv2d):
        w = torch.from_numpy(np.asarray(node.weight, np.float32).copy())
        if isinstance(node.padding, str):
            raise SnnconvError(f"NIR node '{name}': string padding '{node.padding}' is not supported")
        m = nn.Conv2d(w.shape[1] * int(np.asarray(node.groups)), w.shape[0], tuple(w.shape[-2:]), nir_pair(node.stride),
                      nir_pair(node.padding), nir_pair(node.dilation), int(np.asarray(node.groups)), bias=True)
        m.weight.data.copy_(w)
        m.bias.data.copy_(torch.from_numpy(np.asarray(node.bias, np.float32).copy()))
        return m
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.from_numpy(np.asarray(node.weight, np.float32).copy())
        m = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
        m.weight.data.copy_(w)
        if isinstance(node, nir.Affine):
            m.bias.data.copy_(torch.from_numpy(np.asarray(node.bias, np.float32).copy()))
        return m
    if isinstance(node, nir.SumPool2d):
        return _SumPool(nir_pair(node.kernel_size), nir_pair(node.stride), nir_pair(node.padding))
    if isinstance(node, nir.AvgPool2d):
        return nn.AvgPool2d(nir_pair(node.kernel_size), nir_pair(node.stride), nir_pair(node.padding))
    if isinstance(node, nir.Flatten):
        if int(node.end_dim) != -1:
            raise SnnconvError(f"NIR node '{name}': flatten with end_dim={node.end_dim} is not supported")
        return nn.Flatten(int(node.start_dim) + 1)  # NIR dims exclude the batch
    raise SnnconvError(f"NIR node '{name}' ({type(node).__name__}) is not supported by the interop loaders")


class NirNetwork(nn.Module):
    """A NIR graph built with one target's neurons; :meth:`run` simulates it for T steps.

    Direct input coding: the input batch is fed at every step. Returns per-step outputs ``[T, B, K]``
    and per-neuron-node spike trains (``record=True``)."""

    def __init__(self, graph, target: Target, dt: float | None = None):
        import nir

        super().__init__()
        self.target = target
        self.dt = float(dt if dt is not None else (graph.metadata or {}).get("dt", 1.0))
        self.order, self.preds = topological_order(graph, "the interop loaders run feed-forward graphs")
        self.kind: dict[str, str] = {}
        self.specs: dict[str, NeuronSpec] = {}
        self.layers = nn.ModuleDict()
        self._key = {n: f"n{i}" for i, n in enumerate(self.order)}  # ModuleDict keys cannot hold dots
        for name in self.order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                self.kind[name] = "input"
            elif isinstance(node, nir.Output):
                self.kind[name] = "output"
            elif isinstance(node, (nir.IF, nir.LIF)):
                spec = neuron_spec(name, node, self.dt)
                target.check(spec)
                self.kind[name], self.specs[name] = "neuron", spec
                self.layers[self._key[name]] = target.neuron(spec)
            else:
                self.kind[name] = "synapse"
                self.layers[self._key[name]] = _synapse(name, node)
        if list(self.kind.values()).count("input") != 1 or list(self.kind.values()).count("output") != 1:
            raise SnnconvError("the interop loaders need exactly one Input and one Output node")

    def neurons(self) -> list[str]:
        return list(self.specs)

    @torch.no_grad()
    def run(self, x: torch.Tensor, timesteps: int, record: bool = False) -> dict:
        batch = x.shape[0]
        for name, spec in self.specs.items():
            self.target.begin(self.layers[self._key[name]], spec, batch)
        outs, spikes = [], {n: [] for n in self.specs} if record else {}
        for _ in range(timesteps):
            vals: dict[str, torch.Tensor] = {}
            for name in self.order:
                k = self.kind[name]
                if k == "input":
                    vals[name] = x
                    continue
                srcs = [vals[p] for p in self.preds[name]]
                cur = srcs[0] if len(srcs) == 1 else torch.stack(srcs).sum(0)
                if k == "output":
                    outs.append(cur)
                elif k == "neuron":
                    spec = self.specs[name]
                    s = self.target.step(self.layers[self._key[name]], spec, cur * spec.gain if spec.gain != 1.0
                                         else cur)
                    vals[name] = s
                    if record:
                        spikes[name].append(s)
                else:
                    vals[name] = self.layers[self._key[name]](cur)
        return {"outputs": torch.stack(outs), "spikes": {k: torch.stack(v) for k, v in spikes.items()}}


def load(path: str | Path, target: str, dt: float | None = None) -> NirNetwork:
    """Read a NIR file and build it with ``target``'s neurons (see :data:`TARGETS`)."""
    import nir

    from snnconv.interop import TARGETS as _registered  # noqa: F401 - makes sure the targets are registered

    t = get_target(target)
    why = t.available()
    if why:
        raise SnnconvError(f"target {target} is not installed here ({why})")
    path = Path(path)
    if not path.is_file():
        raise SnnconvError(f"NIR file {path} not found")
    try:
        graph = nir.read(path)
    except Exception as e:  # noqa: BLE001 - h5py/nir raise many types for a bad file
        raise SnnconvError(f"cannot read NIR file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return NirNetwork(graph, t, dt)


def run_file(path: str | Path, target: str, x: torch.Tensor, timesteps: int, record: bool = True) -> dict:
    """Load ``path`` in ``target`` and run ``x`` for ``timesteps`` steps (outputs and spike trains)."""
    return load(path, target).run(x, timesteps, record=record)
