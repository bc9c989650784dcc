"""Standard JSON only, read with the file and line of every problem: Python's `json` also accepts `NaN` and
`Infinity` (which no other JSON reader does, and which would train on a non-number), keeps lone UTF-16 surrogates
from `\\ud800` escapes (which no tokenizer can encode), and recurses once per nesting level (a deeply nested line
ends in RecursionError). Each of these is a DataError here instead of a crash later."""

from __future__ import annotations

import json
from typing import Any

from lmtune.errors import DataError


class _Constant:
    """What a bare NaN/Infinity/-Infinity parses to, so that `check` can say in which field it stood."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


DECODER = json.JSONDecoder(parse_constant=_Constant)
_DEEP_HINT = "JSON nested this deeply is not a training record; flatten the structure"


def loads(text: str, source: str, line: int, hint: str | None = None) -> Any:
    """`json.loads(text)` (JSONDecodeError propagates for the caller's message), then `check`."""
    try:
        value = DECODER.decode(text)
    except RecursionError:
        raise DataError(source, line, None, "JSON nested too deeply to read", hint=_DEEP_HINT) from None
    check(value, source, line)
    return value


def raw_decode(text: str, pos: int, source: str, line: int) -> tuple[Any, int]:
    """`JSONDecoder.raw_decode` for an element of a JSON array that starts on `line`, then `check`."""
    try:
        value, end = DECODER.raw_decode(text, pos)
    except RecursionError:
        raise DataError(source, line, None, "JSON nested too deeply to read", hint=_DEEP_HINT) from None
    check(value, source, line)
    return value, end


def check(value: Any, source: str, line: int) -> None:
    """Raise a DataError naming the field of the first non-standard number or lone surrogate in `value`."""
    found = _first_problem(value, "")
    if found is None:
        return
    field, problem, hint = found
    raise DataError(source, line, field or None, problem, hint=hint)


def _first_problem(value: Any, path: str) -> tuple[str, str, str] | None:
    # An explicit stack, not recursion: the value may be nested as deeply as the decoder allowed.
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, _Constant):
            return where, f"{item.literal} is not a JSON number", "write a finite number, or null for no value"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                problem = f"a lone UTF-16 surrogate (\\u{ord(item[error.start]):04x}) at character {error.start}"
                return where, problem, "the text was cut inside an emoji or other character; fix or drop it"
        elif isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                stack.append((f"{where}.{key}" if where else str(key), sub))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
    return None
