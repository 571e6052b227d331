"""Build the package's bundled assets: an MNIST subset and the trained MNIST CNN weights.

    python scripts/make_bundled_assets.py --data-dir ../shared/datasets

The subset is 1,000 test images (seeded random choice) + 256 training images for calibration.
The weights are trained by the same code as `snnconv train --model mnist_cnn --dataset mnist`.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from snnconv.api import train
from snnconv.data.datasets import BUNDLED_MNIST, load_dataset

ap = argparse.ArgumentParser()
ap.add_argument("--data-dir", default="../shared/datasets")
ap.add_argument("--epochs", type=int, default=5)
args = ap.parse_args()

test = load_dataset("mnist", args.data_dir, train=False).subset(1000, seed=0)
calib = load_dataset("mnist", args.data_dir, train=True).subset(256, seed=1)
np.savez_compressed(BUNDLED_MNIST, test_x=test.images.numpy(), test_y=test.labels.numpy().astype(np.uint8),
                    calib_x=calib.images.numpy(), calib_y=calib.labels.numpy().astype(np.uint8))
out = Path(BUNDLED_MNIST).parent / "mnist_cnn-mnist.pt"
res = train("mnist_cnn", "mnist", args.data_dir, epochs=args.epochs, out=str(out))
# keep only what conversion needs: the training state file is not shipped
Path(str(out).replace(".pt", ".state.pt")).unlink(missing_ok=True)
ck = torch.load(out, weights_only=True)
ck.pop("history", None)
torch.save(ck, out)
print(res)
