"""Parsing ``key=value`` text from the command line and mechanism specs."""

from __future__ import annotations

import json
from collections.abc import Iterable
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


def parse_assignments(texts: Iterable[str], what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (:func:`parse_assignment`); a key given twice is a
    ``ValueError`` (the last one would win silently)."""
    values: dict[str, Any] = {}
    for text in texts:
        key, value = parse_assignment(text, what)
        if key in values:
            raise ValueError(f"{what}: {key} is given twice ({values[key]!r} and {value!r}); give it once")
        values[key] = value
    return values


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook`` that refuses an object with a key given twice."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key(s) {twice} are given twice in one object; give each once")
    return dict(pairs)
