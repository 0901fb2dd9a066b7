"""The smallest JSON value a JSON Schema accepts: the mock's structured outputs and tool arguments.

Clients parse what the mock answers with the schema they sent (openai-python's `.parse()`,
LangChain, pydantic-ai, instructor), so the value must validate, and a small one is the
easiest to read in the log. What it does, in the order it looks:

- `$ref` into `$defs` / `definitions` (or any JSON pointer into the root), with its sibling
  keywords; a reference already being expanded fails that branch, so recursive models end
  on the null branch of an Optional or an empty list;
- `default` as given, then `const`, then the first `enum` value;
- `allOf` merged into one schema; `anyOf` / `oneOf` and `type` lists: the first branch that
  works;
- objects with their required properties only (more when `minProperties` asks); arrays
  with `minItems` items (`prefixItems`, `items`, `contains`, `uniqueItems`); a branch fails
  past `maxProperties` / `maxItems`; numbers nearest to 0 within `minimum` / `maximum` /
  exclusive bounds and `multipleOf`; strings padded to `minLength`, sample values for common
  `format`s (date-time, date, time, duration, email, uri, uuid, hostname, ipv4, ipv6), a
  sample of the `pattern` (mock_pattern.py).

The `hint` text goes into the first string that has no format or enum and fits its length
bounds and pattern, so the answer still says what the mock heard.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .mock_pattern import sample

#: Deeper than this, a branch fails: a schema that recurses without a way out has no instance.
MAX_DEPTH = 64
#: Values and string characters one instance may hold: a client's `minItems: 10**9` must not
#: take the process's memory.
BUDGET = 100_000

_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)

#: A sample per `format`; `variant` makes distinct ones for `uniqueItems`.
FORMATS: dict[str, Any] = {
    "date-time": lambda v: (_EPOCH + timedelta(days=v)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "date": lambda v: (_EPOCH + timedelta(days=v)).strftime("%Y-%m-%d"),
    "time": lambda v: f"00:00:{v % 60:02d}",
    "duration": lambda v: f"PT{v}S",
    "email": lambda v: f"mock{v or ''}@example.com",
    "idn-email": lambda v: f"mock{v or ''}@example.com",
    "uri": lambda v: f"https://example.com/{v or ''}",
    "iri": lambda v: f"https://example.com/{v or ''}",
    "uri-reference": lambda v: f"/{v or ''}",
    "uuid": lambda v: f"00000000-0000-4000-8000-{v:012d}",
    "hostname": lambda v: f"host{v}.example.com" if v else "example.com",
    "ipv4": lambda v: f"127.0.0.{1 + v % 254}",
    "ipv6": lambda v: f"::{1 + v:x}",
}


class SchemaError(ValueError):
    """The schema has no instance the generator can find (unsatisfiable, or recursive without an exit)."""


class _NoInstance(Exception):
    """This branch cannot be satisfied; an enclosing `anyOf` may try the next one."""


def instance(schema: Any, hint: str | None = None) -> Any:
    """The smallest value valid against `schema`, with `hint` in its first free string."""
    try:
        return _Generator(schema, hint).value(schema, 0, 0)
    except _NoInstance as exc:
        raise SchemaError(str(exc) or "no value satisfies this schema") from None


class _Generator:
    def __init__(self, root: Any, hint: str | None) -> None:
        self.root = root
        self.hint = hint
        self.hint_free = hint is not None
        self.expanding = _root_refs(root)  # the `$ref`s on the way down, to cut cycles
        self.budget = BUDGET

    def value(self, schema: Any, depth: int, variant: int) -> Any:
        if depth > MAX_DEPTH:
            raise _NoInstance("the schema nests deeper than the mock goes")
        self._spend(1)
        if schema is True or schema is None:
            return None
        if schema is False:
            raise _NoInstance("a `false` schema accepts nothing")
        if not isinstance(schema, dict):
            raise _NoInstance(f"not a schema: {schema!r}")
        if "$ref" in schema:
            return self._ref(schema, depth, variant)
        if "default" in schema and variant == 0:
            return schema["default"]
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][variant % len(schema["enum"])]
        if isinstance(schema.get("allOf"), list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self._resolved(part))
            return self.value(merged, depth + 1, variant)
        for keyword in ("anyOf", "oneOf"):
            if isinstance(schema.get(keyword), list):
                rest = {k: v for k, v in schema.items() if k != keyword}
                return self._first([_merge(rest, branch) for branch in schema[keyword]], depth, variant, keyword)
        kind = schema.get("type", _implied_type(schema))
        if isinstance(kind, list):
            return self._first([{**schema, "type": k} for k in kind], depth, variant, "type")
        make = _MAKERS.get(kind)
        if make is None:
            return None  # no type and nothing that implies one: anything goes, null is smallest
        return make(self, schema, depth, variant)

    def _ref(self, schema: dict[str, Any], depth: int, variant: int) -> Any:
        ref = schema["$ref"]
        if ref in self.expanding:
            raise _NoInstance(f"{ref} refers to itself with no way out (no null branch, no empty list)")
        target = self._lookup(ref)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        self.expanding.append(ref)
        try:
            return self.value(_merge(target, siblings) if siblings else target, depth + 1, variant)
        finally:
            self.expanding.pop()

    def _lookup(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _NoInstance(f"only local references are supported, not {ref!r}")
        node = self.root
        for token in filter(None, ref[1:].split("/")):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise _NoInstance(f"unresolvable reference {ref}")
        return node

    def _resolved(self, schema: Any) -> Any:
        """A branch to merge: a plain `$ref` is looked up so its keywords merge with the others."""
        if isinstance(schema, dict) and set(schema) == {"$ref"} and schema["$ref"] not in self.expanding:
            return self._lookup(schema["$ref"])
        return schema

    def _first(self, branches: list[Any], depth: int, variant: int, keyword: str) -> Any:
        reasons = []
        for branch in branches:
            hint_free = self.hint_free
            try:
                return self.value(branch, depth + 1, variant)
            except _NoInstance as exc:
                self.hint_free = hint_free
                reasons.append(str(exc))
        raise _NoInstance(f"no branch of {keyword} works: " + "; ".join(reasons))

    def _spend(self, units: int) -> None:
        self.budget -= units
        if self.budget < 0:
            raise _NoInstance(f"the instance would be larger than the mock builds ({BUDGET:,} values and characters)")

    # -- one maker per type ---------------------------------------------------------------

    def object(self, schema: dict[str, Any], depth: int, variant: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for name in schema.get("required") or []:
            if name not in out:
                out[name] = self.value(properties.get(name, extra), depth + 1, 0)
        wanted = int(schema.get("minProperties", 0))
        self._spend(wanted)
        for name, sub in properties.items():
            if len(out) >= wanted:
                break
            if name not in out:
                out[name] = self.value(sub, depth + 1, 0)
        if len(out) < wanted and extra is not False:
            for i in range(wanted - len(out)):
                out[f"key{i}"] = self.value(extra, depth + 1, 0)
        if len(out) > schema.get("maxProperties", len(out)):
            raise _NoInstance("the object needs more properties than maxProperties allows")
        return out

    def array(self, schema: dict[str, Any], depth: int, variant: int) -> list[Any]:
        items = schema.get("items")
        prefix = schema.get("prefixItems") or (items if isinstance(items, list) else [])
        rest = schema.get("additionalItems", True) if isinstance(items, list) else (True if items is None else items)
        contains = schema.get("contains")
        containing = int(schema.get("minContains", 1)) if contains is not None else 0
        count = max(int(schema.get("minItems", 0)), containing)
        if count > schema.get("maxItems", count):
            raise _NoInstance("the array needs more items than maxItems allows")
        self._spend(count)
        unique = bool(schema.get("uniqueItems"))
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else rest
            if i < containing:
                sub = _merge(self._resolved(sub), self._resolved(contains))
            out.append(self.value(sub, depth + 1, i if unique else 0))
        if unique and len({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in out}) < len(out):
            raise _NoInstance("cannot make the array's items distinct")
        return out

    def string(self, schema: dict[str, Any], depth: int, variant: int) -> str:
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        pattern, fmt = schema.get("pattern"), schema.get("format")
        free = self.hint_free and self.hint is not None and fmt is None
        candidates = [self.hint] if free else []
        if fmt in FORMATS:
            candidates.append(FORMATS[fmt](variant))
        if pattern is not None and (matching := sample(pattern)) is not None:
            candidates.append(matching)
        self._spend(low)
        candidates.append((str(variant) if variant else "").ljust(low, "x"))
        for text in candidates:
            if len(text) < low or (high is not None and len(text) > high):
                continue
            if pattern is not None and not _matches(pattern, text):
                continue
            if free and text is self.hint:
                self.hint_free = False
            return text
        limits = {k: schema[k] for k in ("minLength", "maxLength", "pattern", "format") if k in schema}
        raise _NoInstance(f"no sample string fits {limits}")

    def integer(self, schema: dict[str, Any], depth: int, variant: int) -> int:
        return int(_nearest_zero(schema, schema.get("multipleOf") or 1, variant))

    def number(self, schema: dict[str, Any], depth: int, variant: int) -> float | int:
        return _nearest_zero(schema, schema.get("multipleOf"), variant)

    def boolean(self, schema: dict[str, Any], depth: int, variant: int) -> bool:
        return variant % 2 == 1

    def null(self, schema: dict[str, Any], depth: int, variant: int) -> None:
        return None


def _root_refs(root: Any) -> list[str]:
    """References that mean the root itself: `#`, and a definition the root is a copy of (as
    openai-python's strict schemas inline the model they define)."""
    refs = ["#"]
    if isinstance(root, dict):
        core = {k: v for k, v in root.items() if k not in ("$defs", "definitions")}
        for keyword in ("$defs", "definitions"):
            definitions = root.get(keyword)
            if isinstance(definitions, dict):
                refs += [f"#/{keyword}/{name}" for name, schema in definitions.items() if schema == core]
    return refs


_MAKERS = {
    "object": _Generator.object,
    "array": _Generator.array,
    "string": _Generator.string,
    "integer": _Generator.integer,
    "number": _Generator.number,
    "boolean": _Generator.boolean,
    "null": _Generator.null,
}


def _implied_type(schema: dict[str, Any]) -> str | None:
    """The type a schema without `type` means by its keywords (`properties` → object, …)."""
    for keywords, kind in _IMPLIED:
        if not keywords.isdisjoint(schema):
            return kind
    return None


_IMPLIED = (
    (frozenset({"properties", "required", "additionalProperties", "minProperties"}), "object"),
    (frozenset({"items", "prefixItems", "minItems", "contains"}), "array"),
    (frozenset({"minLength", "maxLength", "pattern", "format"}), "string"),
    (frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}), "number"),
)


