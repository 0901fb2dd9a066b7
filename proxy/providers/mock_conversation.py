"""A request as the mock reads it: who said what, which tools it offers, what format it wants.

Chat Completions, Responses and legacy completions differ in shape only; read into one
`Conversation`, they get their answer from one place (mock_answer.py). What is read is
checked as OpenAI checks it (roles, item types, message contents, tool names, format types):
a request a model would refuse gets the mock's 400 naming the field, not an answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..render import content_text

#: The `format` types that ask for JSON text.
JSON_FORMATS = ("json_schema", "json_object")
FORMAT_TYPES = ("text", *JSON_FORMATS)
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
RESPONSES_ROLES = ("user", "assistant", "system", "developer")
#: The input item types of the Responses API (openai-python 3.57's `ResponseInputItemParam`):
#: the mock reads messages and function calls and their outputs; the rest it takes as said.
INPUT_ITEM_TYPES = frozenset({
    "message", "function_call", "function_call_output", "reasoning", "item_reference", "compaction",
    "compaction_trigger", "file_search_call", "web_search_call", "computer_call", "computer_call_output",
    "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output",
    "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_list_tools",
    "mcp_approval_request", "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output",
    "tool_search_call", "tool_search_output", "additional_tools", "configuration_update", "program", "program_output",
})
#: The content part types of a message (openai-python 3.60): Chat Completions', then the
#: Responses API's input and output parts.
CHAT_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
RESPONSES_PART_TYPES = ("input_text", "input_image", "input_file", "input_audio", "output_text", "refusal")
#: Responses fields that name something kept at OpenAI, which the mock has not got.
STORED_AT_OPENAI = {
    "prompt": "prompt templates are stored at OpenAI; send the text as `instructions` and `input`.",
    "conversation": "conversations are stored at OpenAI; use `previous_response_id`, which the proxy "
                    "rebuilds from its log.",
}
#: OpenAI's rule for a function's name.
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class MockRequestError(ValueError):
    """The request asks for something no model could do; the mock answers 400 like OpenAI."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True)
class Conversation:
    said: list[str] = field(default_factory=list)  # every text, for the usage count
    user: str = ""  # the user's last words
    last_role: str = ""  # "user", "tool" or another role: who spoke last
    tool_outputs: list[str] = field(default_factory=list)  # the results that make up the last input
    called: set[str] = field(default_factory=set)  # names of the tools the conversation has called
    tools: list[dict[str, Any]] = field(default_factory=list)  # {"name", "parameters", "param"}
    tool_choice: Any = "auto"  # "auto", "none", "required" or {"name": …}
    format: dict[str, Any] | None = None  # {"type": "json_schema", "schema": …} or {"type": "json_object"}
    format_param: str = "response_format"  # where the format came from, for error messages

    def words(self) -> int:
        """The conversation's length in the mock's tokens: whitespace-separated words."""
        return len(" ".join(self.said).split())

    def hear(self, role: str, text: str) -> None:
        """One message (or item) of the conversation, in order."""
        self.said.append(text)
        if role == "tool":
            if self.last_role != "tool":
                self.tool_outputs = []
            self.tool_outputs.append(text)
        elif role == "user":
            self.user = text
        self.last_role = role


#: OpenAI's most items in one batch: embeddings' inputs, legacy completions' prompts.
MAX_BATCH = 2048


def completion_prompts(payload: dict[str, Any]) -> list[str]:
    """Legacy `/completions`' prompts, as OpenAI reads `prompt`: a string, a list of token ids
    (one prompt), or a batch of strings or of token lists, each answered with its own choices."""
    prompt = payload.get("prompt", "")
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise MockRequestError("Invalid 'prompt': expected a string, an array of strings, an array of token ids, "
                               "or an array of token id arrays, not empty.", "prompt")
    if all(_token(one) for one in prompt):
        return [" ".join(map(str, prompt))]
    if all(isinstance(one, str) for one in prompt):
        batch = prompt
    elif all(isinstance(one, list) and one and all(map(_token, one)) for one in prompt):
        batch = [" ".join(map(str, one)) for one in prompt]
    else:
        raise MockRequestError("Invalid 'prompt': a batch holds strings alone or token id arrays alone.", "prompt")
    if len(batch) > MAX_BATCH:
        raise MockRequestError(f"Invalid 'prompt': at most {MAX_BATCH} prompts in one request, but got "
                               f"{len(batch)}.", "prompt")
    return batch


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def from_completions(prompt: str) -> Conversation:
    """One legacy `/completions` prompt: the user's turn."""
    return Conversation([prompt], prompt, "user")


