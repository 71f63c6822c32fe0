"""Tables of ``ls``/``status``/``show`` without a terminal library (#22.7: rich dropped): columns
aligned, every cell printed whole (a pipe gets full timestamps and reasons), no markup or
terminal escapes interpreted."""

from __future__ import annotations

import doctest

import pytest

from datastack.cli import _common
from datastack.cli._common import print_table


def test_cells_are_whole_aligned_and_plain(capsys: pytest.CaptureFixture[str]) -> None:
    reason = "RetrievalError: " + "x" * 400 + " [red]not markup[/red] \x1b[31mno escape"
    print_table("status", ["name", "reason"], [["iris", reason], ["mnist-long-name", "-"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "status"
    assert lines[1].index("reason") == lines[3].index("RetrievalError") == len("mnist-long-name  ")
    assert "x" * 400 in lines[3] and "[red]not markup[/red]" in lines[3]
    assert "\x1b" not in "".join(lines)
    assert lines[4].rstrip() == "mnist-long-name  -"


def test_the_documented_example_holds() -> None:
    assert doctest.testmod(_common).failed == 0
