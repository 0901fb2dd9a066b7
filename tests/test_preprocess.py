"""The preprocessing steps one by one: what `pii` replaces (phone numbers of many countries, cards,
IBANs, IP addresses, e-mail addresses) and what it must leave alone, whitespace, truncate,
template, the order they run in, the parser of the step lists, and where in each endpoint's
body the user's words are found."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.preprocess.payload import preprocess_payload, summary
from proxy.preprocess.pii import iban_ok, luhn_ok, scrub
from proxy.preprocess.steps import PreprocessError, Steps, apply_steps, normalise_whitespace, parse_steps

PHONES = [
    "+44 20 7946 0958",  # UK, international
    "020 7946 0958",  # UK, national
    "+44 (0)20 7946 0958",
    "+49 30 901820",  # Germany
    "030 901820",
    "0049 30 901820",
    "06 12 34 56 78",  # France, national
    "+33 6 12 34 56 78",
    "(555) 123-4567",  # US
    "555-123-4567",
    "555.123.4567",
    "+1-555-123-4567",
    "1-555-123-4567",
    "+12025550143",  # E.164, no separators
    "+81 3-1234-5678",  # Japan
    "+91 98765 43210",  # India
    "+55 11 91234-5678",  # Brazil
    "+61 2 9374 4000",  # Australia
    "06-12345678",  # the Netherlands
]

UNTOUCHED = [
    "version 1.2.3",
    "upgrade to v2.10.4 today",
    "Python 3.11.4 and 3.12.0",
    "due 2026-12-01",
    "due 01/12/2026",
    "due 01.12.2026",
    "at 10:30 or 14:45:59",
    "2026-12-01T10:30:00Z",
    "12345678",
    "pi is 3.14159265",
    "0.123456789",
    "costs $1,299.99 or €1.299,99",
    "order 123-456-789",
    "order 1234 5678 9012 3456",  # card-shaped, fails Luhn
    "order 4111111111111112",  # fails Luhn
    "ISBN 978-3-16-148410-0",
    "between 1990 and 2026, 3 kids and 12 cats",
    "room 101, floor 3, ext. 4567",
    "call 555-1234",  # a seven-digit local number without area code is left alone
    "MAC 00:1A:2B:3C:4D:5E",
    "std::vector and Face::Bad",
    "999.1.1.1 is no address",
    "see section 4.2.1 and 10.1",
    "ratio 16:9, score 3-2",
]


@pytest.mark.parametrize("phone", PHONES)
def test_phone_numbers_of_several_countries(phone: str) -> None:
    text, found = scrub(f"Call me on {phone}, thanks.")
    assert text == "Call me on [PHONE], thanks.", phone
    assert found == Counter({"PHONE": 1})


@pytest.mark.parametrize("text", UNTOUCHED)
def test_what_is_not_personal_data_is_left_alone(text: str) -> None:
    assert scrub(text) == (text, Counter())


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe+work@example.co.uk today", "write to [EMAIL] today", "EMAIL"),
        ("ADMIN@EXAMPLE.ORG.", "[EMAIL].", "EMAIL"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "CARD"),
        ("card 4111-1111-1111-1111.", "card [CARD].", "CARD"),
        ("card 4111111111111111", "card [CARD]", "CARD"),
        ("amex 3782 822463 10005", "amex [CARD]", "CARD"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please", "IBAN"),
        ("IBAN GB82WEST12345698765432", "IBAN [IBAN]", "IBAN"),
        ("BE68 5390 0754 7034 CODE", "[IBAN] CODE", "IBAN"),  # the word after it is not part of it
        ("host 192.168.1.20, port 80", "host [IP], port 80", "IP"),
        ("http://10.0.0.1:8080/path", "http://[IP]:8080/path", "IP"),
        ("v6 2001:db8::8a2e:370:7334 here", "v6 [IP] here", "IP"),
        ("loopback ::1 and fe80::1", "loopback [IP] and [IP]", "IP"),
        ("::ffff:192.0.2.128 mapped", "[IP] mapped", "IP"),
    ],
)
def test_each_kind_is_replaced_by_its_label(text: str, expected: str, kind: str) -> None:
    scrubbed, found = scrub(text)
    assert scrubbed == expected
    assert set(found) == {kind}


def test_counts_and_mixed_text() -> None:
    text = (
        "Hi, I'm Jane (jane@example.com, +44 20 7946 0958 or 020 7946 0958). Pay to DE89 3704 0044 0532 0130 00 "
        "or card 4111 1111 1111 1111; server 10.0.0.7. Release v2.10.4 ships 2026-12-01 at 10:30 for $1,299.99."
    )
    scrubbed, found = scrub(text)
    assert found == Counter({"EMAIL": 1, "PHONE": 2, "IBAN": 1, "CARD": 1, "IP": 1})
    assert scrubbed == (
        "Hi, I'm Jane ([EMAIL], [PHONE] or [PHONE]). Pay to [IBAN] "
        "or card [CARD]; server [IP]. Release v2.10.4 ships 2026-12-01 at 10:30 for $1,299.99."
    )


def test_a_date_next_to_a_phone_number_does_not_hide_it() -> None:
    assert scrub("2026-12-01 555-123-4567")[0] == "2026-12-01 [PHONE]"


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("378282246310005")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE88 3704 0044 0532 0130 00") and not iban_ok("DE89")
    assert "IBAN" not in scrub("DE88 3704 0044 0532 0130 00")[1]  # a wrong check is no IBAN


def test_a_long_run_of_numbers_stays_fast() -> None:
    text = " ".join(["12"] * 20_000) + " x" + "1" * 50_000 + "y"
    assert scrub(text)[0] == text  # bounded windows: this takes milliseconds, not minutes


def test_whitespace() -> None:
    assert normalise_whitespace("  a \t  b  \n\n\n\n  c  d \n") == "a b\n\nc d"
    assert normalise_whitespace("one\ntwo\n\nthree") == "one\ntwo\n\nthree"


def test_steps_run_in_one_order_and_count_what_they_changed() -> None:
    templates = {"brief": "Answer briefly: {user_input} (end)"}
    steps = parse_steps(["template=brief", "truncate=12", "pii", "whitespace"], templates)
    assert steps == Steps(whitespace=True, pii=True, truncate=12, template="brief")
    counts: Counter[str] = Counter()
    # pii before truncate: the address is gone before the cut, which cannot leave half of it
    out = apply_steps("  mail   a@b.com please  ", steps, templates, counts)
    assert out == "Answer briefly: mail [EMAIL] (end)"
    assert counts == Counter({"whitespace": 1, "pii:EMAIL": 1, "truncate": 1, "template": 1})
    assert summary(steps, counts) == {"whitespace": 1, "pii": {"EMAIL": 1}, "truncate": 1, "template": 1}


def test_truncate_counts_only_texts_it_cut() -> None:
    counts: Counter[str] = Counter()
    steps = Steps(truncate=5)
    assert apply_steps("short", steps, {}, counts) == "short"
    assert apply_steps("longer text", steps, {}, counts) == "longe"
    assert counts["truncate"] == 1
    assert summary(Steps(pii=True), Counter()) == {"pii": {}}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["shout"], "unknown step 'shout'"),
        (["truncate"], "truncate needs a whole number"),
        (["truncate=0"], "truncate needs a whole number"),
        (["truncate=-3"], "truncate needs a whole number"),
        (["truncate=ten"], "truncate needs a whole number"),
        (["pii=yes"], "pii takes no value"),
        (["pii", "pii"], "pii is listed twice"),
        (["template=nope"], "no template named 'nope' (templates: brief)"),
    ],
)
def test_parse_refuses_what_it_cannot_run(items: list[str], message: str) -> None:
    with pytest.raises(PreprocessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_steps(items, {"brief": "{user_input}"})


def test_parse_tolerates_spaces_case_and_empty_items() -> None:
    assert parse_steps([" PII ", "", " truncate = 40 "], {}) == Steps(pii=True, truncate=40)
    assert not parse_steps(["", " "], {})


def test_header_steps_add_to_the_alias_steps() -> None:
    alias = Steps(pii=True, truncate=100, template="a")
    assert Steps(whitespace=True, truncate=20).over(alias) == Steps(True, True, 20, "a")
    assert Steps().over(alias) == alias  # a header cannot turn the alias's steps off


def test_chat_user_messages_only_and_the_client_body_untouched() -> None:
    payload = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Admin is root@example.com"},
            {"role": "user", "content": "I am a@b.com"},
            {"role": "assistant", "content": "Hello a@b.com"},
            {"role": "user", "content": [{"type": "text", "text": "and c@d.org"}, {"type": "image_url", "image_url": {}}]},
        ],
    }
    done, counts = preprocess_payload("chat/completions", payload, Steps(pii=True), {})
    assert [m["content"] for m in done["messages"]] == [
        "Admin is root@example.com",
        "I am [EMAIL]",
        "Hello a@b.com",
        [{"type": "text", "text": "and [EMAIL]"}, {"type": "image_url", "image_url": {}}],
    ]
    assert counts == Counter({"pii:EMAIL": 2})
    assert payload["messages"][1]["content"] == "I am a@b.com"


def test_responses_input_string_and_items() -> None:
    steps = Steps(pii=True)
    done, _ = preprocess_payload("responses", {"input": "mail a@b.com", "instructions": "x@y.com"}, steps, {})
    assert done == {"input": "mail [EMAIL]", "instructions": "x@y.com"}
    items = [
        {"role": "user", "content": "a@b.com"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "c@d.org"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "e@f.net"},
        {"role": "assistant", "content": "g@h.io"},
    ]
    done, counts = preprocess_payload("responses", {"input": items}, steps, {})
    assert done["input"][0]["content"] == "[EMAIL]"
    assert done["input"][1]["content"][0]["text"] == "[EMAIL]"
    assert done["input"][2:] == items[2:]
    assert counts["pii:EMAIL"] == 2


def test_completions_and_embeddings_inputs() -> None:
    steps = Steps(truncate=3)
    assert preprocess_payload("completions", {"prompt": "abcdef"}, steps, {})[0] == {"prompt": "abc"}
    assert preprocess_payload("embeddings", {"input": ["abcdef", "xy"]}, steps, {})[0] == {"input": ["abc", "xy"]}
    tokens = {"input": [[1, 2, 3]]}
    assert preprocess_payload("embeddings", tokens, steps, {})[0] == tokens


def test_bodies_of_unexpected_shape_are_passed_over() -> None:
    for payload in ({"messages": "hi"}, {"messages": [None, 3, {"role": "user"}]}, {}):
        assert preprocess_payload("chat/completions", payload, Steps(pii=True), {})[0] == payload
