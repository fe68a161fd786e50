"""Parsing ``key=value`` text from the command line and mechanism specs."""

from __future__ import annotations

import json
from typing import Any


def parse_value(text: str) -> Any:
    """``"true"`` -> True, ``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"none"`` -> None, ``"1,2"`` -> [1, 2], a JSON object or
    array (``'{"player_1": "sign_flip"}'``) -> its value, else the text."""
    if text.strip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{text!r} starts like JSON but is not valid JSON: {error}") from None
    if "," in text:
        return [parse_value(part) for part in text.split(",")]
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return stripped


def parse_assignment(text: str, what: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, parse_value(value))``; ``what`` names the option in the error."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{what}: expected key=value, got {text!r}")
    try:
        return key.strip(), parse_value(value)
    except ValueError as error:
        raise ValueError(f"{what}: {key.strip()}: {error}") from None
