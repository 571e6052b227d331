"""Scale-out with torch.distributed: 2 processes (gloo, CPU) give the same conversion and the same
accuracy table as 1 process (sharded calibration statistics, ANN evaluation and SNN T-sweep)."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from snnconv.runtime import distributed as dist


def test_shard_range_covers_everything_in_order():
    for n in (0, 1, 5, 8, 13):
        for world in (1, 2, 3, 4):
            parts = [list(dist.shard_range(n, r, world)) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # without a process group every helper is the identity
    assert not dist.is_active() and dist.world_size() == 1 and dist.shard([1, 2, 3]) == [1, 2, 3]
    assert dist.map_sharded(lambda x: x * x, [1, 2, 3]) == [1, 4, 9]
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]


def _config(out: str | None):
    from snnconv.config import RunConfig

    return RunConfig(model="mnist_cnn", dataset="mnist-bundled", calib_samples=96, eval_samples=200, batch_size=40,
                     timesteps=[1, 2, 4, 8], output_dir=out)


def _worker(rank: int, world: int, port: int, out: str, result_file: str):
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from snnconv.api import run_convert
        from snnconv.runtime import distributed as d

        assert d.is_active() and d.world_size() == world
        assert d.map_sharded(lambda x: 10 * x, list(range(5))) == [0, 10, 20, 30, 40]
        report = run_convert(_config(out), log_fn=lambda *_: None, coverage_fn=lambda *_: None)
        if rank == 0:
            with open(result_file, "w") as f:
                json.dump(report, f)
    finally:
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KEYS = ("ann_accuracy", "snn_accuracy", "snn_accuracy_all_t", "energy", "firing_rates", "samples")


@pytest.mark.slow
def test_two_processes_give_the_same_accuracy_table_as_one(tmp_path):
    from snnconv.api import run_convert

    one = run_convert(_config(str(tmp_path / "one")), log_fn=lambda *_: None, coverage_fn=lambda *_: None)
    result = tmp_path / "two.json"
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "two"), str(result)), nprocs=2,
                       join=True, start_method="spawn")
    two = json.loads(result.read_text())
    for k in KEYS:
        assert two[k] == one[k], k  # exact: same thresholds, same batches, integer statistics
    # thresholds from sharded calibration statistics are those of one process
    th = lambda r: [p for p in r["passes"] if p["pass"] == "threshold_balance"][0]["thresholds"]  # noqa: E731
    assert th(two) == th(one)
    assert two["layer_error"].keys() == one["layer_error"].keys()
    for k, v in one["layer_error"].items():
        assert two["layer_error"][k] == pytest.approx(v, rel=1e-9)
    # only rank 0 wrote the run folder
    assert json.loads((tmp_path / "two" / "report.json").read_text())["snn_accuracy"] == one["snn_accuracy"]
    assert (tmp_path / "two" / "report.html").is_file()
