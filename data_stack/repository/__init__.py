"""Namespace of the original ``data_stack.repository`` package (empty, as in 0.0.13)."""
