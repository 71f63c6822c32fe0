"""Every DATASTACK_* setting is validated with a clear message (#26.16, #26.20): nan, inf,
huge, negative and garbage values are ConfigurationErrors naming the variable, never a raw
ValueError, a hang or a silent fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from datastack._env import env_bool, env_int, env_size
from datastack.errors import ConfigurationError
from tests.fields.realdata import write_spec

BAD_FLOATS = ["nan", "NaN", "inf", "-inf", "1e308", "-1", "0", "garbage", "1,5",
              "\uff11\uff12", "9" * 5000]


@pytest.mark.parametrize("raw", BAD_FLOATS)
def test_probe_timeout_refuses_non_finite_negative_huge_and_garbage(raw: str) -> None:
    from datastack.offline import PROBE_TIMEOUT_ENV, _probe_timeout

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv(PROBE_TIMEOUT_ENV, raw)
        with pytest.raises(ConfigurationError) as info:
            _probe_timeout()
    finally:
        mp.undo()
    message = str(info.value)
    assert "DATASTACK_PROBE_TIMEOUT" in message and "expected a finite number" in message
    assert len(message) < 300


def test_probe_timeout_accepts_a_sane_value_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from datastack.offline import PROBE_TIMEOUT_ENV, PROBE_TIMEOUT_S, _probe_timeout

    monkeypatch.setenv(PROBE_TIMEOUT_ENV, " 0.5 ")
    assert _probe_timeout() == 0.5
    monkeypatch.setenv(PROBE_TIMEOUT_ENV, "")
    assert _probe_timeout() == PROBE_TIMEOUT_S


@pytest.mark.parametrize("raw", ["abc", "1e3", "-5", "0", "1.5", "nan", "9" * 5000, "\uff11\uff10"])
def test_integer_settings_refuse_garbage(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"DATASTACK_MAX_COLUMNS=.*whole number"):
        env_int("DATASTACK_MAX_COLUMNS", 100, minimum=1, environ={"DATASTACK_MAX_COLUMNS": raw})


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_boolean_settings_refuse_garbage(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="DATASTACK_OFFLINE"):
        env_bool("DATASTACK_OFFLINE", False, {"DATASTACK_OFFLINE": raw})
    assert env_bool("DATASTACK_OFFLINE", False, {"DATASTACK_OFFLINE": "ON"}) is True
    assert env_bool("DATASTACK_ISOLATE", True, {"DATASTACK_ISOLATE": "0"}) is False


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "1e400", "lots", "12Q"])
def test_size_settings_refuse_garbage(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="DATASTACK_CACHE_BYTES"):
        env_size("DATASTACK_CACHE_BYTES", 0, {"DATASTACK_CACHE_BYTES": raw})
    assert env_size("DATASTACK_CACHE_BYTES", 0, {"DATASTACK_CACHE_BYTES": "2K"}) == 2048


def test_ratio_setting_is_a_finite_float() -> None:
    from datastack.formats.archives import limits_from_env

    for raw in ("nan", "inf", "0", "-2", "x"):
        with pytest.raises(ConfigurationError, match="DATASTACK_MAX_EXPANSION_RATIO"):
            limits_from_env({"DATASTACK_MAX_EXPANSION_RATIO": raw})
    assert limits_from_env({"DATASTACK_MAX_ARCHIVE_MEMBERS": "7"}).max_members == 7


def test_http_timeout_setting_refuses_non_finite() -> None:
    from datastack.retrieval.http import _timeouts_from_env

    for raw in ("nan,1", "1,inf", "-1,5", "1", "1,2,3", "a,b"):
        with pytest.raises(ConfigurationError, match="DATASTACK_HTTP_TIMEOUT"):
            _timeouts_from_env(raw)
    assert _timeouts_from_env("3,4") == (3.0, 4.0)
    assert _timeouts_from_env(None) == (10.0, 60.0)


@pytest.mark.parametrize("setting", [
    "DATASTACK_MAX_COLUMNS=abc", "DATASTACK_MAX_SOURCE_BYTES=-1",
    "DATASTACK_MAX_EXPANDED_BYTES=1e3", "DATASTACK_ISOLATE=perhaps",
])
def test_a_bad_setting_read_at_import_is_a_clear_cli_error(setting: str, tmp_path: Path) -> None:
    name, value = setting.split("=", 1)
    table = tmp_path / "t.csv"
    table.write_text("a,y\n1,0\n2,1\n")
    spec = write_spec(tmp_path / "s.yaml", "t", [table], "    format: csv\n")
    env = {**os.environ, name: value}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from datastack.cli import main; sys.exit(main())",
         "refresh", "--spec", str(spec), "--storage", str(tmp_path / "store"),
         "--engine", "local"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode in (1, 2), done.stderr
    assert name in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("raw", ["nan", "inf", "1e308", "-1"])
def test_load_with_a_bad_probe_timeout_fails_at_once_not_hangs(
    raw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage is down (nothing listens on the port) and the cache is on: the probe
    timeout is read, and a bad one is refused before any connection is tried."""
    import datastack

    monkeypatch.setenv("DATASTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "1M")
    monkeypatch.delenv("DATASTACK_OFFLINE", raising=False)
    monkeypatch.setenv("DATASTACK_PROBE_TIMEOUT", raw)
    with pytest.raises(ConfigurationError, match="DATASTACK_PROBE_TIMEOUT"):
        datastack.load("anything", storage="mongodb://127.0.0.1:9/db")
