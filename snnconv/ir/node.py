"""Base class of IR nodes and the registry that maps an op kind to its node type.

A node owns only its own parameters (tensors and attributes); wiring lives in
:class:`snnconv.ir.graph.Graph`. ``shape`` is the output shape without the batch dimension and
is filled in once by :meth:`Graph.infer_shapes`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

NODE_TYPES: dict[str, type["Node"]] = {}


def register_node(cls):
    """Class decorator: make ``cls`` constructible from its ``kind`` string (for deserialisation)."""
    NODE_TYPES[cls.kind] = cls
    return cls


@dataclasses.dataclass(eq=False)
class Node:
    kind: ClassVar[str] = "node"
    #: True for nodes whose output is a spike train (stateful dynamics in the simulator).
    spiking: ClassVar[bool] = False
    #: (min, max) number of inputs (max None: any); checked by Graph.validate
    arity: ClassVar[tuple] = (1, 1)
    #: True for nodes with synapses (weights); used for SynOps accounting.
    synaptic: ClassVar[bool] = False

    shape: tuple = dataclasses.field(default=(), kw_only=True)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    def attrs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "shape" and not isinstance(getattr(self, f.name), torch.Tensor)}

    def num_params(self) -> int:
        return sum(t.numel() for t in self.tensors().values())

    def describe(self) -> str:
        """Short attribute summary for the printable graph table."""
        parts = [f"{k}={tuple(v.shape)}" for k, v in self.tensors().items()]
        parts += [f"{k}={v}" for k, v in self.attrs().items() if v is not None]
        return ", ".join(parts)

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        """The keys :meth:`from_dict` accepts for this kind."""
        return {f.name for f in dataclasses.fields(cls)}

    @staticmethod
    def from_dict(d: dict) -> "Node":
        d = dict(d)
        cls = NODE_TYPES[d.pop("kind")]
        fields = cls.field_names()
        kwargs = {}
        for k, v in d.items():
            if k not in fields:
                raise ValueError(f"unknown field {k!r} for node kind {cls.kind!r}")
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)

    def replace(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)

    def to(self, device) -> "Node":
        """This node with its tensors on ``device`` (``self`` when it has none), same shape annotation."""
        tensors = self.tensors()
        if not tensors:
            return self
        node = self.replace(**{k: t.to(device) for k, t in tensors.items()})
        node.shape = self.shape
        return node
