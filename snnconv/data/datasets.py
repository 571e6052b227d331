"""Dataset loaders that read the standard on-disk layouts, with no torchvision.

Layouts (under ``--data-dir`` / ``SNNCONV_DATA_DIR``):

* ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (python pickle version)
* ``cifar100``: ``cifar-100-python/{train,test}``
* ``mnist``: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
* ``imagefolder:<path>``: ``<path>/{train,test}/<class>/<image>`` (needs Pillow)

Whole splits are held in memory as uint8 tensors (CIFAR-10 is 150 MB) and normalised batch by
batch; this is faster on 2 CPU cores than a worker-process DataLoader. When nothing is found and
the machine is online, the original archives are downloaded into the data dir.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from snnconv.errors import SnnconvError

_URLS = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python"),
}
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

_STATS = {  # per-channel mean/std used to normalise inputs
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.0,), (1.0,)),  # MNIST stays in [0, 1]: non-negative input suits spike encoders
}
BUNDLED_MNIST = Path(__file__).resolve().parent.parent / "assets" / "mnist_subset.npz"


@dataclass
class Split:
    """One split of a dataset: uint8 images [N, C, H, W], int64 labels [N] and normalisation."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple
    std: tuple
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        """The first ``n`` samples of a seeded permutation (all samples if ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return Split(self.images[idx], self.labels[idx], self.mean, self.std, self.num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        m = torch.tensor(self.mean).view(1, -1, 1, 1)
        s = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - m) / s

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False, seed: int = 0,
                start: int = 0, cutout: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised ``(x, y)`` batches; ``augment`` applies random crop (pad 4) + flip, and with
        ``cutout`` > 0 also Cutout (DeVries & Taylor 2017, arXiv:1708.04552): one ``cutout`` x ``cutout``
        square per image, centred anywhere (clipped at the border), set to 0 after normalisation (the
        dataset mean). Crop and flip draw first, so ``cutout=0`` gives the batches it always gave.

        Batch ``k``'s augmentation draws from its own generator (seeded by ``seed`` and ``k``), so
        ``start=k`` yields exactly the batches ``k, k+1, ...`` of the full run (a resumed epoch)."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        for k, i in enumerate(range(0, n, batch_size)):
            if k < start:
                continue
            idx = order[i:i + batch_size]
            x = self.images[idx]
            if augment:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + k + 1)
                x = _augment(x, gen)
                if cutout > 0:
                    yield self.normalize(x) * _cutout_keep(x.shape, cutout, gen), self.labels[idx]
                    continue
            yield self.normalize(x), self.labels[idx]

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.images[idx], self.labels[idx], self.mean, self.std, self.num_classes)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (b,), generator=gen)
    dy = torch.randint(0, 9, (b,), generator=gen)
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h))  # [b, h]
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w))  # [b, w]
    out = padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1),
                 rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def _cutout_keep(shape: torch.Size, size: int, gen: torch.Generator) -> torch.Tensor:
    """[b, 1, h, w] mask, 0 inside one ``size`` x ``size`` square per image (centre uniform over the image)."""
    b, _, h, w = shape
    cy = torch.randint(0, h, (b, 1, 1), generator=gen)
    cx = torch.randint(0, w, (b, 1, 1), generator=gen)
    lo = size // 2
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    return (~inside).unsqueeze(1).float()


def default_data_dir() -> Path:
    return Path(os.environ.get("SNNCONV_DATA_DIR", Path.home() / ".cache" / "snnconv" / "data"))


def _download(url: str, dest: Path, looked: str) -> None:
    """Fetch ``url`` to ``dest`` (atomically). ``looked`` says where and what was searched, for the error.
    On failure nothing is left behind: no partial file and no folders this call created."""
    from snnconv.output import OutputFile

    given = os.environ.get("SNNCONV_DATA_DIR")
    hint = ("point --data-dir / SNNCONV_DATA_DIR at the folder that holds that layout"
            + (f" (SNNCONV_DATA_DIR is {given})" if given else ""))
    if os.environ.get("SNNCONV_OFFLINE"):
        raise SnnconvError(f"{looked}: not found, and SNNCONV_OFFLINE is set; {hint}")
    try:
        out = OutputFile(dest, overwrite=False, what="dataset file")
    except SnnconvError as e:
        raise SnnconvError(f"{looked}: not found, and it cannot be downloaded there ({e}); {hint}") from None
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(out.tmp, "wb") as fh:  # noqa: S310 - fixed URLs
            shutil.copyfileobj(r, fh)
    except OSError as e:
        out.discard()
        raise SnnconvError(f"{looked}: not found, and downloading {url} failed ({e.__class__.__name__}: offline?); "
                           f"{hint}") from None
    except BaseException:
        out.discard()
        raise
    out.commit()


def _load_cifar(name: str, root: Path, train: bool) -> Split:
    url, folder = _URLS[name]
    base = root / folder
    if not base.is_dir():
        archive = root / Path(url).name
        _download(url, archive, f"{name} (expected {base}/ with the CIFAR python files)")
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key, ncls = "labels", 10
    else:
        files, label_key, ncls = (["train"] if train else ["test"]), "fine_labels", 100
    xs, ys = [], []
    for f in files:
        path = base / f
        if not path.is_file():
            raise SnnconvError(f"data dir {base} lacks {f} (expected the CIFAR python layout)")
        try:
            with open(path, "rb") as fh:
                d = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, EOFError, ValueError) as e:
            raise SnnconvError(f"cannot read {path}: {e.__class__.__name__}: {e}") from None
    m, s = _STATS[name]
    return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), m, s, ncls)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_mnist(root: Path, stem: str) -> Path | None:
    for d in (root / "MNIST" / "raw", root / "mnist", root):
        for suffix in (".gz", ""):
            p = d / (stem + suffix)
            if p.is_file():
                return p
    return None


def _load_mnist(root: Path, train: bool) -> Split:
    prefix = "train" if train else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    paths = [_find_mnist(root, s) for s in stems]
    if any(p is None for p in paths):
        for f in _MNIST_FILES:
            if _find_mnist(root, f) is None:
                _download(_MNIST_URL + f + ".gz", root / "MNIST" / "raw" / (f + ".gz"),
                          f"MNIST file {f}[.gz] (looked in {root}/MNIST/raw, {root}/mnist and {root})")
        paths = [_find_mnist(root, s) for s in stems]
    try:
        images, labels = (_read_idx(p) for p in paths)
    except (OSError, ValueError, EOFError) as e:
        raise SnnconvError(f"cannot read MNIST IDX files under {root}: {e}") from None
    m, s = _STATS["mnist"]
    return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), m, s, 10)


def _load_imagefolder(path: Path, train: bool) -> Split:
    try:
        from PIL import Image
    except ImportError:
        raise SnnconvError("imagefolder datasets need Pillow: pip install pillow") from None
    split_dir = path / ("train" if train else "test")
    if not split_dir.is_dir():
        split_dir = path / ("train" if train else "val")
    if not split_dir.is_dir():
        raise SnnconvError(f"imagefolder {path} has no train/ and test/ (or val/) folders")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise SnnconvError(f"imagefolder {split_dir} has no class folders")
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted((split_dir / c).iterdir()):
            if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}:
                xs.append(np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1))
                ys.append(ci)
    if len({x.shape for x in xs}) != 1:
        raise SnnconvError(f"imagefolder {split_dir}: images differ in size; resize them to one size first")
    imgs = torch.from_numpy(np.stack(xs))
    mean = tuple((imgs.float() / 255).mean(dim=(0, 2, 3)).tolist())
    std = tuple((imgs.float() / 255).std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return Split(imgs, torch.tensor(ys), mean, std, len(classes))


def load_bundled_mnist(train: bool) -> Split:
    """The MNIST subset shipped in the package (for the offline embedded default)."""
    d = np.load(BUNDLED_MNIST)
    key = "calib" if train else "test"
    m, s = _STATS["mnist"]
    return Split(torch.from_numpy(d[f"{key}_x"]), torch.from_numpy(d[f"{key}_y"].astype(np.int64)), m, s, 10)


def load_dataset(name: str, data_dir: str | Path | None = None, train: bool = False) -> Split:
    """Load one split of ``name`` (``cifar10``, ``cifar100``, ``mnist``, ``mnist-bundled``, ``imagefolder:<path>``)."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if name.startswith("imagefolder:"):
        return _load_imagefolder(Path(name.split(":", 1)[1]), train)
    if name == "mnist-bundled":
        return load_bundled_mnist(train)
    if data_dir and not root.is_dir():
        raise SnnconvError(f"data dir {root} does not exist")
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, train)
    if name == "mnist":
        return _load_mnist(root, train)
    check_dataset_name(name)
    raise AssertionError("unreachable")


