"""Which provider created a response, and what it was asked and answered.

Follow-ups by id must reach the provider that created the response; for a provider that
keeps no state (the mock, a translated chat-only server), the proxy itself holds the
conversation: its log has every request and answer. The latest responses are also kept in
memory, because a follow-up often comes sooner than the recorder's next batch is written:
at most `RECENT_RESPONSES` of them, and at most `RECENT_BYTES` of their requests and answers,
since an agent sends its whole conversation again each turn (4,096 responses to 200 KB
requests held 1.7 GB). Older ones are read from the log. Remembering costs the answer
nothing: finished calls wait in a queue, and their answers are read for their ids only when
a follow-up asks for one.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ProxyError
from ..record import CallRecord

Lookup = Callable[[str], Awaitable[list[dict[str, Any]]]]

RECENT_RESPONSES = 4096
#: Request and answer bytes (as text; the objects kept take two to three times that).
RECENT_BYTES = 32 * 1024 * 1024
#: What an entry costs beside its texts.
ENTRY_BYTES = 1024
#: How far back `previous_response_id` is followed; a longer chain is refused, not truncated.
MAX_CHAIN = 1000


@dataclass(slots=True)
class KnownResponse:
    id: str
    provider: str
    upstream_model: str | None
    request: dict[str, Any]  # the client's body: input, instructions, previous_response_id
    response: dict[str, Any]  # the response object as the client received it


class ResponseIndex:
    """Responses by id: the recent ones in memory, any other from the log."""

    def __init__(self, lookup: Lookup, size: int = RECENT_RESPONSES, max_bytes: int = RECENT_BYTES) -> None:
        self.lookup = lookup
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # of the entries in memory, read or not
        self._recent: OrderedDict[str, tuple[KnownResponse, int]] = OrderedDict()  # with their sizes
        self._unread: deque[tuple[CallRecord, int]] = deque()  # remembered, answer not read yet; newer
        #: Deleted through the proxy, the latest `size` (older deletions are in the log's metadata).
        self._deleted: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._recent) + len(self._unread)

    def remember(self, record: CallRecord) -> None:
        """Note a finished `POST /responses` call that the client got a response from."""
        if record.status_code == 200 and record.error is None and record.provider:
            size = ENTRY_BYTES + sum(len(text or "") for text in (record.request_text, record.response_body,
                                                                   record.response_text))
            self._unread.append((record, size))
            self.bytes += size
            while (self.bytes > self.max_bytes and len(self) > 1) or len(self) > self.size:
                self._evict_oldest()  # the newest stays, however large: its follow-up may come next

    def _evict_oldest(self) -> None:
        """Drop the entry remembered first (the read ones are older than the unread)."""
        if self._recent:
            _, (_, size) = self._recent.popitem(last=False)
        else:
            _, size = self._unread.popleft()
        self.bytes -= size

    def _read_unread(self) -> None:
        while self._unread:
            record, size = self._unread.popleft()
            answer = record.answer if record.answer is not None else _object(record.response_body)
            if answer is None or not isinstance(answer.get("id"), str):
                self.bytes -= size
                continue
            known = KnownResponse(answer["id"], record.provider or "", record.upstream_model, record.payload or {}, answer)
            self._drop(known.id)
            self._recent[known.id] = (known, size)

    def forget(self, response_id: str) -> None:
        """A response deleted through the proxy is gone for it too."""
        self._read_unread()
        self._drop(response_id)
        self._deleted[response_id] = None
        if len(self._deleted) > self.size:
            self._deleted.popitem(last=False)

    def _drop(self, response_id: str) -> None:
        entry = self._recent.pop(response_id, None)
        if entry is not None:
            self.bytes -= entry[1]

    async def find(self, response_id: str) -> KnownResponse | None:
        if response_id in self._deleted:
            return None
        self._read_unread()
        entry = self._recent.get(response_id)
        if entry is not None:
            return entry[0]
        rows = await self.lookup(response_id)
        if any(_metadata(row).get("deleted") for row in rows):
            return None
        for row in rows:
            if row["endpoint"] == "responses" and row["status_code"] == 200 and row["provider"]:
                response = _object(row["response_json"])
                if response is not None:
                    request = _object(row["request_json"]) or {}
                    return KnownResponse(response_id, row["provider"], row["upstream_model"], request, response)
        return None

    async def history(self, response_id: str) -> list[dict[str, Any]]:
        """The conversation up to and including `response_id`, as Responses input items, oldest first."""
        chain: list[KnownResponse] = []
        next_id: str | None = response_id
        while next_id:
            if len(chain) >= MAX_CHAIN:
                raise ProxyError(
                    400, f"The conversation before '{response_id}' is longer than {MAX_CHAIN} responses.",
                    param="previous_response_id", code="invalid_value",
                )
            known = await self.find(next_id)
            if known is None:
                raise not_found(next_id, param="previous_response_id")
            if not known.request:
                raise ProxyError(
                    400, f"The log holds no input for response '{next_id}' (it was logged with X-Study-Log: meta).",
                    param="previous_response_id", code="previous_response_not_found",
                )
            chain.append(known)
            previous = known.request.get("previous_response_id")
            next_id = previous if isinstance(previous, str) else None
        items: list[dict[str, Any]] = []
        for known in reversed(chain):
            items += input_items(known.request)
            items += [item for item in known.response.get("output") or [] if isinstance(item, dict)]
        return items


def input_items(request: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's `input` as a list of items (a string is one user message)."""
    value = request.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def not_found(response_id: str, param: str | None = None) -> ProxyError:
    status = 400 if param else 404
    code = "previous_response_not_found" if param else "not_found"
    return ProxyError(status, f"Response with id '{response_id}' not found.", param=param, code=code)


def _object(body: str | bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return _object(row.get("metadata")) or {}
