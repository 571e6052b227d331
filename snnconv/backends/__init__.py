"""Backends: write an IR graph in another format (one module per target, e.g. ``onnx_export``)."""
