"""The sampling parameters the mock checks as OpenAI does: their types and bounds.

The mock does not sample, so it uses none of them but `n`, the token limits (an answer
longer than `max_tokens` is cut there, as a model's is) and `stop`; a value OpenAI would
refuse is refused here too (400 naming the field), so that code which works against the
mock does not fail on its first call to a real model.
"""

from __future__ import annotations

from typing import Any

from .mock_conversation import MockRequestError

#: name → (integer only, least, most); None: no bound.
Bounds = tuple[bool, float | None, float | None]
SAMPLING: dict[str, Bounds] = {"temperature": (False, 0, 2), "top_p": (False, 0, 1)}
CHAT: dict[str, Bounds] = {
    **SAMPLING, "n": (True, 1, 128), "max_tokens": (True, 1, None), "max_completion_tokens": (True, 1, None),
    "presence_penalty": (False, -2, 2), "frequency_penalty": (False, -2, 2), "seed": (True, None, None),
    "top_logprobs": (True, 0, 20),
}
PARAMETERS: dict[str, dict[str, Bounds]] = {
    "chat/completions": CHAT,
    "completions": {**CHAT, "max_tokens": (True, 0, None), "best_of": (True, 0, 20)},
    "responses": {**SAMPLING, "max_output_tokens": (True, 16, None), "top_logprobs": (True, 0, 20),
                  "max_tool_calls": (True, 1, None)},
}
#: Fields whose JSON type OpenAI checks and the mock only takes as said: name → (type, its name).
#: Their values are not enumerated here (a newer model may take a newer value), except
#: `truncation`'s, which OpenAI has kept to two.
KINDS: dict[str, dict[str, tuple[type, str]]] = {
    "responses": {
        "include": (list, "an array"), "reasoning": (dict, "an object"), "store": (bool, "a boolean"),
        "background": (bool, "a boolean"), "parallel_tool_calls": (bool, "a boolean"), "truncation": (str, "a string"),
        "service_tier": (str, "a string"), "user": (str, "a string"),
    },
    "chat/completions": {
        "store": (bool, "a boolean"), "parallel_tool_calls": (bool, "a boolean"), "service_tier": (str, "a string"),
        "reasoning_effort": (str, "a string"), "user": (str, "a string"), "modalities": (list, "an array"),
    },
}
TRUNCATIONS = ("auto", "disabled")
#: OpenAI's `metadata`: at most 16 pairs of strings, keys up to 64 characters, values up to 512.
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512


def check_parameters(endpoint: str, payload: dict[str, Any]) -> None:
    """Raise `MockRequestError` for the first parameter OpenAI would refuse (null means unset)."""
    for name, (kind, kind_name) in KINDS.get(endpoint, {}).items():
        value = payload.get(name)
        if value is not None and not isinstance(value, kind):
            raise MockRequestError(f"Invalid type for '{name}': expected {kind_name}, but got "
                                   f"{type(value).__name__} instead.", name)
    for i, value in enumerate(payload.get("include") or () if endpoint == "responses" else ()):
        if not isinstance(value, str):
            raise MockRequestError(f"Invalid type for 'include[{i}]': expected a string, but got "
                                   f"{type(value).__name__} instead.", f"include[{i}]")
    if endpoint == "chat/completions" and "audio" in (payload.get("modalities") or ()):
        raise MockRequestError("The mock answers text only: it cannot honour 'modalities' with \"audio\" "
                               "(an audio model's answer carries `message.audio`).", "modalities")
    truncation = payload.get("truncation") if endpoint == "responses" else None
    if truncation is not None and truncation not in TRUNCATIONS:
        raise MockRequestError(f"Invalid value for 'truncation': {truncation!r}. Supported values are: 'auto' and "
                               "'disabled'.", "truncation")
    for name, (integer, least, most) in PARAMETERS.get(endpoint, {}).items():
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            expected = "an integer" if integer else "a number"
            raise MockRequestError(f"Invalid type for '{name}': expected {expected}, but got "
                                   f"{type(value).__name__} instead.", name)
        if least is not None and value < least:
            raise MockRequestError(f"Invalid '{name}': expected a value >= {least:g}, but got {value!r} instead.", name)
        if most is not None and value > most:
            raise MockRequestError(f"Invalid '{name}': expected a value <= {most:g}, but got {value!r} instead.", name)
    metadata = payload.get("metadata") if endpoint in ("chat/completions", "responses") else None
    if metadata is not None:
        check_metadata(metadata)
    best_of = payload.get("best_of") if endpoint == "completions" else None
    if best_of is not None and best_of < choices(payload):
        raise MockRequestError("Invalid 'best_of': best_of must be greater than or equal to n.", "best_of")
    if best_of is not None and best_of > 1 and payload.get("stream"):
        raise MockRequestError("Invalid 'best_of': results cannot be streamed when best_of is greater than 1.", "best_of")


