"""A folder source's tar headers are tarfile's bytes (the sha256 that pins a folder depends on
them), whether built by tarfile or patched from a template (short ASCII names)."""

from __future__ import annotations

import random
import string
import tarfile

import pytest

from datastack.retrieval import folder
from datastack.retrieval.folder import FolderMember, _header, _tar_header

NAMES = [
    "a", "cat/001.jpg", "x" * 100, "y" * 101, "d/" + "é" * 10, "sp ace/%&'\"`$.png", "\x01ctl",
    "a\\b", "z" * 99 + "/", "ü.png", "class9/" + "n" * 93,
]
SIZES = [0, 1, 511, 512, 123_456_789, 8**11 - 1, 8**11, 10**12]


def test_patched_headers_are_tarfiles_bytes() -> None:
    rng = random.Random(7)
    names = NAMES + ["".join(rng.choice(string.printable) for _ in range(rng.randint(1, 120)))
                     for _ in range(300)]
    for name in names:
        for size in SIZES:
            assert _header(FolderMember(name, "", size, 0)) == _tar_header(name, size), (
                name, size)


def test_the_template_is_used_for_short_ascii_names() -> None:
    folder._TEMPLATE.clear()
    _header(FolderMember("a", "", 0, 0))
    assert folder._TEMPLATE == [folder._make_template()] and folder._TEMPLATE[0] is not None
    header = _header(FolderMember("cat/1.jpg", "", 5, 0))
    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    assert (info.name, info.size, info.mtime, info.mode) == ("cat/1.jpg", 5, 0, 0o644)


def test_without_a_template_tarfile_builds_every_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder, "_TEMPLATE", [None])
    assert _header(FolderMember("cat/1.jpg", "", 5, 0)) == _tar_header("cat/1.jpg", 5)