def from_chat(payload: dict[str, Any]) -> Conversation:
    """`/chat/completions`: `messages`, `tools` with `tool_choice`, `response_format`."""
    conversation, calls = Conversation(), ToolCalls()
    for i, message in enumerate(payload.get("messages") or ()):
        if isinstance(message, dict):
            role = _chat_message(i, message)
            calls.chat_message(i, role, message)
            conversation.hear(role, content_text(message.get("content")))
            for call in _list(message.get("tool_calls")):
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    conversation.called.add(str(call["function"].get("name")))
    calls.chat_end()
    tools = payload.get("tools")
    if tools == []:
        raise MockRequestError("Invalid 'tools': empty array. Expected an array with at least one tool.", "tools")
    if not tools and payload.get("tool_choice") is not None:
        raise MockRequestError("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                               "specified.", "tool_choice")
    if tools and isinstance(tools, list):
        conversation.tools = [
            _tool(_dict(tool.get("function")), f"tools[{i}].function")
            for i, tool in enumerate(tools)
            if isinstance(tool, dict) and tool.get("type", "function") == "function"
        ]
        _choose(conversation, payload.get("tool_choice"), lambda named: _dict(named.get("function")).get("name"))
    wanted = payload.get("response_format")
    if isinstance(wanted, dict):
        _one_of(wanted.get("type"), FORMAT_TYPES, "response_format.type")
    if isinstance(wanted, dict) and wanted.get("type") in JSON_FORMATS:
        spec = wanted.get("json_schema")
        conversation.format = {"type": wanted["type"], "schema": spec.get("schema") if isinstance(spec, dict) else None}
    return conversation


def from_responses(payload: dict[str, Any]) -> Conversation:
    """`/responses`: `instructions`, `input` (a string or items), `tools`, `text.format`.

    `previous_response_id` is left alone: the proxy has expanded it into `input` already.
    """
    for param, why in STORED_AT_OPENAI.items():
        if payload.get(param) is not None:
            raise MockRequestError(f"The mock cannot honour '{param}': {why}", param)
    conversation = Conversation(format_param="text.format")
    instructions = payload.get("instructions")
    if isinstance(instructions, str):
        conversation.hear("system", instructions)
    items = payload.get("input")
    if isinstance(items, str):
        conversation.hear("user", items)
    calls = ToolCalls()
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict):
            continue
        kind = _one_of(item.get("type", "message"), INPUT_ITEM_TYPES, f"input[{i}].type")
        if kind == "message":
            role = _one_of(item.get("role"), RESPONSES_ROLES, f"input[{i}].role")
            _parts(item.get("content"), f"input[{i}].content", RESPONSES_PART_TYPES)
            conversation.hear(role, content_text(item.get("content")))
        elif kind == "function_call":
            calls.called(_call_id(item, f"input[{i}]"))
            conversation.called.add(str(item.get("name")))
            conversation.hear("assistant", "")
        elif kind == "function_call_output":
            calls.answered(_call_id(item, f"input[{i}]"))
            output = item.get("output")
            conversation.hear("tool", output if isinstance(output, str) else content_text(output))
    calls.responses_end()
    tools = payload.get("tools")
    if tools and isinstance(tools, list):
        conversation.tools = [
            _tool(tool, f"tools[{i}]")
            for i, tool in enumerate(tools)
            if isinstance(tool, dict) and tool.get("type") == "function"
        ]
        _choose(conversation, payload.get("tool_choice"), lambda named: named.get("name"))
    text = payload.get("text")
    wanted = text.get("format") if isinstance(text, dict) else None
    if isinstance(wanted, dict):
        _one_of(wanted.get("type"), FORMAT_TYPES, "text.format.type")
    if isinstance(wanted, dict) and wanted.get("type") in JSON_FORMATS:
        conversation.format = {"type": wanted["type"], "schema": wanted.get("schema")}
    return conversation


def _chat_message(i: int, message: dict[str, Any]) -> str:
    """The role of `messages[i]`, once the message is one OpenAI takes: a content of its
    types (none only for an assistant's tool calls), a tool result with its call's id."""
    role = _one_of(message.get("role"), CHAT_ROLES, f"messages[{i}].role")
    at, content = f"messages[{i}].content", message.get("content")
    if content is None:
        if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")):
            raise MockRequestError(f"Missing required parameter: '{at}'.", at)
    elif not isinstance(content, (str, list)):
        raise MockRequestError(f"Invalid type for '{at}': expected a string or an array of content parts, "
                               f"but got {type(content).__name__} instead.", at)
    for j, part in enumerate(_parts(content, at, CHAT_PART_TYPES)):
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise MockRequestError(f"Missing required parameter: '{at}[{j}].text'.", f"{at}[{j}].text")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise MockRequestError(f"Missing required parameter: 'messages[{i}].tool_call_id'.", f"messages[{i}].tool_call_id")
    return role


