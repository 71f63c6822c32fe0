"""Fixtures of the living-datasets tests: the fault-injection suite's servers and storages."""

from tests.reliability.conftest import _fresh_block_cache, own_mongo, storage

__all__ = ["_fresh_block_cache", "own_mongo", "storage"]
