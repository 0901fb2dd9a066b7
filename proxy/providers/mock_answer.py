"""What the mock answers: echoed text, a tool call or JSON, decided once for Chat Completions and Responses.

The rule, which makes an agent's tool round trip end:

- `tool_choice` names a function: that function is called.
- `tool_choice: "required"`: a tool is called, the first one the conversation has not
  called yet (the first again once all have been), so an agent that must call a tool on
  every turn reaches its final-answer tool.
- `tool_choice: "auto"` or absent, with tools: the first tool is called when the last input
  is the user's turn; when the last input is a tool result, the mock answers text quoting
  it: `Mock answer to: <user text> (tool said: <output>)`.
- `tool_choice: "none"`, or no tools: text, `Mock answer to: <user text>`.
- Tools that are not functions (web_search, mcp, custom…) are never called: a `tool_choice`
  that forces a call to one, or `required` with none but them, is a 400.

Tool arguments are the smallest instance of the tool's parameter schema, with the user's
words in the first free string (mock_schema.py). Text answers follow the requested format:
a JSON Schema gives its smallest instance with the text in the first free string; a JSON
object without a schema gives the instance of a JSON Schema the prompt shows (as instructor's
JSON mode sends it), else `{"answer": "<text>"}`. Usage counts whitespace-separated words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from ..responses.builder import argument_pieces, new_id, word_pieces
from .mock_conversation import Conversation, MockRequestError
from .mock_schema import SchemaError, instance

#: How many `{` of a prompt are tried as the start of a JSON Schema in JSON-object mode.
SCHEMA_SEARCH_LIMIT = 64
#: A token, as the mock counts them: a run of non-space characters.
TOKEN = re.compile(r"\S+")


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Answer:
    """Either text or one tool call, with usage in words."""

    text: str | None
    call: ToolCall | None
    prompt_tokens: int
    completion_tokens: int
    cut: bool = False  # stopped at the request's token limit (`finish_reason: "length"`)

    def stopped(self, stops: list[str]) -> Answer:
        """The text up to the first of the `stop` sequences, which is left out, as a model's."""
        if self.text is None or not stops:
            return self
        end = min((found for found in (self.text.find(stop) for stop in stops) if found >= 0), default=-1)
        if end < 0:
            return self
        kept = self.text[:end]
        return Answer(kept, None, self.prompt_tokens, len(kept.split()))

    def within(self, limit: int) -> Answer:
        """The answer cut after `limit` tokens, as a model stops at `max_tokens`: text or tool
        arguments end mid-way (arguments then are not valid JSON, as a real model's are not)."""
        if self.completion_tokens <= limit:
            return self
        said = self.call.arguments if self.call is not None else self.text or ""
        kept = said[: _end_of_token(said, limit)]
        call = None if self.call is None else ToolCall(self.call.id, self.call.name, kept)
        return Answer(None if call else kept, call, self.prompt_tokens, limit, cut=True)

    def pieces(self) -> list[str]:
        """How the answer streams: text word by word, arguments in short pieces."""
        return argument_pieces(self.call.arguments) if self.call is not None else word_pieces(self.text or "")


def answer(conversation: Conversation) -> Answer:
    """The mock's answer to `conversation` (see the module docstring for the rule)."""
    prompt_tokens = conversation.words()
    tool = _tool_to_call(conversation)
    if tool is not None:
        arguments = orjson.dumps(_instance(tool["parameters"], conversation.user, tool["param"])).decode()
        call = ToolCall(new_id("call"), tool["name"], arguments)
        return Answer(None, call, prompt_tokens, len(arguments.split()))
    text = f"Mock answer to: {conversation.user}"
    if conversation.last_role == "tool":
        text += f" (tool said: {'; '.join(conversation.tool_outputs)})"
    if conversation.format is not None:
        text = _formatted(conversation, conversation.format, text)
    return Answer(text, None, prompt_tokens, len(text.split()))


def _end_of_token(text: str, count: int) -> int:
    """Where the `count`-th token of `text` ends (0 for none)."""
    ends = [token.end() for token in islice(TOKEN.finditer(text), count)]
    return ends[-1] if ends else 0


#: Why a forced call to a tool that is not a function (web_search, mcp, a custom tool…) is refused.
FUNCTIONS_ONLY = "the mock calls function tools only (hosted tools such as web_search run at OpenAI)."


def _tool_to_call(conversation: Conversation) -> dict[str, Any] | None:
    choice, tools = conversation.tool_choice, conversation.tools
    if isinstance(choice, dict):
        name = choice.get("name")
        named = next((tool for tool in tools if tool["name"] == name), None)
        if named is None:
            message = (f"tool_choice names the function {name!r}, which is not among the tools." if name is not None
                       else f"tool_choice asks for a tool that is not a function: {FUNCTIONS_ONLY}")
            raise MockRequestError(message, "tool_choice")
        return named
    if choice == "required":
        if not tools:
            raise MockRequestError(f"tool_choice 'required' asks for a tool call, and no tool is a function: {FUNCTIONS_ONLY}",
                                   "tool_choice")
        return next((tool for tool in tools if tool["name"] not in conversation.called), tools[0])
    if choice == "none" or not tools:
        return None
    return tools[0] if conversation.last_role == "user" else None


def _formatted(conversation: Conversation, wanted: dict[str, Any], text: str) -> str:
    if wanted["type"] == "json_schema":
        schema = wanted.get("schema")
        if schema is None:
            raise MockRequestError("A json_schema format needs its `schema`.", conversation.format_param)
        return orjson.dumps(_instance(schema, text, conversation.format_param)).decode()
    shown = _schema_in(conversation.said)
    if shown is not None:
        try:
            return orjson.dumps(instance(shown, text)).decode()
        except SchemaError:
            pass  # a schema-like object that is not one: answer plainly
    return orjson.dumps({"answer": text}).decode()


def _instance(schema: Any, hint: str, param: str) -> Any:
    try:
        return instance(schema, hint)
    except SchemaError as exc:
        raise MockRequestError(f"Invalid schema: {exc}.", param) from None


def _schema_in(texts: list[str]) -> dict[str, Any] | None:
    """A JSON Schema (an object with `properties`) that the prompt shows, latest message first."""
    decoder = json.JSONDecoder()
    for text in reversed(texts):
        start, tried = text.find("{"), 0
        while start >= 0 and tried < SCHEMA_SEARCH_LIMIT:
            tried += 1
            try:
                value, end = decoder.raw_decode(text, start)
            except ValueError:
                start = text.find("{", start + 1)
                continue
            if isinstance(value, dict) and isinstance(value.get("properties"), dict):
                return value
            start = text.find("{", end)
    return None
