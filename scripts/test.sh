#!/usr/bin/env bash
# Install snnconv with its test extras into the active Python environment and run the test suite.
# torch is pinned to 2.13.0 (CPU build) by pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,nir]"
# NIR peers for tests/test_nir.py, --no-deps: they would pull torchvision / a CUDA torch beside the pinned CPU torch
python -m pip install -q --no-deps spikingjelly==2.0.0 loguru nirtorch==2.6 norse==1.1.0 snntorch==1.0.0 packaging
export SNNCONV_DATA_DIR="${SNNCONV_DATA_DIR:-$(cd .. && pwd)/shared/datasets}"
python -m pytest "$@"
