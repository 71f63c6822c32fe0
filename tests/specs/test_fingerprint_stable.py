"""Spec fingerprints do not change across refactors: a changed fingerprint republishes every
dataset of every team catalog on its next refresh. The values were computed by the version of
datastack that published those catalogs (before formats got their own modules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datastack.builtin import load_builtin_specs
from datastack.specs import load_spec

ROOT = Path(__file__).resolve().parents[2]

PINNED = {
    "examples/iris": "63f05ac72b789063492c150d1864df26f91533c03bb1d8df57b3978239ca564e",
    "examples/wine": "ed255edb6a173d07c4a60d729e112ecacb17c3b4ae6b2c7c7b2e51edb719a035",
    "examples/digits": "ec99e4e88da701a123dc242e54f49928b4023a75445ea69483b9d4fce0a36552",
    "builtin/mnist": "c3a028569a557867cdf629b6f75cf65c07931beb8cbafcfb3a85a61035c1ff22",
    "builtin/fashion-mnist": "90cde932108ee9f4f4a22ce2608202a1d391fc5eb08bd83276f71caea16f18c0",
    "builtin/kmnist": "417824ffd65677773e8002fecd4a8c942ae260aed2694d9ce02c88856b14b4d5",
    "builtin/cifar10": "e8adba97a7fe2681b40dd8c563db80fb674b3d4ea778d5d405b5e9d95314702a",
    "inline/h": "8009de394daa41869eb5f2c70a4e14ec0cceeaec2fdc6609c4f7c4d04cecb6b0",
    "inline/z": "e376b557ac09623dc525d1f87641e25e8876944c5915871ed9c5eda46c69ffc8",
    "inline/c": "29bc0c368c948e1fcc09e77db7f24cf49b566bef8614b56c577600e973c883a8",
}

INLINE = """datasets:
  h:
    sources: [{url: "https://x/h.h5", sha256: "%s"}]
    format: hdf5
    hdf5: {samples: images, targets: labels}
    compression: lzf
    extra: {a: [1, 2], b: {c: d}}
  z:
    sources: [{url: "https://x/z.npz", md5: "%s", split: train}]
    format: npz
    npz: {samples: x, targets: null}
  c:
    sources: [{url: "https://x/c.csv", md5: "%s"}]
    format: csv
    csv: {header: false, target: 0, categorical: [1, 2], missing: ["-"], delimiter: ";",
          skip_rows: 2}
    splits: {train: 0.7, test: 0.3}
    stratify: true
    seed: 5
""" % ("a" * 64, "b" * 32, "c" * 32)


def _all() -> dict[str, str]:
    out = {f"examples/{n}": s.fingerprint() for n, s in
           load_spec(ROOT / "examples" / "datasets.yaml").items()}
    out.update({f"builtin/{n}": s.fingerprint() for n, s in load_builtin_specs().items()})
    out.update({f"inline/{n}": s.fingerprint() for n, s in load_spec(INLINE).items()})
    return out


@pytest.mark.parametrize("key", sorted(PINNED))
def test_fingerprint_unchanged(key: str) -> None:
    assert _all()[key] == PINNED[key]


def test_fingerprint_sees_options() -> None:
    base = load_spec(INLINE)["c"]
    other = load_spec(INLINE.replace('missing: ["-"]', 'missing: ["--"]'))["c"]
    assert base.fingerprint() != other.fingerprint()
