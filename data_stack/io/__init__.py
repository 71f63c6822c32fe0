"""Namespace of the original ``data_stack.io`` package (empty, as in 0.0.13)."""
