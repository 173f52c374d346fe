"""JSON text from clients, parsed within budgets: nesting depth is bounded *before* ``json.loads`` runs.

``json.loads`` recurses once per array or object level, and so does everything that walks the result
(jsonschema, pydantic, our codecs): a body nested 10,000 deep raises RecursionError in the parser, one
nested 900 deep parses and crashes whatever walks it next. The scanner here measures the nesting of the
raw text at C speed (strings removed by one regex, every other byte but brackets deleted by
``bytes.translate``, then innermost ``[]`` pairs removed once per level), so a too-deep body is refused
without building anything. Both the control plane and the runtime (which imports only ``core``) use it.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

MAX_DEPTH = 64
"""Arrays and objects nested at most this deep: a rank-8 tensor inside an OIP envelope is 11 deep, and
numpy itself stops at 64 dimensions."""

_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes(range(256)).replace(b"{", b"[").replace(b"}", b"]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class JsonTextError(ValueError):
    """The text is not JSON, or over a budget. ``message`` is one line with no user text in it;
    ``pointer`` (RFC 6901) says where, ``""`` for the whole document."""

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.pointer = pointer


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects in ``data`` nest deeper than ``limit`` (brackets inside strings do not
    count). Unbalanced text is judged by what it could reach; ``json.loads`` then reports it as malformed.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case: a small document cannot be that deep
    brackets = _STRINGS.sub(b"", data).translate(_BRACKETS, _NOT_BRACKETS)
    for level in range(limit + 1):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # only unmatched brackets left: ``]]]...[[[``
            return level + shorter.count(b"[") > limit
        brackets = shorter
    return True


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of client text, nesting checked first. NaN and Infinity tokens parse (validators
    refuse them with a pointer); integers of more than 4,300 digits are refused as Python refuses them.
    Raises ``JsonTextError`` (a ValueError) with a one-line message."""
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    if too_deep(raw, max_depth):
        raise JsonTextError(f"JSON nested deeper than {max_depth} levels of arrays and objects")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise JsonTextError(f"the JSON text is not UTF-8 (byte {exc.start})") from None
    except ValueError:  # int('9' * 5000): Python's integer-string limit
        raise JsonTextError("a number in the JSON text has too many digits") from None
    except RecursionError:  # unreachable within the depth budget; kept as a last line
        raise JsonTextError(f"JSON nested deeper than {max_depth} levels of arrays and objects") from None


def pointer(*parts: str | int, limit: int = 64) -> str:
    """An RFC 6901 pointer; each part cut to ``limit`` characters (``…``), so a key of a megabyte
    never travels into an error message."""
    out = ""
    for part in parts:
        text = str(part)
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        out += "/" + text.replace("~", "~0").replace("/", "~1")
    return out


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40


def short(value: Any, limit: int = 60) -> str:
    """``repr`` of a client value for a message, at most ``limit`` characters, in time bounded by that
    too (``reprlib`` looks at a few items of a few levels, not at a 5 MB document)."""
    text = repr(value) if isinstance(value, bool | float | None) else _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
