"""WebSockets (the Realtime API) against a real server: a clear refusal in OpenAI's shape, and a row.

openai-python's `client.realtime.connect()` opens `ws://<proxy>/v1/realtime?model=…`; the proxy
carries HTTP only, so the handshake is answered 501 with a body that says so, and the call is
in the log. A WebSocket anywhere else is refused the same way, without a row.
"""

from __future__ import annotations

import pytest
import websockets.sync.client
from openai import OpenAI
from websockets.exceptions import InvalidStatus

from conftest import assert_error_shape, loads

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def proxy(module_proxy_factory):
    return module_proxy_factory()


def test_the_realtime_api_is_refused_clearly_and_logged(proxy):
    client = OpenAI(base_url=proxy.v1, api_key="sk-realtime", max_retries=0)
    with pytest.raises(InvalidStatus) as refused:
        with client.realtime.connect(model="gpt-realtime"):
            pass
    answer = refused.value.response
    assert answer.status_code == 501
    error = assert_error_shape(loads(answer.body))
    assert error["code"] == "unsupported_endpoint" and "HTTP calls only" in error["message"]
    row = proxy.log.wait_row(answer.headers["x-study-request-id"])
    assert (row["endpoint"], row["model"], row["status_code"]) == ("realtime", "gpt-realtime", 501)
    assert "sk-realtime" not in str(tuple(row))


def test_a_websocket_outside_the_api_is_refused_without_a_row(proxy):
    before = proxy.log.count()
    with pytest.raises(InvalidStatus) as refused:
        websockets.sync.client.connect(proxy.url.replace("http", "ws", 1) + "/ui/", open_timeout=5)
    assert refused.value.response.status_code == 501
    assert "x-study-request-id" not in refused.value.response.headers
    assert proxy.log.count() == before
