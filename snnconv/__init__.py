"""snnconv: ANN-to-SNN conversion toolchain."""
__version__ = "0.1.0"
