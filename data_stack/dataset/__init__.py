"""Namespace of the original ``data_stack.dataset`` package (empty, as in 0.0.13)."""
