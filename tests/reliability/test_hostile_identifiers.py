"""Hostile identifiers and dataset names: rejected before any I/O, nothing written anywhere.

Every public storage verb gets every hostile identifier, on the filesystem and on SecantusDB;
afterwards the whole test folder is byte-for-byte what it was and GridFS holds only what the
test stored. Dataset names go through ``datastack.load`` and ``datastack show``.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest

from datastack.errors import InvalidIdentifierError
from datastack.storage import connect
from datastack.storage.gridfs import GridFSStorageConnector
from tests.reliability.helpers import snapshot

HOSTILE_IDENTIFIERS: list[Any] = [
    "../../etc/passwd",
    "../escape.bin",
    "a/../../escape.bin",
    "a/./b",
    "/etc/passwd",
    "//server/share",
    "C:/Windows/system32",
    "C:\\Windows",
    "a\\..\\..\\escape",
    "a\x00b",
    "a/b\x00.h5",
    "line\nbreak",
    "tab\there",
    "esc\x1b[31mred",
    "del\x7f",
    "rtl\u202eexe.h5",       # right-to-left override (Cf)
    "zero\u200bwidth",       # zero-width space (Cf)
    "ls\u2028sep",           # line separator (Zl)
    "x" * 10_000,
    "/".join(["a"] * 300),
    "s" * 300,
    "CON",
    "nul.txt",
    "a/com1/b",
    "trailing.",
    "trailing ",
    "",
    "a//b",
    ".",
    "..",
    {"$ne": None},
    {"$regex": ".*"},
    ["a"],
    None,
    42,
    b"bytes/name",
]


def _verbs(store: Any) -> list[tuple[str, Any]]:
    return [
        ("set_resource", lambda i: store.set_resource(i, b"evil")),
        ("get_resource", lambda i: store.get_resource(i).read()),
        ("has_resource", store.has_resource),
        ("delete_resource", lambda i: store.delete_resource(i, missing_ok=True)),
        ("list_resources", store.list_resources),
    ]


def _gridfs_names(store: Any) -> list[str]:
    if not isinstance(store, GridFSStorageConnector):
        return []
    return sorted(d["filename"] for d in store.files.find({"_id": {"$exists": True}}))


@pytest.mark.parametrize("identifier", HOSTILE_IDENTIFIERS, ids=lambda v: repr(v)[:30])
def test_hostile_identifier_rejected_by_every_verb(
    storage: str, tmp_path: Path, identifier: Any
) -> None:
    store = connect(storage)
    store.set_resource("good/one.bin", b"good")
    before, names_before = snapshot(tmp_path), _gridfs_names(store)
    for verb, call in _verbs(store):
        if verb == "list_resources" and identifier == "":
            continue  # the empty prefix lists everything; that is its meaning
        with pytest.raises(InvalidIdentifierError) as info:
            call(identifier)
        message = str(info.value)
        assert "invalid" in message, (verb, message)
        assert len(message) < 400, (verb, len(message))  # 10,000 chars are not echoed back
        assert "\x00" not in message and "\x1b" not in message
    assert snapshot(tmp_path) == before
    assert _gridfs_names(store) == names_before
    assert store.get_resource("good/one.bin").read() == b"good"


def test_symlink_inside_the_root_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tmp_path / "store"
    store = connect(str(root))
    store.set_resource("a/x.bin", b"x")
    resources = root / "resources"
    (resources / "evil").symlink_to(outside, target_is_directory=True)
    (resources / "a" / "leak.txt").symlink_to(outside / "secret.txt")
    before = snapshot(tmp_path)
    with pytest.raises(InvalidIdentifierError, match="outside the storage root"):
        store.set_resource("evil/planted.bin", b"evil")
    with pytest.raises(InvalidIdentifierError, match="outside the storage root"):
        store.get_resource("evil/secret.txt")
    with pytest.raises(InvalidIdentifierError, match="outside the storage root"):
        store.get_resource("a/leak.txt")
    assert "evil/secret.txt" not in store.list_resources("")
    assert "a/leak.txt" not in store.list_resources("")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_nfc_and_nfd_spellings_are_one_resource(storage: str) -> None:
    store = connect(storage)
    nfc = unicodedata.normalize("NFC", "caf\u00e9/data.bin")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    store.set_resource(nfd, b"one")
    store.set_resource(nfc, b"two")
    assert store.get_resource(nfd).read() == b"two"
    assert store.list_resources("") == [nfc]


HOSTILE_NAMES: list[Any] = [
    "../x", "/abs", "a\x00b", "UPPER", "x" * 10_000, "-leading", "con", "a/b", "caf\u00e9",
    "", {"$ne": None}, None,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda v: repr(v)[:30])
def test_hostile_dataset_name_rejected_by_load_and_catalog(
    storage: str, tmp_path: Path, name: Any
) -> None:
    import datastack
    from datastack.catalog import open_catalog

    before = snapshot(tmp_path)
    with pytest.raises(InvalidIdentifierError):
        datastack.load(name, storage=storage)
    catalog = open_catalog(storage)
    for call in (catalog.latest, catalog.versions, lambda n: catalog.get(n, 1)):
        with pytest.raises(InvalidIdentifierError):
            call(name)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../x", "a\x00b", "x" * 10_000, "{'$ne': None}"])
def test_hostile_name_on_the_command_line(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from datastack.cli import main

    if "\x00" in name:
        name = name.replace("\x00", "\x01")  # argv cannot carry NUL; use another control char
    storage = str(tmp_path / "store")
    before = snapshot(tmp_path)
    code = main(["show", name, "--storage", storage])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "invalid dataset name" in err and len(err) < 400
    assert snapshot(tmp_path) == before
