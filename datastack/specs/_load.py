"""Reading a spec: a bounded regular file, safe YAML without aliases or duplicate keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datastack.specs._parse import _error, parse_spec
from datastack.specs.model import DatasetSpec

#: Largest spec file read (bytes): a spec is a small text file; anything bigger is a mistake.
MAX_SPEC_BYTES = 1024 * 1024


def _read_spec_file(path: Path) -> str:
    """The text of a spec file: a regular file of at most :data:`MAX_SPEC_BYTES`, UTF-8."""
    import stat

    origin = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _error(
                origin, None, None, "not a regular file (a device, FIFO or folder?); give the "
                "path of a YAML spec file",
            )
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise _error(origin, None, None, f"cannot read spec file: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise _error(
            origin, None, None, f"spec file is larger than {MAX_SPEC_BYTES} bytes; is it a spec?"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(origin, None, None, f"spec file is not UTF-8 text ({exc.reason})") from None


def _yaml_loader(origin: str) -> Any:
    """A ``yaml.SafeLoader`` that refuses aliases and duplicate keys, naming the lines."""
    import yaml

    class SpecLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _error(
                    origin, None, None,
                    f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                    "allowed in specs (they can expand without bound); write the value out",
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: reported by the validation
                    continue
                if first is not None:
                    raise _error(
                        origin, None, None,
                        f"duplicate key {key!r} on lines {first} and {line}; keep one",
                    )
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            try:
                return super().construct_yaml_int(node)
            except ValueError:  # Python refuses to convert 4,300+ digits
                raise _error(
                    origin, None, None,
                    f"line {node.start_mark.line + 1}: an integer of {len(node.value)} "
                    "characters; expected a number of at most 4,300 digits (a seed or a "
                    "count fits in 20)",
                ) from None

    SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)
    return SpecLoader


def load_spec(path_or_text: str | os.PathLike[str]) -> dict[str, DatasetSpec]:
    """Load a YAML spec from a file path or from YAML text.

    A ``pathlib.Path`` (or a one-line string naming an existing file or ending in ``.yaml`` /
    ``.yml``) is read as a file whose folder anchors relative paths; any other string is parsed
    as YAML text relative to the current directory. Safe YAML only; aliases, duplicate keys
    and files over 1 MiB are refused.
    """
    import yaml

    text: str
    origin = "<string>"
    base_dir: Path | None = None
    is_path = isinstance(path_or_text, os.PathLike) or (
        "\n" not in path_or_text
        and (path_or_text.endswith((".yaml", ".yml")) or os.path.exists(path_or_text))
    )
    if is_path:
        path = Path(path_or_text)
        origin = str(path)
        text = _read_spec_file(path)
        base_dir = path.resolve().parent
    else:
        text = str(path_or_text)
        if len(text) > MAX_SPEC_BYTES:
            raise _error(origin, None, None, f"spec text is larger than {MAX_SPEC_BYTES} bytes")
    try:
        document = yaml.load(text, Loader=_yaml_loader(origin))  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise _error(origin, None, None, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _error(origin, None, None, "YAML nested too deeply to be a spec") from None
    return parse_spec(document, origin, base_dir)


__all__ = ["MAX_SPEC_BYTES", "load_spec"]
