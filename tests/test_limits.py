"""The pieces behind the limits and checks for hostile clients and other hosts, without a server."""

from __future__ import annotations

import base64

import pytest

from proxy.config import ConfigError, load_settings
from proxy.errors import ProxyError
from proxy.exposure import is_loopback, open_bind_refusal
from proxy.hosts import HostAllowList, HostError, allowed_names, normalise
from proxy.json_depth import depth_exceeds
from proxy.limits import RESERVED_FDS, ClientLimits, connection_cap
from proxy.request_headers import client_token, parse_options, study_metadata


@pytest.mark.parametrize("text, limit, deeper", [
    (b"[]", 1, False), (b"[[]]", 1, True), (b'{"a": {"b": [1, {"c": 2}]}}', 4, False),
    (b'{"a": {"b": [1, {"c": 2}]}}', 3, True), (b'["[[[[[[", "{{{{"]', 1, False),
    (b'["\\"[[[[", "x\\\\", [[1]]]', 3, False), (b'["\\"[[[[", "x\\\\", [[1]]]', 2, True),
    (b"[" * 1000, 999, True), (b"[1, 2, [3], [4], [5], [6]]", 2, False), (b"not json {{{ [[[", 2, True),
])
def test_depth(text, limit, deeper):
    assert depth_exceeds(text, limit) is deeper


def test_a_body_with_few_brackets_is_not_scanned():
    assert not depth_exceeds(b'{"messages": [' + b'"x",' * 100_000 + b'"y"]}', 3)


@pytest.mark.parametrize("value", ["\xb2", "３", "1" * 7, "-1", "1.5", "", " ", "0x3"])
def test_retries_must_be_ascii_digits(value):
    with pytest.raises(ProxyError) as caught:
        parse_options({"x-study-retries": value}, 3)
    assert caught.value.code == "invalid_header"


def test_retries_are_capped():
    assert parse_options({"x-study-retries": " 99 "}, 3).max_attempts == 11


def test_metadata_nested_past_the_limit():
    with pytest.raises(ProxyError) as caught:
        study_metadata({"x-study-metadata": '{"a": ' * 5 + "1" + "}" * 5}, 4)
    assert (caught.value.code, caught.value.param) == ("invalid_header", "X-Study-Metadata")
    assert study_metadata({"x-study-metadata": '{"a": {"b": 1}}'}, 4) == {"a": {"b": 1}}


@pytest.mark.parametrize("entry, normalised", [
    ("Example.ORG", "example.org"), ("example.org.", "example.org"), ("::1", "[::1]"), ("[::1]", "[::1]"),
    ("*", "*"), (".corp.test", ".corp.test"), ("10.0.0.5", "10.0.0.5"),
])
def test_allow_list_entries(entry, normalised):
    assert normalise(entry) == normalised


@pytest.mark.parametrize("entry", ["example.org:8000", "http://example.org", "[::1", "a/b", "a b"])
def test_allow_list_entries_that_are_not_hosts(entry):
    with pytest.raises(HostError):
        normalise(entry)


def test_the_default_allow_list():
    assert allowed_names([], "127.0.0.1") == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_names([], "0.0.0.0") == ("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
    assert allowed_names([], "::") == ("localhost", "127.0.0.1", "[::1]", "[::]")
    assert allowed_names(["proxy.test"], "127.0.0.1") == ("proxy.test",)


@pytest.mark.parametrize("host, allowed", [
    (b"localhost", True), (b"localhost:8000", True), (b"LOCALHOST:1", True), (b"localhost.:80", True),
    (b"[::1]:8000", True), (b"[::1]", True), (b"127.0.0.1:65535", True), (b"a.corp.test", True), (b"corp.test", True),
    (b"evil.example", False), (b"localhost.evil.example", False), (b"127.0.0.1:80:80", False),
    (b"localhost:x", False), (b"[::2]:80", False), (b"evilcorp.test", False), (b"", False),
])
def test_host_allow_list(host, allowed):
    hosts = HostAllowList(allowed_names(["localhost", "127.0.0.1", "::1", ".corp.test"], ""))
    assert hosts.allows([(b"user-agent", b"x"), (b"host", host)]) is allowed
    assert hosts.allows([(b"host", host)]) is allowed  # the second time from what it remembers
    assert hosts.allows([(b"host", b"localhost"), (b"host", host)]) is False  # which one? neither


def test_no_host_header_is_not_allowed():
    assert HostAllowList(["localhost"]).allows([(b"accept", b"*/*")]) is False


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("headers, token", [
    ({"authorization": basic("alice:sk-1")}, "sk-1"), ({"authorization": basic(":sk-1")}, "sk-1"),
    ({"authorization": basic("alice:a:b")}, "a:b"), ({"authorization": "Bearer sk-2"}, "sk-2"),
    ({"authorization": "bearer  sk-2 "}, "sk-2"), ({"authorization": "Basic !!!"}, ""),
    ({"authorization": basic("no-colon")}, ""), ({"authorization": "Digest x"}, ""), ({}, ""),
    ({"api-key": "sk-3"}, "sk-3"), ({"authorization": "Bearerx"}, ""),
])
def test_the_key_a_request_carries(headers, token):
    assert client_token(headers) == token


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("192.168.0.1", False),
    ("no-such-host.invalid", False),
])
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_open_bind_refusal():
    assert open_bind_refusal("127.0.0.1", False, False) is None
    assert open_bind_refusal("0.0.0.0", True, False) is None  # proxy keys
    assert open_bind_refusal("0.0.0.0", False, True) is None  # --allow-open
    reason = open_bind_refusal("0.0.0.0", False, False)
    assert reason and "0.0.0.0" in reason and "--allow-open" in reason and "STUDY_ALLOW_OPEN" in reason


def test_connection_cap():
    assert connection_cap(10, 1024) == 10
    assert connection_cap(0, 1024) == (1024 - RESERVED_FDS) // 2
    assert connection_cap(0, 10) == 1


def test_server_settings():
    settings = load_settings(env={"ALLOWED_HOSTS": "proxy.test, ::1", "STUDY_ALLOW_OPEN": "yes"})
    assert settings.allowed_hosts == ("proxy.test", "[::1]")
    assert settings.allow_open is True
    assert settings.limits == ClientLimits()
    assert load_settings(env={}).allowed_hosts == ()


@pytest.mark.parametrize("env, toml, message", [
    ({"ALLOWED_HOSTS": "proxy.test:8000"}, "", "ALLOWED_HOSTS"),
    ({"STUDY_ALLOW_OPEN": "maybe"}, "", "STUDY_ALLOW_OPEN"),
    ({}, "[server]\nallowed_hosts = 'x'\n", "allowed_hosts"),
    ({}, "[server]\nmax_json_depth = 300\n", "max_json_depth"),
    ({}, "[server]\nheader_timeout = 0\n", "header_timeout"),
    ({}, "[server]\nmax_connections = -1\n", "max_connections"),
    ({}, "[server]\nmax_header_bytes = 'big'\n", "max_header_bytes"),
])
def test_bad_server_settings(tmp_path, env, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env, config_file=config)


def test_server_limits_from_the_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[server]\nmax_header_bytes = 1024\nheader_timeout = 5\nmax_connections = 7\n"
                      "allowed_hosts = ['proxy.test']\n")
    settings = load_settings(env={}, config_file=config)
    assert (settings.limits.max_header_bytes, settings.limits.header_timeout, settings.limits.max_connections) == (1024, 5.0, 7)
    assert settings.allowed_hosts == ("proxy.test",)
