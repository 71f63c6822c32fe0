"""Who is alive on this host: process tags that survive pid reuse.

A tag is ``<pid>.<start ticks>`` (the process start time from ``/proc/<pid>/stat``), so a
reused pid does not pass for the process that died. Leases record it in their owner string;
temporary folders carry it in their name; both can then be reclaimed at once when their
process is gone.

>>> is_gone(process_tag())
False
"""

from __future__ import annotations

import os


def start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_tag(pid: int | None = None) -> str:
    """``pid.start`` of this process (or of ``pid``); just ``pid`` where /proc is missing."""
    pid = os.getpid() if pid is None else pid
    start = start_ticks(pid)
    return f"{pid}.{start}" if start else str(pid)


def is_gone(tag: str) -> bool:
    """Whether the process a tag names (on this host) no longer runs; False when unsure."""
    pid_text, _, start = tag.partition(".")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return bool(start) and start_ticks(pid) not in (None, start)


__all__ = ["is_gone", "process_tag", "start_ticks"]
