"""Dataset definitions that ship with datastack (MNIST, Fashion-MNIST, KMNIST, CIFAR-10).

They are ordinary specs (``datasets.yaml`` next to this module) with the publishers' URLs and
checksums, so ``datastack refresh mnist --spec $(python -c "import datastack.builtin as b;
print(b.builtin_spec_path())")`` works like any other spec.

>>> sorted(load_builtin_specs())
['cifar10', 'fashion-mnist', 'kmnist', 'mnist']
>>> load_builtin_specs()["mnist"].format
'idx'
"""

from __future__ import annotations

from pathlib import Path

from datastack.specs import DatasetSpec, load_spec

_SPEC_FILE = "datasets.yaml"


def builtin_spec_path() -> Path:
    """Path of the YAML file holding the built-in dataset specs."""
    return Path(__file__).with_name(_SPEC_FILE)


def load_builtin_specs() -> dict[str, DatasetSpec]:
    """The built-in dataset specs, by name."""
    return load_spec(builtin_spec_path())


__all__ = ["builtin_spec_path", "load_builtin_specs"]
