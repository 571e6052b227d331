"""snnconv never deletes, hides or overwrites a file it did not create (snnconv/output.py).

Every command that writes is run against real folders and files holding "user" data: the command
must refuse in one line (exit 2) before any work, and afterwards every user file must still be there
with its content, and nothing new (no hidden temp or backup) may lie next to it."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from snnconv.checkpoints import BUNDLED_DIR, save_checkpoint
from snnconv.errors import SnnconvError
from snnconv.output import MARKER, atomic_dir, atomic_file, check_output_dir, prepare_batch_dir, read_marker

SMALL = ("--model", "mnist_cnn", "--dataset", "mnist-bundled", "--timesteps", "1,2", "--eval-samples", "16",
         "--calib-samples", "16")


@pytest.fixture
def snnconv_cli(monkeypatch, capsys, tmp_path):
    from test_cli import run_main

    monkeypatch.chdir(tmp_path)
    return lambda *args: run_main(*args, monkeypatch=monkeypatch, capsys=capsys)


def user_tree(root: Path) -> dict[str, bytes]:
    """A folder of the user's: files at two depths and an empty subfolder; returns its snapshot."""
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("my notes")
    (root / "docs" / "thesis.tex").write_text("\\section{results}")
    (root / "docs" / "deep" / "data.bin").write_bytes(os.urandom(64))
    return snapshot(root)


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


def one_line_refusal(proc, *fragments) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# -- the rules, on the module -------------------------------------------------------------------------

def test_user_folder_is_never_replaced_even_with_overwrite(tmp_path):
    user = tmp_path / "home"
    user.mkdir()
    before = user_tree(user)
    for overwrite in (False, True):
        with pytest.raises(SnnconvError, match="not an snnconv folder"):
            with atomic_dir(user, overwrite=overwrite):
                raise AssertionError("the body must not run")
    assert snapshot(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no hidden temp or backup folder


def test_run_folder_needs_overwrite_and_keeps_foreign_files(tmp_path):
    run = tmp_path / "run"
    with atomic_dir(run) as d:
        (d / "report.json").write_text("{}")
        (d / "sub").mkdir()
        (d / "sub" / "x.pt").write_bytes(b"1")
    assert read_marker(run)["files"] == ["report.json", "sub/x.pt"]
    with pytest.raises(SnnconvError, match="pass --overwrite"):
        check_output_dir(run)
    (run / "my_analysis.ipynb").write_text("user work")  # the user adds a file to a run folder
    with pytest.raises(SnnconvError, match="my_analysis.ipynb"):
        with atomic_dir(run, overwrite=True):
            raise AssertionError("the body must not run")
    assert (run / "my_analysis.ipynb").read_text() == "user work"
    (run / "my_analysis.ipynb").unlink()
    with atomic_dir(run, overwrite=True) as d:
        (d / "report.json").write_text('{"new": 1}')
    assert (run / "report.json").read_text() == '{"new": 1}' and not (run / "sub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_user_file_added_during_the_run_is_kept_and_so_is_the_result(tmp_path):
    run = tmp_path / "run"
    with atomic_dir(run) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(SnnconvError, match="kept in"):
        with atomic_dir(run, overwrite=True) as d:
            (d / "a.txt").write_text("new")
            (run / "added-meanwhile.txt").write_text("user")
    assert (run / "added-meanwhile.txt").read_text() == "user" and (run / "a.txt").read_text() == "old"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.new-")]
    assert len(kept) == 1 and (kept[0] / "a.txt").read_text() == "new"


def test_empty_folder_is_used_and_keeps_its_mode(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o750)
    with atomic_dir(out) as d:
        (d / "r.txt").write_text("x")
    assert (out / "r.txt").read_text() == "x" and stat.S_IMODE(out.stat().st_mode) == 0o750


def test_new_folder_gets_default_mode_and_failure_removes_created_parents(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "a" / "run") as d:
            (d / "r.txt").write_text("x")
        assert stat.S_IMODE((tmp_path / "a" / "run").stat().st_mode) == 0o755  # not mkdtemp's 0700
    finally:
        os.umask(umask)
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "b" / "c" / "run") as d:
            (d / "partial").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


@pytest.mark.parametrize("case", ["file", "under_file", "symlink", "cwd", "parent_of_cwd", "proc"])
def test_unwritable_or_wrong_paths_fail_before_work(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt").write_text("user file")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    path = {"file": "f.txt", "under_file": "f.txt/run", "symlink": "link", "cwd": ".", "parent_of_cwd": "..",
            "proc": "/proc/snnconv-test-run"}[case]
    before = snapshot(tmp_path)
    with pytest.raises(SnnconvError):
        with atomic_dir(path):
            raise AssertionError("the body must not run")
    assert snapshot(tmp_path) == before
    assert (tmp_path / "f.txt").read_text() == "user file"


def test_files_are_never_replaced_unasked_and_temps_never_clobber(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"user checkpoint")
    (tmp_path / "model.pt.tmp").write_bytes(b"user temp file")  # the old fixed temp names
    (tmp_path / ".model.pt.tmp").write_bytes(b"user hidden file")
    with pytest.raises(SnnconvError, match="pass --overwrite"):
        save_checkpoint(f, {"state_dict": {}}, overwrite=False)
    with pytest.raises(SnnconvError, match="pass --overwrite"):
        with atomic_file(f):
            raise AssertionError("the body must not run")
    assert f.read_bytes() == b"user checkpoint"
    save_checkpoint(f, {"state_dict": {"w": torch.ones(1)}}, overwrite=True)
    assert torch.load(f, weights_only=True)["state_dict"]["w"].item() == 1.0
    assert (tmp_path / "model.pt.tmp").read_bytes() == b"user temp file"
    assert (tmp_path / ".model.pt.tmp").read_bytes() == b"user hidden file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.pt.tmp", "model.pt", "model.pt.tmp"]


