"""`logprobs` from the mock, in Chat Completions and the Responses API: the shape a model
gives, for code that reads it.

The mock samples nothing, so every token it says was certain: its log probability is 0.
Asked for `top_logprobs`, the alternatives are placeholders (`<alt1>`, …) at -9999, the
value OpenAI gives tokens it would never pick. Tokens are the pieces the answer streams in
(a word with its leading space), as usage counts them. Tool calls have no content tokens.
The Responses API gives them when `include` lists `message.output_text.logprobs`; legacy
completions, asked with `logprobs: N`, in their own shape (parallel lists).
"""

from __future__ import annotations

from typing import Any

from ..responses.builder import wants_logprobs
from .mock_answer import Answer
from .mock_conversation import MockRequestError

#: OpenAI's log probability for a token it would never pick.
NEVER = -9999.0
#: The most alternatives legacy completions give per token.
MAX_COMPLETIONS_LOGPROBS = 5


def wanted(payload: dict[str, Any]) -> int | None:
    """How many alternatives per token, if logprobs are asked for (`None`: not asked); checked."""
    asked, top = payload.get("logprobs"), payload.get("top_logprobs")
    if asked is not None and not isinstance(asked, bool):
        raise MockRequestError(f"Invalid type for 'logprobs': expected a boolean, but got {type(asked).__name__} instead.",
                               "logprobs")
    if top is not None and not asked:
        raise MockRequestError("Invalid value for 'top_logprobs': it needs 'logprobs' set to true.", "top_logprobs")
    return (top or 0) if asked else None


def completions_wanted(payload: dict[str, Any]) -> int | None:
    """Legacy completions' `logprobs`: how many alternatives per token (0 to 5), None when unset."""
    count = payload.get("logprobs")
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COMPLETIONS_LOGPROBS:
        raise MockRequestError(f"Invalid value for 'logprobs': expected an integer from 0 to {MAX_COMPLETIONS_LOGPROBS}, "
                               f"but got {count!r} instead.", "logprobs")
    return count


def completions_logprobs(pieces: list[str], top: int | None, offset: int = 0) -> dict[str, Any] | None:
    """A legacy choice's `logprobs`: parallel lists, and `text_offset` from `offset` on."""
    if top is None:
        return None
    offsets = []
    for piece in pieces:
        offsets.append(offset)
        offset += len(piece)
    return {"tokens": pieces, "token_logprobs": [0.0] * len(pieces),
            "top_logprobs": [dict(_ranked(piece, top)) for piece in pieces], "text_offset": offsets}


def responses_wanted(payload: dict[str, Any]) -> int | None:
    """`wanted` for the Responses API: `include` names the output's logprobs (`top_logprobs`
    is checked with the other parameters)."""
    return (payload.get("top_logprobs") or 0) if wants_logprobs(payload) else None


def tokens(pieces: list[str], top: int) -> list[dict[str, Any]]:
    """One entry per piece of text."""
    return [_token(piece, top) for piece in pieces]


def logprobs(said: Answer, top: int | None, pieces: list[str] | None = None) -> dict[str, Any] | None:
    """A choice's (or a chunk's, with its `pieces`) `logprobs` object; None when not asked for."""
    if top is None:
        return None
    if said.call is not None:
        return {"content": None, "refusal": None}
    return {"content": tokens(said.pieces() if pieces is None else pieces, top), "refusal": None}


def _token(piece: str, top: int) -> dict[str, Any]:
    return {**_entry(piece, 0.0), "top_logprobs": [_entry(token, logprob) for token, logprob in _ranked(piece, top)]}


def _ranked(piece: str, top: int) -> list[tuple[str, float]]:
    """The `top` most likely tokens where `piece` was said: itself, then placeholders."""
    return [(piece, 0.0), *((f"<alt{i}>", NEVER) for i in range(1, top))][:top]


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}