#: the validation split: a fixed part of each training split, never trained on, for every choice
#: (checkpoint, averaging, percentile, search settings, "best method"); the test split is for reporting
VALIDATION_SIZE = {"cifar10": 5000, "cifar100": 5000, "mnist": 5000, "mnist-bundled": 64}
VALIDATION_SEED = 0


def validation_size(name: str, n_train: int) -> int:
    """How many training samples of ``name`` form its validation split (10% for other datasets)."""
    return VALIDATION_SIZE.get(name, max(1, n_train // 10))


def split_validation(train: Split, name: str) -> tuple[Split, Split]:
    """``(train part, validation part)`` of a full training split: the validation part is the first
    :func:`validation_size` samples of a permutation seeded with :data:`VALIDATION_SEED`; both parts
    keep the file order. Deterministic: the same images on every machine and run."""
    n_val = validation_size(name, len(train))
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return train.take(train_idx), train.take(val_idx)


def load_train_val(name: str, data_dir: str | Path | None) -> tuple[Split, Split]:
    """``(training part, validation part)`` of ``name``'s training split (:func:`split_validation`)."""
    return split_validation(load_dataset(name, data_dir, train=True), name)


def load_part(name: str, data_dir: str | Path | None, part: str) -> Split:
    """One part of a dataset: ``train`` (the training split minus validation), ``val`` (validation),
    ``test`` or ``train+val`` (the whole training split)."""
    if part == "test":
        return load_dataset(name, data_dir, train=False)
    if part == "train+val":
        return load_dataset(name, data_dir, train=True)
    tr, val = load_train_val(name, data_dir)
    if part == "train":
        return tr
    if part == "val":
        return val
    raise SnnconvError(f"unknown dataset part '{part}' (known: train, val, test, train+val)")


KNOWN_DATASETS = ("cifar10", "cifar100", "mnist", "mnist-bundled")


def check_dataset_name(name: str) -> None:
    if name not in KNOWN_DATASETS and not name.startswith("imagefolder:"):
        raise SnnconvError(f"unknown dataset '{name}' (known: {', '.join(KNOWN_DATASETS)}, imagefolder:<path>)")


def dataset_info(name: str) -> tuple[int, int]:
    """(in_channels, num_classes) for a named dataset, without loading it."""
    if name in ("mnist", "mnist-bundled"):
        return 1, 10
    if name == "cifar100":
        return 3, 100
    return 3, 10
