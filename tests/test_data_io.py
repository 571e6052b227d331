"""Dataset loaders (bundled subset and the real on-disk layouts), checkpoints, configs and atomic output."""
from __future__ import annotations

import gzip

import pytest
import torch

from snnconv import checkpoints
from snnconv.api import resolve_model
from snnconv.config import ConversionConfig, RunConfig, load_config, parse_timesteps
from snnconv.data.datasets import dataset_info, load_dataset
from snnconv.errors import SnnconvError
from snnconv.models.zoo import build_model
from snnconv.output import atomic_dir


# -- datasets ------------------------------------------------------------------------------------

def test_bundled_mnist_splits():
    test = load_dataset("mnist-bundled", train=False)
    calib = load_dataset("mnist-bundled", train=True)
    assert test.images.shape == (1000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert calib.images.shape == (256, 1, 28, 28)
    assert test.num_classes == 10 and set(test.labels.unique().tolist()) == set(range(10))
    x, y = next(test.batches(64))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (64,)
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9  # MNIST stays in [0, 1]
    assert torch.equal(x, test.images[:64].float() / 255)


def test_subset_is_seeded_and_nested():
    split = load_dataset("mnist-bundled")
    a, b = split.subset(50, seed=3), split.subset(50, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(split.subset(50, seed=4).labels, a.labels)
    assert torch.equal(split.subset(20, seed=3).labels, a.labels[:20])  # a prefix of the same permutation
    assert split.subset(None) is split and split.subset(10**6) is split


def test_batches_cover_all_samples_once():
    split = load_dataset("mnist-bundled").subset(70)
    ys = torch.cat([y for _, y in split.batches(32)])
    assert torch.equal(ys, split.labels)
    shuffled = torch.cat([y for _, y in split.batches(32, shuffle=True, seed=1)])
    assert torch.equal(shuffled.sort().values, split.labels.sort().values)


def test_augment_keeps_shape_and_changes_images():
    split = load_dataset("mnist-bundled").subset(16)
    plain = torch.cat([x for x, _ in split.batches(16)])
    aug = torch.cat([x for x, _ in split.batches(16, augment=True, seed=0)])
    assert aug.shape == plain.shape and not torch.equal(aug, plain)
    # crop + flip only moves pixels, it never creates new intensities
    assert set(aug.unique().tolist()) <= set(plain.unique().tolist()) | {0.0}


def test_cutout_blanks_one_square_per_image_on_top_of_the_same_crops():
    """Cutout (DeVries & Taylor 2017) adds to crop + flip without changing them: where the batches differ from
    cutout=0's, the image is 0 (the dataset mean after normalisation), in one axis-aligned square of at most
    size x size per image whose centre lies in the image."""
    from snnconv.data.datasets import Split

    split = Split(torch.full((64, 3, 16, 16), 200, dtype=torch.uint8), torch.zeros(64, dtype=torch.long),
                  (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 10)
    plain = torch.cat([x for x, _ in split.batches(32, shuffle=True, augment=True, seed=5)])
    same = torch.cat([x for x, _ in split.batches(32, shuffle=True, augment=True, seed=5, cutout=0)])
    cut = torch.cat([x for x, _ in split.batches(32, shuffle=True, augment=True, seed=5, cutout=6)])
    assert torch.equal(plain, same)  # cutout=0: the batches every earlier run trained on
    changed = (cut != plain).any(1)  # [N, H, W]
    assert (cut[changed.unsqueeze(1).expand_as(cut)] == 0).all()
    sizes = []
    for m in changed:
        ys, xs = m.nonzero(as_tuple=True)
        if len(ys):  # a square that fell on the padding only changes nothing
            h, w = int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
            assert h <= 6 and w <= 6
        sizes.append(int(m.sum()))
    assert max(sizes) == 36 and sum(s > 0 for s in sizes) > 48  # whole squares inside, clipped ones at borders


def test_unknown_dataset_and_missing_dir():
    with pytest.raises(SnnconvError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", data_dir=None)
    with pytest.raises(SnnconvError, match="does not exist"):
        load_dataset("mnist", data_dir="/definitely/not/here")
    assert dataset_info("mnist") == (1, 10) and dataset_info("cifar100") == (3, 100)
    assert dataset_info("cifar10") == (3, 10)


def test_real_mnist(data_dir):
    if not (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("MNIST not in the data dir")
    test = load_dataset("mnist", data_dir, train=False)
    assert test.images.shape == (10000, 1, 28, 28) and len(test) == 10000
    assert test.labels.min() == 0 and test.labels.max() == 9
    # the bundled subset was drawn from this test set: its first image occurs here
    bundled = load_dataset("mnist-bundled").images[0]
    assert (test.images == bundled).flatten(1).all(1).any()


def test_real_cifar10_test_split(data_dir):
    if not (data_dir / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.skip("CIFAR-10 not in the data dir")
    test = load_dataset("cifar10", data_dir, train=False)
    assert test.images.shape == (10000, 3, 32, 32) and test.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x, _ = next(test.subset(512).batches(512))
    # normalised with the CIFAR-10 channel statistics: roughly zero mean, unit std
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.25
    assert ((x.std(dim=(0, 2, 3)) - 1).abs() < 0.25).all()


def test_mnist_idx_files_in_flat_layout(tmp_path):
    """MNIST IDX files directly under the data dir (uncompressed and gzip) load without a download."""
    imgs = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1, 5], dtype=torch.uint8)
    header = lambda magic, dims: magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)  # noqa
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header(0x803, [5, 28, 28]) + imgs.numpy().tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(header(0x801, [5]) + labels.numpy().tobytes())
    split = load_dataset("mnist", tmp_path, train=False)
    assert torch.equal(split.images[:, 0], imgs) and split.labels.tolist() == [3, 1, 4, 1, 5]


def test_corrupt_cifar_file_is_a_user_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(SnnconvError, match="cannot read"):
        load_dataset("cifar10", tmp_path, train=False)


# -- checkpoints and model resolution ------------------------------------------------------------

def test_checkpoint_round_trip_and_bare_state_dict(tmp_path):
    model = build_model("mnist_cnn", 10, 1)
    checkpoints.save_checkpoint(tmp_path / "sub" / "a.pt", {"model": "mnist_cnn", "state_dict": model.state_dict()})
    assert not list((tmp_path / "sub").glob("*.tmp"))
    ck = checkpoints.load_checkpoint(tmp_path / "sub" / "a.pt")
    assert ck["model"] == "mnist_cnn"
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    bare = checkpoints.load_checkpoint(tmp_path / "bare.pt")
    assert set(bare) == {"state_dict"}
    other = build_model("mnist_cnn", 10, 1)
    checkpoints.apply_state_dict(other, bare, "bare.pt")
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_errors(tmp_path):
    with pytest.raises(SnnconvError, match="not found"):
        checkpoints.load_checkpoint(tmp_path / "none.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(SnnconvError, match="no state_dict"):
        checkpoints.load_checkpoint(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk" * 100)
    with pytest.raises(SnnconvError, match="junk.pt: expected a checkpoint .* not a complete torch.save file"):
        checkpoints.load_checkpoint(tmp_path / "junk.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SnnconvError, match="evil.pt: expected a checkpoint .* pickled code"):  # weights_only: none runs
        checkpoints.load_checkpoint(tmp_path / "evil.pt")
    wrong = {"state_dict": build_model("resnet20").state_dict()}
    with pytest.raises(SnnconvError, match="does not match the architecture"):
        checkpoints.apply_state_dict(build_model("mnist_cnn", 10, 1), wrong, "w.pt")


def test_resolve_model_prefers_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNCONV_CACHE_DIR", str(tmp_path))
    cfg = RunConfig(model="mnist_cnn", dataset="mnist-bundled")
    _, _, src = resolve_model(cfg, lambda *_: None)
    assert src["weights"] == str(checkpoints.BUNDLED_DIR / "mnist_cnn-mnist.pt")  # nothing cached: bundled
    model = build_model("mnist_cnn", 10, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    checkpoints.save_checkpoint(tmp_path / "mnist_cnn-mnist.pt", {"model": "mnist_cnn", "state_dict": model.state_dict()})
    loaded, shape, src = resolve_model(cfg, lambda *_: None)
    assert src["weights"] == str(tmp_path / "mnist_cnn-mnist.pt") and shape == (1, 28, 28)
    assert torch.all(loaded.fc2.weight == 0.01) and not loaded.training


def test_resolve_model_from_checkpoint_path(tmp_path):
    model = build_model("mnist_cnn", 10, 1)
    path = tmp_path / "my.pt"
    torch.save({"model": "mnist_cnn", "state_dict": model.state_dict()}, path)
    loaded, shape, _ = resolve_model(RunConfig(model=str(path), dataset="mnist-bundled"), lambda *_: None)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "anon.pt")
    with pytest.raises(SnnconvError, match="does not name a zoo architecture"):
        resolve_model(RunConfig(model=str(tmp_path / "anon.pt"), dataset="mnist-bundled"), lambda *_: None)


# -- configs ---------------------------------------------------------------------------------------

def test_parse_timesteps():
    assert parse_timesteps("4, 1,2,2") == [1, 2, 4]
    assert parse_timesteps(8) == [8] and parse_timesteps([16, 2]) == [2, 16]
    for bad in ("0", "abc", "", [], "1,-2", 1.5, None):
        with pytest.raises(SnnconvError, match="positive integers"):
            parse_timesteps(bad)


def test_load_config_merges_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: resnet20\ndataset: cifar10\nbatch_size: 32\npercentile_dummy: null\n")
    with pytest.raises(SnnconvError, match=r"c\.yaml: unknown key 'percentile_dummy'"):
        load_config(p, {})
    p.write_text("model: resnet20\nbatch_size: 32\ntimesteps: 8\nconversion:\n  percentile: 99\n  reset: zero\n")
    cfg = load_config(p, {"batch_size": 16, "dataset": None, "conversion": {"reset": None, "granularity": "layer"}})
    assert cfg.model == "resnet20" and cfg.batch_size == 16 and cfg.dataset == "mnist" and cfg.timesteps == [8]
    assert cfg.conversion == ConversionConfig(percentile=99.0, reset="zero", granularity="layer")
    assert isinstance(cfg.conversion.percentile, float)
    spec = cfg.pipeline_spec()
    assert spec[:2] == ["fold_batchnorm", "remove_identity"]
    assert spec[2]["percentile"] == 99.0 and spec[2]["reset"] == "zero" and spec[2]["granularity"] == "layer"
    assert load_config(None, {}) == RunConfig()


def test_load_config_type_errors(tmp_path):
    p = tmp_path / "t.yaml"
    for text, key in [("batch_size: 1.5\n", "batch_size"), ("train_if_missing: 3\n", "train_if_missing"),
                      ("chunk: true\n", "chunk"), ("conversion: fast\n", "conversion"),
                      ("passes: fold_batchnorm\n", "passes"), ("conversion:\n  v_init: high\n", "v_init")]:
        p.write_text(text)
        with pytest.raises(SnnconvError, match=key) as info:
            load_config(p, {})
        assert "t.yaml" in str(info.value)


def test_explicit_passes_replace_the_default_pipeline(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("passes:\n  - fold_batchnorm\n  - {name: threshold_balance, method: max, v_init: 0.0}\n")
    cfg = load_config(p, {})
    assert cfg.pipeline_spec() == ["fold_batchnorm", {"name": "threshold_balance", "method": "max", "v_init": 0.0}]


# -- atomic output folders ------------------------------------------------------------------------

def test_atomic_dir_success_and_replace(tmp_path):
    from snnconv.output import MARKER

    final = tmp_path / "run"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("1")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "1" and (final / MARKER).is_file()
    with atomic_dir(final, overwrite=True) as d:
        (d / "b.txt").write_text("2")
        assert (final / "a.txt").exists()  # the old folder stays until the new one is complete
    assert sorted(p.name for p in final.iterdir()) == [MARKER, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "partial.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as d:
        (d / "keep.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final, overwrite=True) as d:
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and (final / "keep.txt").read_text() == "old"


def test_committed_benchmark_checkpoint_is_found_by_the_headline_command(tmp_path, monkeypatch):
    """`snnconv convert --model M --dataset D` uses docs/benchmarks/checkpoints/M-D.pt when nothing is cached."""
    from snnconv.api import resolve_model
    from snnconv.config import RunConfig
    from snnconv.models.zoo import build_model

    monkeypatch.setattr(checkpoints, "REPO_CHECKPOINTS", tmp_path)
    with pytest.raises(SnnconvError):  # no checkpoint for that pair anywhere: the train command
        resolve_model(RunConfig(model="resnet20", dataset="cifar100"), log_fn=lambda *_: None)
    checkpoints.save_checkpoint(tmp_path / "resnet20-cifar100.pt",
                                {"model": "resnet20", "state_dict": build_model("resnet20", 100, 3).state_dict()})
    _, _, src = resolve_model(RunConfig(model="resnet20", dataset="cifar100"), log_fn=lambda *_: None)
    assert src["weights"] == str(tmp_path / "resnet20-cifar100.pt")
