"""snnconv: ANN-to-SNN conversion toolchain."""
__version__ = "0.1.0"

# The IR's shape inference runs the ANN interpreter, which lives in runtime (runtime -> ir, never ir -> runtime)
from snnconv.ir.graph import register_shape_runner as _register  # noqa: E402
from snnconv.runtime.interpreter import run_ann as _run_ann  # noqa: E402

_register(_run_ann)
