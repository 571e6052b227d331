"""Passes over the IR. Importing this package registers every built-in pass."""
from snnconv.passes import fold_batchnorm, leak_compensation, threshold_balance  # noqa: F401 - registration
from snnconv.passes import calibration, dequantize, sfn, signed, srp  # noqa: F401 - registration
from snnconv.passes import hseo, maxpool_mode, maxpool_tree, prune, quantize, robustness  # noqa: F401,E402 - registration
from snnconv.passes import spiking_activations, spiking_transformer  # noqa: F401,E402 - registration
from snnconv.passes.base import PASSES, Pass, PassContext, Pipeline, make_pass, register_pass

__all__ = ["PASSES", "Pass", "PassContext", "Pipeline", "make_pass", "register_pass"]
