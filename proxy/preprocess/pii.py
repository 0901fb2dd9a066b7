"""The `pii` step: e-mail addresses, IBANs, card numbers, IP addresses and phone numbers replaced
by `[EMAIL]`, `[IBAN]`, `[CARD]`, `[IP]` and `[PHONE]`.

Kinds are searched in that order, each in what the earlier ones left, so that the digits of an
address or an account are never read again as a phone number. Each kind errs on the side of
leaving ordinary text alone: a card number must pass the Luhn check, an IBAN its mod-97 check,
an IP address must parse (and an IPv4 address must not be part of a longer dotted number such
as a version), and a phone number must have a phone number's shape (see `_is_phone`). Dates,
times, versions, prices, plain numbers and order numbers keep their digits.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator

EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?![\w-])")
#: Country, check digits, then the account: written whole, or in groups of four.
IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?![\w-])")
#: 13 to 19 digits whole, in groups of four (one kind of separator), or Amex's 4-6-5.
CARD = re.compile(
    r"(?<![\w+.,-])(?:\d{13,19}|\d{4}([ -])\d{4}(?:\1\d{4}){1,3}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{4,5})"
    r"(?![\w-]|[.,]\d)"
)
IPV4 = re.compile(r"(?<![\w.-])\d{1,3}(?:\.\d{1,3}){3}(?![\w-]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
#: A run of digits with what phone numbers are written with between them: spaces, hyphens,
#: dots and parentheses; a leading `+` or `(`. Which part of a run is a phone number, if any,
#: is decided per whitespace-separated window (`_phones`).
NUMBER_RUN = re.compile(r"(?<![\w+.,/:-])[+(]?\d(?:[\d().\- \t]*\d)?(?![\w/:]|[.,]\d)")
DATE = re.compile(r"^(?:\d{4}[.-]\d{1,2}[.-]\d{1,2}|\d{1,2}[.-]\d{1,2}[.-]\d{4})$")
US_PHONE = re.compile(r"^(?:1[ .-])?\d{3}[ .-]\d{3}[ .-]\d{4}$")
AREA_CODE = re.compile(r"^\(\d{2,5}\) ?\d")
#: E.164: at most 15 digits; fewer than 7 is an extension or a short code, not a number to hide.
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 7, 15
#: The most words a phone number is written in ("+33 6 12 34 56 78"): bounds the windows tried.
MAX_PHONE_WORDS = 7


def luhn_ok(digits: str) -> bool:
    """The check digit of card numbers (ISO/IEC 7812)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: the first four characters moved to the end, letters as 10-35, mod 97 is 1."""
    compact = iban.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    """The longest valid IBAN at the start of the match: a grouped one may have taken a word after it."""
    text = match.group()
    while len(text.replace(" ", "")) >= 15:
        if iban_ok(text):
            return match.start(), match.start() + len(text)
        text = text.rpartition(" ")[0] if " " in text else ""
    return None


def _card(match: re.Match[str]) -> tuple[int, int] | None:
    digits = re.sub(r"\D", "", match.group())
    return match.span() if 13 <= len(digits) <= 19 and luhn_ok(digits) else None


def _ip(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    if ":" in text and not any(char.isdigit() for char in text):
        return None  # all-letter groups ("Face::Bad") are words more often than addresses
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return match.span()


def _is_phone(window: str) -> bool:
    """The shapes a phone number is written in: international (+, or 00 and a separator), a
    parenthesised area code, a national number with its trunk 0 in groups, or the US 3-3-4."""
    digits = sum(char.isdigit() for char in window)
    if not MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS or DATE.match(window):
        return False
    grouped = bool(re.search(r"\d[ .()-]+\d", window))
    if window.startswith("+"):
        return window[1:2].isdigit() or window[1:2] == "("
    if window.startswith("00"):
        return grouped and digits >= 10
    if AREA_CODE.match(window):
        return True
    if window.startswith("0"):
        return grouped and digits >= 9 and window.count(".") != 1
    return bool(US_PHONE.match(window))


def _phones(match: re.Match[str]) -> Iterator[tuple[int, int]]:
    """The phone numbers in a run of digits: leftmost, longest windows of whole words first, so
    that a date or a count written next to a number does not hide it."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", match.group())]
    base, text, first = match.start(), match.group(), 0
    while first < len(words):
        for last in range(min(len(words), first + MAX_PHONE_WORDS) - 1, first - 1, -1):
            start, end = words[first][0], words[last][1]
            window = text[start:end].rstrip(".-(")
            if _is_phone(window):
                yield base + start, base + start + len(window)
                first = last + 1
                break
        else:
            first += 1


Finder = Callable[[re.Match[str]], "tuple[int, int] | None | Iterator[tuple[int, int]]"]
#: (label, pattern, which spans of a match to replace), in the order they run.
KINDS: tuple[tuple[str, re.Pattern[str], Finder], ...] = (
    ("EMAIL", EMAIL, lambda m: m.span()),
    ("IBAN", IBAN, _iban),
    ("CARD", CARD, _card),
    ("IP", IPV6, _ip),
    ("IP", IPV4, _ip),
    ("PHONE", NUMBER_RUN, _phones),
)


def scrub(text: str) -> tuple[str, Counter[str]]:
    """`text` with every piece of personal data replaced by its label, and how many of each."""
    found: Counter[str] = Counter()
    for label, pattern, finder in KINDS:
        spans: list[tuple[int, int]] = []
        for match in pattern.finditer(text):
            result = finder(match)
            if isinstance(result, tuple):
                spans.append(result)
            elif result is not None:
                spans.extend(result)
        if spans:
            found[label] += len(spans)
            text = _replace(text, spans, f"[{label}]")
    return text, found


def _replace(text: str, spans: list[tuple[int, int]], label: str) -> str:
    pieces, position = [], 0
    for start, end in spans:
        pieces += [text[position:start], label]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)