def _parts(content: Any, at: str, types: tuple[str, ...]) -> list[dict[str, Any]]:
    """A message's content parts (none for a string), each an object of one of `types`."""
    parts = _list(content)
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise MockRequestError(f"Invalid '{at}[{j}]': a content part is an object with a `type`.", f"{at}[{j}]")
        _one_of(part["type"], types, f"{at}[{j}].type")
    return parts


class ToolCalls:
    """Which tool calls of a conversation have their results, checked as OpenAI checks them:
    a result answers a call made before it, and no call is left without its result. (An agent
    that forgets to send a tool's result gets OpenAI's 400, so it gets the mock's.)"""

    def __init__(self) -> None:
        #: call id -> the `param` its unanswered call's 400 names, in the order of the calls
        self.waiting: dict[str, str] = {}

    # Chat Completions: an assistant's tool calls are answered by the tool messages right after it.

    def chat_message(self, i: int, role: str, message: dict[str, Any]) -> None:
        if role == "tool":
            if self.waiting.pop(message["tool_call_id"], None) is None:
                raise MockRequestError("Invalid parameter: messages with role 'tool' must be a response to a "
                                       "preceding message with 'tool_calls'.", f"messages[{i}].role")
            return
        self.chat_end()
        for j, call in enumerate(_list(message.get("tool_calls")) if role == "assistant" else ()):
            call_id = call.get("id") if isinstance(call, dict) else None
            if not isinstance(call_id, str):
                raise MockRequestError(f"Missing required parameter: 'messages[{i}].tool_calls[{j}].id'.",
                                       f"messages[{i}].tool_calls[{j}].id")
            self.waiting[call_id] = f"messages[{i}].role"

    def chat_end(self) -> None:
        """Every call waiting is of one assistant message: the one before the latest tool messages."""
        if self.waiting:
            raise MockRequestError("An assistant message with 'tool_calls' must be followed by tool messages "
                                   "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                                   f"response messages: {', '.join(self.waiting)}", next(iter(self.waiting.values())))

    # The Responses API: a function_call_output item answers a function_call item before it.

    def called(self, call_id: str) -> None:
        self.waiting[call_id] = "input"

    def answered(self, call_id: str) -> None:
        if self.waiting.pop(call_id, None) is None:
            raise MockRequestError(f"No tool call found for function call output with call_id {call_id}.", "input")

    def responses_end(self) -> None:
        if self.waiting:
            call_id, param = next(iter(self.waiting.items()))
            raise MockRequestError(f"No tool output found for function call {call_id}.", param)


def _call_id(item: dict[str, Any], at: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise MockRequestError(f"Missing required parameter: '{at}.call_id'.", f"{at}.call_id")
    return call_id


def _tool(function: dict[str, Any], at: str) -> dict[str, Any]:
    """A function tool as the rule reads it; `at` is where it is in the request (for errors)."""
    name = function.get("name")
    if name is None:
        raise MockRequestError(f"Missing required parameter: '{at}.name'.", f"{at}.name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise MockRequestError(f"Invalid '{at}.name': {name!r} is not a function name: expected 1 to 64 letters, "
                               "digits, underscores or dashes.", f"{at}.name")
    parameters = function.get("parameters")
    return {
        "name": name,
        "parameters": parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}},
        "param": f"{at}.parameters",
    }


def _one_of(value: Any, allowed: Iterable[str], param: str) -> str:
    """`value` if it is one of `allowed`; otherwise the 400 OpenAI answers."""
    if isinstance(value, str) and value in allowed:
        return value
    if value is None:
        raise MockRequestError(f"Missing required parameter: '{param}'.", param)
    raise MockRequestError(f"Invalid value for '{param}': {value!r}. Supported values are: "
                           f"{', '.join(map(repr, sorted(allowed)))}.", param)


def _choose(conversation: Conversation, choice: Any, name_of: Callable[[dict[str, Any]], Any]) -> None:
    """`tool_choice` as the rule reads it; `allowed_tools` narrows the tools and gives its mode."""
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") if isinstance(choice.get("allowed_tools"), dict) else choice
        names = {name_of(tool) for tool in _list(allowed.get("tools")) if isinstance(tool, dict)}
        conversation.tools = [tool for tool in conversation.tools if tool["name"] in names]
        choice = allowed.get("mode", "auto")
    elif isinstance(choice, dict):
        choice = {"name": name_of(choice)}
    conversation.tool_choice = choice if isinstance(choice, dict) or choice in ("none", "required") else "auto"


def _list(value: Any) -> list[Any]:
    """`value` if it is a list, else none: a client may send any type in any field."""
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
