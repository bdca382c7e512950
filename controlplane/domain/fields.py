"""Bad input that names its field: the shared shape of policy, snapshot and task-file errors.

Every boundary that reads a JSON document reports the JSON path of the first
bad field (``targets[1].provider: must be one of ...``); they share this
base so callers (the CLI's exit 65, the API's 422 ``field``) treat them alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["FieldError", "json_path", "json_type_name", "loads_document", "read_document"]

_T = TypeVar("_T")


class FieldError(ValueError):
    """``path`` is the JSON path of the bad field (``""``: the whole document)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def json_type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, for "must be an object, not array"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_path(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else key


def loads_document(text: str | bytes, *, max_bytes: int, error: type[FieldError]) -> Any:
    """Decode a JSON document of at most ``max_bytes``; NaN and Infinity are refused (they are not JSON).

    A document too large or not JSON raises ``error`` at the root path (``""``),
    so each boundary reports it as its own kind of bad input.
    """
    if len(text) > max_bytes:
        raise error("", f"is larger than {max_bytes} bytes")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise error("", f"is not valid JSON: {exc}") from exc


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def read_document(path: Path | str, parse: Callable[[bytes], _T], *, error: type[FieldError]) -> _T:
    """``parse`` a file's bytes; an unreadable file, or an error of the whole document, names the file.

    An error at a field inside the document keeps its JSON path as it is.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error("", f"cannot read {path}: {exc.strerror}") from exc
    try:
        return parse(raw)
    except error as exc:
        if exc.path:
            raise
        raise error("", f"{path} {exc.message}") from exc