def check_metadata(metadata: Any) -> None:
    """`metadata` as OpenAI takes it (Chat Completions and Responses alike)."""
    if not isinstance(metadata, dict):
        raise MockRequestError(f"Invalid type for 'metadata': expected an object, but got {type(metadata).__name__} "
                               "instead.", "metadata")
    if len(metadata) > METADATA_PAIRS:
        raise MockRequestError(f"Invalid 'metadata': too many properties. Expected an object with at most "
                               f"{METADATA_PAIRS} properties, but got an object with {len(metadata)} properties "
                               "instead.", "metadata")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY:
            raise MockRequestError(f"Invalid 'metadata': a key may have at most {METADATA_KEY} characters, but "
                                   f"{key[:METADATA_KEY]!r}… has {len(key)}.", "metadata")
        if not isinstance(value, str):
            raise MockRequestError(f"Invalid type for 'metadata.{key}': expected a string, but got "
                                   f"{type(value).__name__} instead.", f"metadata.{key}")
        if len(value) > METADATA_VALUE:
            raise MockRequestError(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                                   f"length {METADATA_VALUE}, but got a string with length {len(value)} instead.",
                                   f"metadata.{key}")


def choices(payload: dict[str, Any]) -> int:
    """`n`: how many choices to answer (Chat Completions and legacy completions; checked)."""
    n = payload.get("n")
    return 1 if n is None else int(n)


#: Where each endpoint takes its limit on the answer's tokens.
TOKEN_LIMITS = {
    "chat/completions": ("max_tokens", "max_completion_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}


#: The most tokens the mock writes in one answer, as a model has a most it will write.
MAX_ANSWER_TOKENS = 4096
#: The most one call's answers hold in all: the tokens of every choice, each with its logprob
#: alternatives. An echoed 400 KB prompt in 8 choices with `top_logprobs: 5` was a 592 MB
#: answer and 4.2 GB of memory without it.
MAX_CALL_TOKENS = 65_536


def token_limit(endpoint: str, payload: dict[str, Any], alternatives: int | None = None, prompts: int = 1) -> int:
    """The most tokens each answer may have: the request's limit (the smaller when chat sets
    both; checked) within the mock's own, which `n` choices of each of the `prompts` and
    `alternatives` per token share."""
    shares = (choices(payload) * prompts if endpoint != "responses" else 1) * (1 + (alternatives or 0))
    limits = [payload[name] for name in TOKEN_LIMITS.get(endpoint, ()) if payload.get(name) is not None]
    return min([*limits, MAX_ANSWER_TOKENS, max(1, MAX_CALL_TOKENS // shares)])


#: OpenAI takes up to this many stop sequences.
MAX_STOPS = 4


def stop_sequences(endpoint: str, payload: dict[str, Any]) -> list[str]:
    """`stop` of Chat Completions and legacy completions as a list (checked); [] when unset."""
    stop = payload.get("stop") if endpoint in ("chat/completions", "completions") else None
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(one, str) and one for one in stops):
        raise MockRequestError("Invalid value for 'stop': expected a string or a list of non-empty strings.", "stop")
    if len(stops) > MAX_STOPS:
        raise MockRequestError(f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOPS}, "
                               f"but got an array with length {len(stops)} instead.", "stop")
    return stops
