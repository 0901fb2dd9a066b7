"""A Responses API request as the Chat Completions request that asks the same, for chat-only upstreams.

Every field of the request is either translated, ignored because it cannot change the
answer of a chat-only upstream, or refused with a 400 in OpenAI's shape: nothing that
would change the answer is dropped silently (docs/responses.md has the table). The
translation builds new message dicts around the client's own strings, lists of parts and
schemas: nothing large is copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ProxyError
from .builder import LOGPROBS_INCLUDE

Body = dict[str, Any]
#: How a field is translated: it may add to the chat body, or raise ProxyError.
Field = Callable[[Body, Any, Body], None]

#: Chat roles for the roles of Responses input messages; chat-only servers know no `developer`.
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TOOL_CHOICES = ("auto", "none", "required")
#: Chat Completions parameters a client adds itself (`extra_body`), sent on unchanged.
CHAT_PARAMETERS = frozenset(
    {"seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "top_k", "min_p", "repetition_penalty"}
)


def unsupported(param: str, message: str) -> ProxyError:
    """The 400 for what a chat/completions upstream cannot do."""
    return ProxyError(400, message, param=param, code="unsupported_parameter")


def invalid(param: str, message: str) -> ProxyError:
    """The 400 for a value of the wrong shape."""
    return ProxyError(400, message, param=param, code="invalid_value")


def to_chat(payload: Body, model: str, *, usage_in_stream: bool = True) -> Body:
    """The chat/completions body for `payload` (a Responses request) sent to `model`.

    `usage_in_stream` asks for the final usage chunk of a stream (`stream_options`), which
    every upstream but Azure's oldest api-versions accepts. Raises ProxyError (400).
    """
    chat: Body = {"model": model, "messages": messages(payload.get("instructions"), payload.get("input"))}
    for name, value in payload.items():
        if value is None:
            continue
        field = FIELDS.get(name)
        if field is not None:
            field(chat, value, payload)
        elif name in CHAT_PARAMETERS:
            chat[name] = value
        else:
            raise unsupported(name, f"`{name}` is not a Responses field this proxy can translate to Chat Completions "
                                    "for a provider without a Responses API.")
    if chat.get("stream") and usage_in_stream:
        chat["stream_options"] = {"include_usage": True}
    if "tools" not in chat:  # chat servers refuse these without tools; without tools they mean nothing
        chat.pop("tool_choice", None)
        chat.pop("parallel_tool_calls", None)
    return chat


# -- messages ------------------------------------------------------------------------------


def messages(instructions: Any, input: Any) -> list[Body]:
    """`instructions` as a leading system message, then `input` (a string or a list of items)."""
    out: list[Body] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "`instructions` must be a string.")
        out.append({"role": "system", "content": instructions})
    if input is None:
        return out
    if isinstance(input, str):
        out.append({"role": "user", "content": input})
        return out
    if not isinstance(input, list):
        raise invalid("input", "`input` must be a string or a list of input items.")
    for i, item in enumerate(input):
        if not isinstance(item, dict):
            raise invalid(f"input[{i}]", "Each input item must be an object.")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, f"input[{i}]"))
        elif kind == "function_call":
            _add_tool_call(out, item, f"input[{i}]")
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.get("call_id"),
                        "content": _tool_output(item.get("output"), f"input[{i}].output")})
        elif kind == "reasoning":
            continue  # only native providers write these, and no chat server reads them
        elif kind == "item_reference":
            raise unsupported(f"input[{i}]", "`item_reference` input items point into OpenAI's store, which a "
                                             "provider without a Responses API does not have: send the item itself.")
        else:
            raise unsupported(f"input[{i}].type", f"Input items of type `{kind}` cannot be sent to a provider "
                                                  "without a Responses API.")
    return out


def _message(item: Body, param: str) -> Body:
    role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise invalid(f"{param}.role", "An input message's role must be user, assistant, system or developer.")
    content = item.get("content")
    if isinstance(content, list):
        content = _parts(content, f"{param}.content")
    elif not isinstance(content, str):
        raise invalid(f"{param}.content", "An input message's content must be a string or a list of parts.")
    return {"role": role, "content": content}


def _parts(parts: list[Any], param: str) -> str | list[Body]:
    """Chat content parts; a lone text part becomes a plain string, which every chat server takes."""
    out: list[Body] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            out.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise unsupported(f"{param}[{j}]", "Images by `file_id` live in OpenAI's file store: give an "
                                                   "`image_url` (an https or data: URL) instead.")
            image: Body = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        else:
            raise unsupported(f"{param}[{j}].type", f"Content parts of type `{kind}` cannot be sent to a provider "
                                                    "without a Responses API.")
    if len(out) == 1 and out[0]["type"] == "text":
        return out[0]["text"]  # type: ignore[no-any-return]
    return out


def _add_tool_call(out: list[Body], item: Body, param: str) -> None:
    """A `function_call` item joins the assistant message just before it, as chat keeps them."""
    if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
        raise invalid(param, "A `function_call` input item needs a `call_id` and a `name`.")
    call = {"id": item["call_id"], "type": "function",
            "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                kind = part.get("type") if isinstance(part, dict) else None
                raise unsupported(f"{param}[{j}]", f"A chat tool message holds text only, not `{kind}` parts.")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise invalid(param, "A `function_call_output`'s output must be a string or a list of text parts.")


# -- the other fields ----------------------------------------------------------------------


def _tools(chat: Body, value: Any, payload: Body) -> None:
    if not isinstance(value, list):
        raise invalid("tools", "`tools` must be a list.")
    tools = []
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise unsupported(f"tools[{i}].type", f"Tools of type `{kind}` run inside OpenAI's Responses API: a "
                                                  "provider without one takes function tools only.")
        function = {"name": tool.get("name")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    if tools:
        chat["tools"] = tools


def _tool_choice(chat: Body, value: Any, payload: Body) -> None:
    if value in TOOL_CHOICES:
        chat["tool_choice"] = value
    elif isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": value["name"]}}
    else:
        kind = value.get("type") if isinstance(value, dict) else value
        raise unsupported("tool_choice", f"`tool_choice` {kind!r} cannot be translated: use auto, none, required "
                                         "or a function by name.")


def _text(chat: Body, value: Any, payload: Body) -> None:
    if not isinstance(value, dict):
        raise invalid("text", "`text` must be an object.")
    format = value.get("format")
    kind = format.get("type") if isinstance(format, dict) else format
    if kind == "json_schema":
        schema: Body = {"name": format.get("name"), "schema": format.get("schema")}
        for key in ("strict", "description"):
            if format.get(key) is not None:
                schema[key] = format[key]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind not in (None, "text"):
        raise unsupported("text.format", f"`text.format` of type {kind!r} has no Chat Completions equivalent.")
    if value.get("verbosity") is not None:
        chat["verbosity"] = value["verbosity"]


def _reasoning(chat: Body, value: Any, payload: Body) -> None:
    if not isinstance(value, dict):
        raise invalid("reasoning", "`reasoning` must be an object.")
    for key in ("summary", "generate_summary"):
        if value.get(key) is not None:
            raise unsupported(f"reasoning.{key}", f"`reasoning.{key}`: reasoning summaries come from OpenAI's "
                                                      "Responses API only.")
    if value.get("mode") not in (None, "standard"):
        raise unsupported("reasoning.mode", f"Reasoning mode {value['mode']!r} has no Chat Completions equivalent.")
    if value.get("effort") is not None:
        chat["reasoning_effort"] = value["effort"]


def _stream(chat: Body, value: Any, payload: Body) -> None:
    if value is True:
        chat["stream"] = True


def _top_logprobs(chat: Body, value: Any, payload: Body) -> None:
    chat["logprobs"] = True
    chat["top_logprobs"] = value


def _include(chat: Body, value: Any, payload: Body) -> None:
    """The output's logprobs are chat's `logprobs`; every other inclusion is OpenAI's alone."""
    others = [v for v in value if v != LOGPROBS_INCLUDE] if isinstance(value, list) else value
    if others != []:
        raise unsupported("include", "`include` is not available for a provider without a Responses API beyond "
                                     f"{LOGPROBS_INCLUDE!r}: it adds outputs that only OpenAI produces.")
    if value:
        chat["logprobs"] = True


