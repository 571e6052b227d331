"""snnconv: ANN-to-SNN conversion toolchain."""
__version__ = "0.1.0"

# The IR's shape inference runs the ANN interpreter, which lives in runtime (runtime -> ir, never ir -> runtime)
from snnconv.ir.graph import register_shape_runner as _register  # noqa: E402
from snnconv.runtime.interpreter import run_ann as _run_ann  # noqa: E402

_register(_run_ann)

# Passes simulate through PassContext.simulator; the default evaluator is the runtime's simulator (passes never
# import it: passes -> runtime.simulator would tie the pass layer to one simulator implementation)
from snnconv.passes.base import PassContext as _PassContext  # noqa: E402
from snnconv.runtime.simulator import Simulator as _Simulator  # noqa: E402

_PassContext.default_simulator = _Simulator
