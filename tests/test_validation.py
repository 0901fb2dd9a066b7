import pytest

from proxy.errors import ProxyError
from proxy.validation import check_content_type, decode_text, parse_payload, validate


def error_of(fn, *args) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        fn(*args)
    body = info.value.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return info.value


@pytest.mark.parametrize("body, code", [(b"", "invalid_json"), (b"{", "invalid_json"), (b"[1]", "invalid_body"), (b'"s"', "invalid_body")])
def test_bodies_that_are_not_a_json_object(body, code):
    exc = error_of(parse_payload, body, 128)
    assert (exc.status_code, exc.code) == (400, code)


@pytest.mark.parametrize("depth, refused", [(3, False), (4, True)])
def test_bodies_nested_past_the_limit(depth, refused):
    body = b'{"a": ' * depth + b"1" + b"}" * depth
    if refused:
        assert error_of(parse_payload, body, 3).code == "invalid_json"
    else:
        assert parse_payload(body, 3)


@pytest.mark.parametrize("headers", [{}, {"content-type": ""}, {"content-type": "text/plain"},
                                     {"content-type": "multipart/form-data; boundary=x"}])
def test_a_body_that_does_not_say_it_is_json_is_415(headers):
    exc = error_of(check_content_type, headers)
    assert (exc.status_code, exc.code) == (415, "unsupported_content_type")


@pytest.mark.parametrize("value", ["application/json", "Application/JSON; charset=utf-8", "text/json"])
def test_json_content_types(value):
    check_content_type({"content-type": value})


def test_non_utf8_bytes():
    exc = error_of(decode_text, b'{"model": "\xff"}')
    assert (exc.status_code, exc.code) == (400, "invalid_encoding")


@pytest.mark.parametrize(
    "payload, param, code",
    [
        ({"messages": [{"role": "user"}]}, "model", "missing_required_parameter"),
        ({"model": 5, "messages": [{"role": "user"}]}, "model", "invalid_type"),
        ({"model": "  ", "messages": [{"role": "user"}]}, "model", "invalid_value"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": []}, "messages", "invalid_value"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream", "invalid_type"),
    ],
)
def test_chat_fields(payload, param, code):
    exc = error_of(validate, "chat/completions", payload, payload.get("model"))
    assert (exc.status_code, exc.param, exc.code) == (400, param, code)


def test_other_endpoints_need_their_input():
    assert error_of(validate, "completions", {"model": "m"}, "m").param == "prompt"
    assert error_of(validate, "embeddings", {"model": "m", "input": 3}, "m").param == "input"
    assert validate("embeddings", {"model": "m", "input": ["a"]}, "m") == "m"