def _merge(base: Any, extra: Any) -> Any:
    """Two schemas that must both hold, as one: properties and required joined, types intersected."""
    if base is False or extra is False:
        return False
    if base is True or base == {} or not isinstance(base, dict):
        return extra
    if extra is True or not isinstance(extra, dict):
        return base
    merged = {**base, **extra}
    if "properties" in base and "properties" in extra:
        merged["properties"] = {**base["properties"], **extra["properties"]}
    if "required" in base and "required" in extra:
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    if "type" in base and "type" in extra:
        both = _intersect(base["type"], extra["type"])
        merged["type"] = both[0] if len(both) == 1 else both  # [] when nothing satisfies both: it fails
    if "allOf" in base and "allOf" in extra:
        merged["allOf"] = [*base["allOf"], *extra["allOf"]]
    return merged


def _intersect(left: Any, right: Any) -> list[str]:
    """The types both allow, in the left one's order (an integer is a number)."""
    left, right = _as_list(left), _as_list(right)
    both = []
    for kind in left:
        if kind in right:
            both.append(kind)
        elif (kind == "number" and "integer" in right) or (kind == "integer" and "number" in right):
            both.append("integer")
    return list(dict.fromkeys(both))


def _as_list(kind: Any) -> list[Any]:
    return list(kind) if isinstance(kind, list) else [kind]


