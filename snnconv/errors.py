"""User-facing errors: the CLI prints these as one line on stderr and exits non-zero."""


class SnnconvError(Exception):
    """An error caused by user input (bad path, name, config, checkpoint or graph)."""


class UnsupportedOpError(SnnconvError):
    """One or more graph operations have no IR/spiking equivalent.

    ``ops`` lists ``(op, location)`` pairs so the message can name every offender at once.
    """

    def __init__(self, ops: list[tuple[str, str]]):
        self.ops = ops
        listed = "; ".join(f"{op} at {loc}" for op, loc in ops)
        super().__init__(f"unsupported op(s): {listed}")
