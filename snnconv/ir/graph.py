"""The graph: the one place where wiring lives.

``nodes`` is an insertion-ordered dict kept in topological order; ``edges`` maps each node to
its ordered list of source nodes (order matters for concat). Validation checks acyclicity,
dangling edges and arity (each node class's ``arity``); :meth:`infer_shapes` runs one zero
sample through the ANN interpreter to fill every node's output shape once. The interpreter lives in
``snnconv.runtime`` (which depends on the IR, never the reverse): it registers itself here with
:func:`register_shape_runner` when snnconv is imported (``snnconv/__init__.py``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from snnconv.errors import SnnconvError
from snnconv.ir.node import Node

FORMAT = "snnconv-ir"
VERSION = 1

_SHAPE_RUNNER = None


def register_shape_runner(fn) -> None:
    """Set the function :meth:`Graph.infer_shapes` runs (``fn(graph, *inputs, record=callback)``)."""
    global _SHAPE_RUNNER
    _SHAPE_RUNNER = fn


class Graph:
    def __init__(self):
        self.nodes: dict[str, Node] = {}
        self.edges: dict[str, list[str]] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict = {}

    # -- construction -------------------------------------------------------------------
    def add(self, name: str, node: Node, srcs: list[str] | tuple[str, ...] = ()) -> str:
        if name in self.nodes:
            raise ValueError(f"duplicate node name {name!r}")
        for s in srcs:
            if s not in self.nodes:
                raise ValueError(f"node {name!r} reads from unknown node {s!r}")
        self.nodes[name] = node
        self.edges[name] = list(srcs)
        if node.kind == "input":
            self.inputs.append(name)
        return name

    def unique_name(self, base: str) -> str:
        name, i = base, 1
        while name in self.nodes:
            name, i = f"{base}_{i}", i + 1
        return name

    def preds(self, name: str) -> list[str]:
        return self.edges[name]

    def succs(self, name: str) -> list[str]:
        return [d for d, srcs in self.edges.items() if name in srcs]

    def edge_list(self) -> list[tuple[str, str]]:
        return [(s, d) for d, srcs in self.edges.items() for s in srcs]

    # -- rewriting ----------------------------------------------------------------------
    def bypass(self, name: str) -> None:
        """Remove a single-input node, rewiring its consumers (and outputs) to its source."""
        (src,) = self.edges[name]
        for d, srcs in self.edges.items():
            self.edges[d] = [src if s == name else s for s in srcs]
        self.outputs = [src if o == name else o for o in self.outputs]
        del self.nodes[name], self.edges[name]

    def replace(self, name: str, node: Node) -> None:
        node.shape = self.nodes[name].shape
        self.nodes[name] = node

    def insert_after(self, src: str, name: str, node: Node) -> str:
        """Insert ``node`` reading ``src``; all former consumers of ``src`` now read ``name``."""
        consumers = self.succs(src)
        order = list(self.nodes)
        pos = order.index(src) + 1
        self.nodes = {k: self.nodes[k] for k in order[:pos]} | {name: node} | {k: self.nodes[k] for k in order[pos:]}
        for d in consumers:
            self.edges[d] = [name if s == src else s for s in self.edges[d]]
        self.edges[name] = [src]
        self.outputs = [name if o == src else o for o in self.outputs]
        node.shape = self.nodes[src].shape
        return name

    def insert_before(self, dst: str, name: str, node: Node, srcs: list[str] | tuple[str, ...]) -> str:
        """Add ``node`` reading ``srcs`` just before ``dst`` in the node order (edges into ``dst`` unchanged)."""
        if name in self.nodes:
            raise ValueError(f"duplicate node name {name!r}")
        order = list(self.nodes)
        pos = order.index(dst)
        self.nodes = {k: self.nodes[k] for k in order[:pos]} | {name: node} | {k: self.nodes[k] for k in order[pos:]}
        self.edges[name] = list(srcs)
        return name

    def copy(self) -> "Graph":
        """A copy with independent nodes (tensors are cloned so passes never alias the source)."""
        g = Graph()
        for name, n in self.nodes.items():
            d = n.to_dict()
            g.nodes[name] = Node.from_dict({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in d.items()})
        g.edges = {k: list(v) for k, v in self.edges.items()}
        g.inputs, g.outputs, g.meta = list(self.inputs), list(self.outputs), dict(self.meta)
        return g

    def to(self, device) -> "Graph":
        """The graph with every node tensor on ``device`` (``self`` when they all are there already);
        nodes are replaced, never modified, so the source graph keeps its tensors."""
        device = torch.device(device)
        if all(t.device == device for n in self.nodes.values() for t in n.tensors().values()):
            return self
        g = Graph()
        g.nodes = {name: n.to(device) for name, n in self.nodes.items()}
        g.edges = {k: list(v) for k, v in self.edges.items()}
        g.inputs, g.outputs, g.meta = list(self.inputs), list(self.outputs), dict(self.meta)
        return g

    # -- checks -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`SnnconvError` on dangling edges, cycles/out-of-order nodes or bad arity."""
        if not self.inputs or not self.outputs:
            raise SnnconvError("graph needs at least one input and one output")
        seen: set[str] = set()
        for name, node in self.nodes.items():
            for s in self.edges.get(name, []):
                if s not in self.nodes:
                    raise SnnconvError(f"node {name!r} reads from missing node {s!r}")
                if s not in seen:
                    raise SnnconvError(f"node {name!r} reads {s!r} before it is computed (cycle or bad order)")
            lo, hi = getattr(type(node), "arity", (1, 1))
            n = len(self.edges.get(name, []))
            if n < lo or (hi is not None and n > hi):
                raise SnnconvError(f"node {name!r} ({node.kind}) has {n} inputs")
            seen.add(name)
        for o in self.outputs:
            if o not in self.nodes:
                raise SnnconvError(f"output {o!r} is not a node")

    def infer_shapes(self) -> "Graph":
        if _SHAPE_RUNNER is None:
            raise SnnconvError("no shape runner registered: import snnconv (it registers snnconv.runtime's interpreter)")
        x = [torch.zeros(1, *self.nodes[i].shape) for i in self.inputs]
        _SHAPE_RUNNER(self, *x, record=lambda name, t: setattr(self.nodes[name], "shape", tuple(t.shape[1:])))
        return self

    # -- presentation -------------------------------------------------------------------
    def summary(self) -> str:
        rows = [("name", "op", "inputs", "out shape", "params", "details")]
        for name, n in self.nodes.items():
            rows.append((name, n.kind, ",".join(self.edges[name]) or "-", "x".join(map(str, n.shape)) or "-",
                         str(n.num_params()), n.describe()))
        widths = [min(max(len(r[i]) for r in rows), 40) for i in range(5)]
        lines = ["  ".join(c[:40].ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        total = sum(n.num_params() for n in self.nodes.values())
        spiking = sum(1 for n in self.nodes.values() if n.spiking)
        lines.append(f"{len(self.nodes)} nodes, {spiking} spiking, {total:,} parameters; outputs: {', '.join(self.outputs)}")
        return "\n".join(lines)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes.values():
            out[n.kind] = out.get(n.kind, 0) + 1
        return out

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "nodes": {k: n.to_dict() for k, n in self.nodes.items()},
                "edges": {k: list(v) for k, v in self.edges.items()}, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "Graph":
        if d.get("format") != FORMAT:
            raise SnnconvError("not an snnconv IR file")
        if d.get("version") != VERSION:
            raise SnnconvError(f"IR format version {d.get('version')} is not supported (this snnconv reads {VERSION})")
        g = cls()
        try:
            for name, nd in d["nodes"].items():
                g.nodes[name] = Node.from_dict(nd)
            g.edges = {k: list(v) for k, v in d["edges"].items()}
            g.inputs, g.outputs, g.meta = list(d["inputs"]), list(d["outputs"]), dict(d.get("meta", {}))
        except KeyError as e:
            raise SnnconvError(f"IR file is missing {e} or names an unknown node kind") from None
        except (ValueError, TypeError, AttributeError) as e:
            raise SnnconvError(f"IR file holds an invalid node: {e}") from None
        g.validate()
        return g

    def save(self, path: str | Path) -> None:
        """Save with ``torch.save``: only tensors and plain containers, so ``weights_only`` loading works."""
        torch.save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "Graph":
        path = Path(path)
        if not path.is_file():
            raise SnnconvError(f"IR file {path} not found")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            why = ("it holds pickled code, which is never run (weights_only loading)" if "Unsupported global" in str(e)
                   else "it is not a complete torch.save file (corrupt, truncated or another format)")
            raise SnnconvError(f"cannot read IR file {path}: expected an snnconv IR file (snn.pt / ann.pt written "
                               f"by snnconv convert); {why}") from None
        if not isinstance(d, dict):
            raise SnnconvError(f"{path} is not an snnconv IR file")
        return cls.from_dict(d)
