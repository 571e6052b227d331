"""Scale-out over processes with ``torch.distributed`` (launched by ``torchrun``), same results as one process.

Launch any snnconv entry point under ``torchrun`` (``torchrun --nproc-per-node 4 -m snnconv.cli convert ...``,
see ``docs/distributed.md``); :func:`init_from_env` joins the process group (gloo on CPU, nccl
when CUDA is available) and every sharded step then splits its work:

* calibration statistics (``passes.activation_stats``): each rank runs a contiguous block of the
  calibration batches; maxima are all-reduced, percentile samples all-gathered, so every rank
  computes the same thresholds as one process would (subsampling is seeded per global batch);
* evaluation (``api.ann_accuracy``, ``api.simulate``): each rank simulates a contiguous block of
  the test batches; the batch contents are those of the one-process run, and the statistics are
  summed exactly (:func:`all_reduce_stats`: integer counts in float64);
* anything else with independent work items, e.g. HSEO fitness evaluation: :func:`map_sharded`.

Sharding is by *contiguous blocks* (:func:`shard_range`) so that concatenating the ranks' results in
rank order (:func:`gather_list`) restores the one-process order. With one process (no
``torchrun``, or ``WORLD_SIZE=1``) every helper is the identity, so callers need no special case.

Helpers for pass authors::

    from snnconv.runtime import distributed as dist
    mine = dist.shard(population)                  # this rank's contiguous block
    scores = dist.gather_list([fitness(p) for p in mine])   # everyone gets all, in order
    scores = dist.map_sharded(fitness, population)          # the same in one call
    total = dist.all_reduce_sum(torch.tensor([...], dtype=torch.float64))
"""
from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as tdist

T = TypeVar("T")


def is_active() -> bool:
    """True inside an initialised process group with more than one process."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    return tdist.get_rank() if is_active() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes outputs and logs."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); a no-op without it. Returns :func:`is_active`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not tdist.is_available():
        return False
    if not tdist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group(backend)
    return is_active()


def shard_range(n: int, r: int | None = None, world: int | None = None) -> range:
    """The contiguous block of ``range(n)`` handled by rank ``r`` (blocks differ in size by at most 1)."""
    r, world = rank() if r is None else r, world_size() if world is None else world
    base, extra = divmod(n, world)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous block of ``items``."""
    rr = shard_range(len(items))
    return list(items[rr.start:rr.stop])


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not is_active():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def gather_list(local: list) -> list:
    """Concatenation of every rank's ``local`` list in rank order (the inverse of :func:`shard`)."""
    return [x for part in all_gather_objects(list(local)) for x in part]


def map_sharded(fn: Callable[[T], object], items: Sequence[T]) -> list:
    """``[fn(x) for x in items]`` with the items split over the ranks; every rank gets the full list."""
    return gather_list([fn(x) for x in shard(items)])


def _device_for(t: torch.Tensor) -> torch.device:
    return torch.device("cuda") if tdist.get_backend() == "nccl" else t.device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (returns ``t``). Use float64 or integer tensors for exact totals."""
    if is_active():
        buf = t.to(_device_for(t))
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        t.copy_(buf.to(t.device))
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """In-place elementwise maximum over ranks (returns ``t``)."""
    if is_active():
        buf = t.to(_device_for(t))
        tdist.all_reduce(buf, op=tdist.ReduceOp.MAX)
        t.copy_(buf.to(t.device))
    return t


def all_reduce_stats(stats):
    """Merge the :class:`~snnconv.runtime.simulator.SimStats` of every rank into each rank's ``stats``.

    Counts (correct predictions, spikes, SynOps, MACs, samples) are summed; they are integers held
    in float64, so the totals equal the one-process totals exactly. Per-layer ANN-vs-SNN errors
    are summed per rank in rank order (equal to one process up to float rounding when the
    error batches are split over ranks)."""
    if not is_active():
        return stats
    parts = all_gather_objects({
        "samples": stats.samples, "correct": stats.correct, "spikes": stats.spikes, "neurons": stats.neurons,
        "synops": stats.synops, "macs": stats.macs, "layer_error": stats.layer_error,
        "error_batches": stats.error_batches})
    stats.samples = sum(p["samples"] for p in parts)
    stats.correct = sum((p["correct"].double() for p in parts[1:]), parts[0]["correct"].double())
    for key in ("spikes", "synops", "macs"):
        names = list(dict.fromkeys(n for p in parts for n in p[key]))
        merged = {}
        for n in names:
            vals = [p[key][n].double() for p in parts if n in p[key]]
            merged[n] = sum(vals[1:], vals[0])
        setattr(stats, key, merged)
    stats.neurons = {k: v for p in parts for k, v in p["neurons"].items()}
    errs: dict[str, float] = {}
    for p in parts:
        for k, v in p["layer_error"].items():
            errs[k] = errs[k] + v if k in errs else v
    stats.layer_error = errs
    stats.error_batches = sum(p["error_batches"] for p in parts)
    return stats


def barrier() -> None:
    if is_active():
        tdist.barrier()
