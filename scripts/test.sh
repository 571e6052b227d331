#!/usr/bin/env bash
# Install snnconv with its test extras into the active Python environment and run the test suite.
# torch is pinned to 2.13.0 (CPU build) by pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev]"
export SNNCONV_DATA_DIR="${SNNCONV_DATA_DIR:-$(cd .. && pwd)/shared/datasets}"
python -m pytest "$@"