def _nearest_zero(schema: dict[str, Any], step: float | None, variant: int) -> float | int:
    """The allowed number closest to 0 (plus `variant` steps), within bounds and on `step`'s grid."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    if step:
        first = -math.inf if low is None else math.ceil(low / step)
        if low is not None and low_open and first * step <= low:
            first += 1
        last = math.inf if high is None else math.floor(high / step)
        if high is not None and high_open and last * step >= high:
            last -= 1
        k = first if first > 0 else last if last < 0 else 0
        k += variant if k >= 0 else -variant
        if not first <= k <= last:
            raise _NoInstance(f"no multiple of {step} lies within the bounds")
        value = k * step
    else:
        value = 0.0
        if low is not None and (low > 0 or (low == 0 and low_open)):
            value = low + 1 if low_open else low
        elif high is not None and (high < 0 or (high == 0 and high_open)):
            value = high - 1 if high_open else high
        value += variant
        if low is not None and low_open and high is not None and not low < value < high:
            value = (low + high) / 2
        if (low is not None and (value < low or (low_open and value == low))) or (
            high is not None and (value > high or (high_open and value == high))
        ):
            raise _NoInstance("the number's bounds leave no room")
    return int(value) if float(value).is_integer() else value


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, tighter: Any) -> tuple[float | None, bool]:
    """A bound and whether it is open, from draft 2020-12 numbers or draft 4's boolean flags."""
    value = schema.get(inclusive)
    flag = schema.get(exclusive)
    if isinstance(flag, bool):
        return value, flag and value is not None
    if isinstance(flag, int | float):
        if value is None or tighter(value, flag) == flag:
            return flag, True
    return value, False


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True  # an ECMA pattern Python cannot read: do not hold the answer back for it