def test_batch_folder_rules(tmp_path):
    user = tmp_path / "results"
    user.mkdir()
    before = user_tree(user)
    for reuse in (False, True):
        with pytest.raises(SnnconvError, match="not an snnconv batch folder"):
            prepare_batch_dir(user, reuse=reuse)
    assert snapshot(user) == before
    b = tmp_path / "batch"
    prepare_batch_dir(b)
    assert read_marker(b)["kind"] == "batch"
    with pytest.raises(SnnconvError, match="--resume"):
        prepare_batch_dir(b)
    prepare_batch_dir(b, reuse=True)
    (b / "mine.csv").write_text("user")
    with pytest.raises(SnnconvError, match="mine.csv"):
        prepare_batch_dir(b, reuse=True)
    # a run folder cannot be replaced by a batch, nor a batch folder by a run
    with pytest.raises(SnnconvError):
        check_output_dir(b, overwrite=True)


# -- every command that writes ------------------------------------------------------------------------

def test_convert_refuses_user_folder_before_any_work(tmp_path, snnconv_cli):
    home = tmp_path / "home"
    home.mkdir()
    before = user_tree(home)
    for extra in ((), ("--overwrite",)):
        proc = snnconv_cli("convert", *SMALL, "--output-dir", home, *extra)
        one_line_refusal(proc, str(home), "not an snnconv folder")
        assert "converting" not in proc.stderr  # refused before the conversion started
    assert snapshot(home) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


@pytest.mark.parametrize("where", [".", "f.txt", "f.txt/run", "/proc/snnconv-run"])
def test_convert_unwritable_output_is_one_line_before_work(where, tmp_path, snnconv_cli):
    (tmp_path / "f.txt").write_text("user file")
    (tmp_path / "keep.txt").write_text("keep")
    before = snapshot(tmp_path)
    proc = snnconv_cli("convert", *SMALL, "--output-dir", where)
    one_line_refusal(proc)
    assert "converting" not in proc.stderr
    assert snapshot(tmp_path) == before  # no hidden ..xxxx.tmp/ either