def _safety_identifier(chat: Body, value: Any, payload: Body) -> None:
    if payload.get("user") is None:
        chat["user"] = value


def _renamed(name: str) -> Field:
    def field(chat: Body, value: Any, payload: Body) -> None:
        chat[name] = value

    return field


def _ignored(chat: Body, value: Any, payload: Body) -> None:
    return None


def _refused(name: str, why: str, allowed: Callable[[Any], bool] = lambda value: False) -> Field:
    """A field refused with `why`, unless its value is one `allowed` says changes nothing."""

    def field(chat: Body, value: Any, payload: Body) -> None:
        if not allowed(value):
            raise unsupported(name, f"`{name}` is not available for a provider without a Responses API: {why}")

    return field


def _prompt_cache_options(chat: Body, value: Any, payload: Body) -> None:
    if isinstance(value, dict) and value.get("prewarm"):
        raise unsupported("prompt_cache_options.prewarm", "`prompt_cache_options.prewarm` answers nothing and "
                                                          "warms OpenAI's cache: not available for a provider "
                                                          "without a Responses API.")


FIELDS: dict[str, Field] = {
    # translated
    "model": _ignored,  # the route's upstream model is sent instead
    "input": _ignored,  # with instructions, into messages
    "instructions": _ignored,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _renamed("parallel_tool_calls"),
    "text": _text,
    "reasoning": _reasoning,
    "max_output_tokens": _renamed("max_tokens"),  # what vLLM, llama.cpp and Hyperbolic read
    "temperature": _renamed("temperature"),
    "top_p": _renamed("top_p"),
    "top_logprobs": _top_logprobs,
    "user": _renamed("user"),
    "safety_identifier": _safety_identifier,
    "stream": _stream,
    # ignored: they cannot change what a chat-only upstream answers
    "store": _ignored,  # the proxy's log keeps every call
    "metadata": _ignored,  # recorded in the log's metadata column
    "previous_response_id": _ignored,  # the handler expands it into `input` from the log
    "stream_options": _ignored,  # obfuscation pads native deltas; translated ones have none
    "prompt_cache_key": _ignored,
    "prompt_cache_retention": _ignored,
    "prompt_cache_options": _prompt_cache_options,
    "image": _ignored,  # an image-compression hint
    "max_tool_calls": _ignored,  # limits built-in tools, which are refused anyway
    "background_options": _ignored,  # means something only with background, which is refused
    # refused unless harmless
    "background": _refused("background", "the answer comes while the request waits.", lambda v: v is False),
    "include": _include,
    "truncation": _refused("truncation", "chat servers do not drop input to fit.", lambda v: v == "disabled"),
    "service_tier": _refused("service_tier", "only auto and default apply.", lambda v: v in ("auto", "default")),
    "prompt": _refused("prompt", "prompt templates are stored at OpenAI."),
    "conversation": _refused("conversation", "conversations are stored at OpenAI; use previous_response_id."),
    "context_management": _refused("context_management", "compaction happens inside OpenAI.", lambda v: v == []),
    "moderation": _refused("moderation", "OpenAI's moderation runs inside its Responses API."),
    "access_programs": _refused("access_programs", "access programs are OpenAI's."),
}
