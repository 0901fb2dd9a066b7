"""A short string that a regular expression matches, for schemas with a string `pattern`.

It walks the parse tree of Python's own regex parser (`re._parser`, private but stable
since 3.11): the fewest repetitions, the first branch, the first character of each class.
Look-arounds and back-references are not modelled; the caller checks the result with
`re.search` and treats a miss as "no sample".
"""

from __future__ import annotations

import re
from typing import Any

try:
    from re import _parser as _sre  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a Python without it: patterns fall back to the other candidates
    _sre = None

#: Longer samples are not built: a pattern like `a{1000000000}` must not take the memory.
MAX_LENGTH = 100_000
#: What stands for a character class: the first candidate that the class accepts.
_CANDIDATES = "a0A _-.x"
_CATEGORIES = {
    "CATEGORY_DIGIT": str.isdigit,
    "CATEGORY_NOT_DIGIT": lambda c: not c.isdigit(),
    "CATEGORY_WORD": lambda c: c.isalnum() or c == "_",
    "CATEGORY_NOT_WORD": lambda c: not (c.isalnum() or c == "_"),
    "CATEGORY_SPACE": str.isspace,
    "CATEGORY_NOT_SPACE": lambda c: not c.isspace(),
}


class _Unsupported(Exception):
    pass


def sample(pattern: str) -> str | None:
    """A string the pattern probably matches, or None when the pattern is beyond this sampler."""
    if _sre is None:
        return None
    try:
        return _emit(_sre.parse(pattern))
    except (_Unsupported, re.error):
        return None


def _emit(items: Any) -> str:
    out = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name in ("NOT_LITERAL", "ANY"):
            out.append(next(c for c in _CANDIDATES if name == "ANY" or ord(c) != arg))
        elif name == "IN":
            out.append(_class_member(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            piece = _emit(sub)
            if len(piece) * low > MAX_LENGTH:
                raise _Unsupported("a sample this long")
            out.append(piece * low)
        elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
            out.append(_emit(arg[-1]))
        elif name == "BRANCH":
            out.append(_emit(arg[1][0]))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise _Unsupported(name)
    return "".join(out)


def _class_member(items: list[Any]) -> str:
    negated = bool(items) and str(items[0][0]) == "NEGATE"
    members = items[1:] if negated else items
    for candidate in _CANDIDATES:
        if _in_class(candidate, members) != negated:
            return candidate
    if not negated and members and str(members[0][0]) in ("LITERAL", "RANGE"):
        first = members[0][1]
        return chr(first if isinstance(first, int) else first[0])
    raise _Unsupported("character class")


def _in_class(char: str, members: list[Any]) -> bool:
    code = ord(char)
    for op, arg in members:
        name = str(op)
        if name == "LITERAL" and arg == code:
            return True
        if name == "RANGE" and arg[0] <= code <= arg[1]:
            return True
        if name == "CATEGORY" and _CATEGORIES.get(str(arg), lambda c: False)(char):
            return True
    return False
