"""The endpoints the proxy serves itself, by the names they have after `/v1/` in OpenAI's API.

One module with no imports, so that routing, validation, rendering, the log and the
providers all read the same names without importing one another.
"""

#: The Responses API's calls that take a request like `POST /responses` does (`model`, `input`,
#: `instructions`, `previous_response_id`): a response, the compaction of a conversation, and the
#: count of its input tokens.
RESPONSES_ENDPOINTS = ("responses", "responses/compact", "responses/input_tokens")
#: Every model call the proxy reads, routes and logs in full.
ENDPOINTS = ("chat/completions", "completions", "embeddings", *RESPONSES_ENDPOINTS)
#: Those whose answer's `usage` is this call's (a retrieved response's usage was another call's):
#: their rows get token columns and a cost.
METERED_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "responses", "responses/compact"})
