"""Which preprocessing steps a request gets, read from `X-Study-Preprocess` or an alias's
`preprocess` list, and what each does to one text.

The steps always run in one order, whatever order they were listed in: `whitespace`, `pii`,
`truncate`, `template`. Personal data is removed before the text is cut, so that a cut can
never leave half an address behind, and the operator's template goes around the finished input.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .pii import scrub

#: What a template's text must hold: where the user's input goes.
USER_INPUT = "{user_input}"
STEP_NAMES = ("whitespace", "pii", "truncate", "template")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")
_LINE_EDGES = re.compile(r"[^\S\n]*\n[^\S\n]*")


class PreprocessError(ValueError):
    """A list of steps that cannot be run; the message says which item and why."""


@dataclass(frozen=True, slots=True)
class Steps:
    """The steps one request gets; `truncate` in characters, `template` by name."""

    whitespace: bool = False
    pii: bool = False
    truncate: int | None = None
    template: str | None = None

    def __bool__(self) -> bool:
        return self.whitespace or self.pii or self.truncate is not None or self.template is not None

    def over(self, base: Steps) -> Steps:
        """These steps added to `base` (an alias's): `base`'s steps stay on, and where both
        set a length or a template, this one's wins."""
        return Steps(
            whitespace=self.whitespace or base.whitespace,
            pii=self.pii or base.pii,
            truncate=self.truncate if self.truncate is not None else base.truncate,
            template=self.template if self.template is not None else base.template,
        )

    def names(self) -> list[str]:
        return [name for name in STEP_NAMES if getattr(self, name) not in (False, None)]


def parse_steps(items: Iterable[str], templates: Mapping[str, str]) -> Steps:
    """`["whitespace", "truncate=200", "pii", "template=NAME"]` → Steps; PreprocessError otherwise."""
    steps, seen = Steps(), set()
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        name, equals, value = (part.strip() for part in item.partition("="))
        name = name.lower()
        if name not in STEP_NAMES:
            raise PreprocessError(f"unknown step {item!r}: the steps are whitespace, truncate=N, pii and template=NAME")
        if name in seen:
            raise PreprocessError(f"{name} is listed twice")
        seen.add(name)
        if name in ("whitespace", "pii"):
            if equals:
                raise PreprocessError(f"{name} takes no value (got {item!r})")
            steps = replace(steps, **{name: True})
        elif name == "truncate":
            if not value.isdigit() or int(value) < 1:
                raise PreprocessError(f"truncate needs a whole number of characters above 0, as in truncate=500 (got {item!r})")
            steps = replace(steps, truncate=int(value))
        else:
            if value not in templates:
                known = ", ".join(sorted(templates)) or "none is configured"
                raise PreprocessError(f"no template named {value!r} (templates: {known})")
            steps = replace(steps, template=value)
    return steps


def normalise_whitespace(text: str) -> str:
    """Runs of spaces and tabs become one space, lines lose their edge spaces, three or more
    line breaks become one blank line, and the ends are stripped: paragraphs survive."""
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def apply_steps(text: str, steps: Steps, templates: Mapping[str, str], counts: Counter[str]) -> str:
    """One text through the steps; `counts` gains the texts each step changed, and for `pii`
    the replacements of each kind (as `pii:EMAIL`)."""
    if steps.whitespace:
        done = normalise_whitespace(text)
        counts["whitespace"] += done != text
        text = done
    if steps.pii:
        text, found = scrub(text)
        counts.update({f"pii:{kind}": n for kind, n in found.items()})
    if steps.truncate is not None:
        counts["truncate"] += len(text) > steps.truncate
        text = text[: steps.truncate]
    if steps.template is not None:
        text = templates[steps.template].replace(USER_INPUT, text)
        counts["template"] += 1
    return text
