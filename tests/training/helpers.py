"""Module-level functions for the training tests (picklable for spawn and forkserver)."""

from __future__ import annotations

from typing import Any


def double(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return (sample[0] * 2, *sample[1:])


def first_of(batch: list[tuple[Any, ...]]) -> list[int]:
    """A collate_fn that keeps the sample ids (first column) of a batch as plain ints."""
    return [int(sample[0]) for sample in batch]
