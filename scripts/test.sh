#!/usr/bin/env bash
# Install snnconv with its test extras into the active Python environment and run the test suite.
# torch is pinned to 2.13.0 (CPU build) by pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,nir]"
# Deployment targets for tests/test_nir.py and tests/test_interop.py, --no-deps: they would pull torchvision /
# a CUDA torch beside the pinned CPU torch, and sinabs pins nir <= 1.0.4 (pbr is its version helper)
python -m pip install -q --no-deps spikingjelly==2.0.0 loguru nirtorch==2.6 norse==1.1.0 snntorch==1.0.0 packaging \
    sinabs==3.1.3 pbr
export SNNCONV_DATA_DIR="${SNNCONV_DATA_DIR:-$(cd .. && pwd)/shared/datasets}"
python -m pytest "$@"