def test_convert_rerun_needs_overwrite(tmp_path, snnconv_cli):
    out = tmp_path / "run"
    assert snnconv_cli("convert", *SMALL, "--output-dir", out).returncode == 0
    first = (out / "report.json").read_bytes()
    one_line_refusal(snnconv_cli("convert", *SMALL, "--output-dir", out), "--overwrite")
    assert (out / "report.json").read_bytes() == first
    proc = snnconv_cli("convert", *SMALL, "--output-dir", out, "--overwrite", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.json").read_bytes() != first and read_marker(out)["kind"] == "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_batch_refuses_user_folder(tmp_path, snnconv_cli):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("model: mnist_cnn\ndataset: mnist-bundled\neval_samples: 8\ncalib_samples: 8\ntimesteps: [1]\n")
    res = tmp_path / "res"
    res.mkdir()
    before = user_tree(res)
    one_line_refusal(snnconv_cli("batch", cfg, "--output-dir", res, "--resume"), "not an snnconv batch folder")
    assert snapshot(res) == before


def test_batch_resume_and_overwrite_only_touch_its_own_folders(tmp_path, snnconv_cli):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("model: mnist_cnn\ndataset: mnist-bundled\neval_samples: 8\ncalib_samples: 8\ntimesteps: [1]\n")
    b = tmp_path / "b"
    assert snnconv_cli("batch", cfg, "--output-dir", b).returncode == 0
    one_line_refusal(snnconv_cli("batch", cfg, "--output-dir", b), "--resume")
    assert snnconv_cli("batch", cfg, "--output-dir", b, "--resume").returncode == 0
    assert snnconv_cli("batch", cfg, "--output-dir", b, "--overwrite").returncode == 0
    (b / "a" / "notes.md").write_text("user notes in an item folder")
    proc = snnconv_cli("batch", cfg, "--output-dir", b, "--overwrite")
    one_line_refusal(proc, "notes.md")
    assert (b / "a" / "notes.md").read_text() == "user notes in an item folder"


def _snn(tmp_path, snnconv_cli) -> Path:
    out = tmp_path / "run"
    assert snnconv_cli("convert", *SMALL, "--output-dir", out, "--reset", "zero", "--v-init", "0").returncode == 0
    return out / "snn.pt"


def test_export_and_import_refuse_existing_files(tmp_path, snnconv_cli):
    snn = _snn(tmp_path, snnconv_cli)
    for fmt, name in (("nir", "user.nir"), ("onnx", "user.onnx")):
        f = tmp_path / name
        f.write_bytes(b"user data")
        model = snn if fmt == "nir" else BUNDLED_DIR / "mnist_cnn-mnist.pt"
        one_line_refusal(snnconv_cli("export", "--format", fmt, "--model", model, "--out", f), "--overwrite")
        assert f.read_bytes() == b"user data"
        proc = snnconv_cli("export", "--format", fmt, "--model", model, "--out", f, "--overwrite")
        assert proc.returncode == 0, proc.stderr
        assert f.read_bytes() != b"user data"
    folder = tmp_path / "lavadir"
    folder.mkdir()
    before = user_tree(folder)
    one_line_refusal(snnconv_cli("export", "--format", "lava", "--model", snn, "--out", folder, "--overwrite"),
                     "not an snnconv folder")
    assert snapshot(folder) == before
    g = tmp_path / "graph.pt"
    g.write_bytes(b"user graph")
    one_line_refusal(snnconv_cli("import", tmp_path / "user.nir", "--out", g), "--overwrite")
    assert g.read_bytes() == b"user graph"
    j = tmp_path / "report.json"
    j.write_text("user json")
    one_line_refusal(snnconv_cli("verify", tmp_path / "user.nir", "--json", j, "--targets", "spikingjelly"),
                     "--overwrite")
    assert j.read_text() == "user json"


def test_train_and_swa_refuse_existing_checkpoints_before_loading_data(tmp_path, snnconv_cli):
    f = tmp_path / "mine.pt"
    f.write_bytes(b"a checkpoint of the user's")
    for args in (("train", "--model", "mnist_cnn", "--dataset", "mnist", "--data-dir", tmp_path / "no-data"),
                 ("finetune", "--model", "mnist_cnn", "--dataset", "mnist", "--weights",
                  BUNDLED_DIR / "mnist_cnn-mnist.pt", "--data-dir", tmp_path / "no-data"),
                 ("swa", "--model", "mnist_cnn", "--dataset", "mnist", "--weights", BUNDLED_DIR / "mnist_cnn-mnist.pt",
                  "--data-dir", tmp_path / "no-data")):
        # the data dir does not exist: a refusal naming the checkpoint proves the check came first
        one_line_refusal(snnconv_cli(*args, "--out", f), str(f), "--overwrite")
        assert f.read_bytes() == b"a checkpoint of the user's"
    assert not (tmp_path / "no-data").exists()


def test_evolve_refuses_user_folder_before_the_stream(tmp_path, snnconv_cli):
    d = tmp_path / "exp"
    d.mkdir()
    before = user_tree(d)
    proc = snnconv_cli("evolve", "--dataset", "mnist-bundled", "--output-dir", d, "--clean", "10", "--shifted", "10")
    one_line_refusal(proc, "not an snnconv folder")
    assert snapshot(d) == before


def test_marker_names_every_written_file(tmp_path, snnconv_cli):
    out = tmp_path / "run"
    assert snnconv_cli("convert", *SMALL, "--output-dir", out).returncode == 0
    listed = set(read_marker(out)["files"])
    assert listed == {p.name for p in out.iterdir()} - {MARKER}
