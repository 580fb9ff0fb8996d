"""YAML with the line of every field, for errors that say where (pure).

``load_with_lines`` returns the document and a map from each field's path, written
as the errors write it (``steps[2].wait_for.within``), to its 1-based line. Aliases
are refused, as in the workspace configuration (a "billion laughs" document).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from polku.core.errors import ConfigError

MAX_DOCUMENT_BYTES = 1 << 20


MAX_DEPTH = 64
"""Nesting of mappings and lists: far beyond any real document, and far below what
would exhaust the loader's recursion (a 3,000-deep list crashed it)."""


def check_shape(text: str | bytes, filename: str) -> None:
    """Refuse, from the parser's event stream (flat: no recursion, and stopping at the
    first offence), what would hurt the loader: aliases (a "billion laughs" document)
    and nesting deeper than ``MAX_DEPTH``. Raises ``yaml.YAMLError`` for text that is
    not YAML at all, like the loader would."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark else 0
            raise ConfigError(f"{filename}:{line}: YAML aliases (*name) are not allowed", file=filename, line=line)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise ConfigError(f"{filename}:{line}: nested deeper than {MAX_DEPTH} levels", file=filename, line=line)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_with_lines(text: str | bytes, filename: str) -> tuple[Any, dict[str, int]]:
    import yaml

    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{filename}: larger than {MAX_DOCUMENT_BYTES} bytes", file=filename)
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{filename}: not UTF-8 text ({error.reason} at byte {error.start})", file=filename
            ) from None
    try:
        check_shape(text, filename)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        raise ConfigError(
            f"{where}: not valid YAML: {getattr(error, 'problem', error)}",
            file=filename,
            line=mark.line + 1 if mark else None,
        ) from None
    lines: dict[str, int] = {}
    if node is None:
        return None, lines
    _walk(node, "", lines)
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:  # pragma: no cover - compose accepted it
        raise ConfigError(f"{filename}: not valid YAML: {error}", file=filename) from None
    try:
        msgspec.json.encode(data)
    except (TypeError, UnicodeEncodeError):
        raise ConfigError(
            f"{filename}: holds a value JSON cannot carry (a date, binary, or an invalid string)", file=filename
        ) from None
    return data, lines


def _walk(node: Any, path: str, lines: dict[str, int]) -> None:
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            child = f"{path}.{name}" if path else name
            lines[child] = key.start_mark.line + 1
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, f"{path}[{index}]", lines)


def line_of(lines: Mapping[str, int], path: str) -> int | None:
    """The line of ``path`` or of its nearest parent in the document."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("")


def located(filename: str, lines: Mapping[str, int], path: str, message: str) -> ConfigError:
    """A ``ConfigError`` whose message starts ``file:line:`` (the line of ``path``
    or of its nearest parent)."""
    line = line_of(lines, path)
    where = f"{filename}:{line}" if line else filename
    return ConfigError(f"{where}: {message}", file=filename, line=line, field=path or None)
