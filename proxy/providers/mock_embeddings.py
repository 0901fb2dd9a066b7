"""The mock's embeddings: deterministic vectors per text, as floats or base64 like OpenAI sends them.

openai-node asks for base64 by default and openai-python does when the caller names no
format; both decode little-endian float32. `dimensions` is honoured (8 when not asked).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from .mock_conversation import MAX_BATCH, MockRequestError

DEFAULT_DIMENSIONS = 8
#: OpenAI's limit: text-embedding-3-large's 3072 dimensions (and `MAX_BATCH` inputs a request).
MAX_DIMENSIONS = 3072


def embeddings(payload: dict[str, Any]) -> dict[str, Any]:
    """The `/embeddings` answer for `payload`; a 400 for a format or size OpenAI would refuse."""
    inputs = _inputs(payload.get("input"))
    if len(inputs) > MAX_BATCH:
        raise MockRequestError(f"`input` may hold at most {MAX_BATCH} items.", "input")
    dimensions = payload.get("dimensions")
    if dimensions is None:
        dimensions = DEFAULT_DIMENSIONS
    elif isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise MockRequestError(f"`dimensions` must be a whole number from 1 to {MAX_DIMENSIONS}.", "dimensions")
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise MockRequestError("`encoding_format` must be 'float' or 'base64'.", "encoding_format")
    encode = _base64 if encoding == "base64" else _identity
    data = [
        {"object": "embedding", "index": i, "embedding": encode(vector(str(text), dimensions))}
        for i, text in enumerate(inputs)
    ]
    tokens = sum(len(text) if isinstance(text, list) else len(text.split()) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": payload.get("model", "echo"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _inputs(value: Any) -> list[Any]:
    """What OpenAI embeds: a string, a list of strings, a list of token ids, or a list of
    such lists; none of them empty."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(map(_is_token, value))):
        value = [value]
    if not isinstance(value, list) or not value or not all(
        (isinstance(item, str) or (isinstance(item, list) and all(map(_is_token, item)))) and item for item in value
    ):
        raise MockRequestError("'$.input' is invalid: send a non-empty string, a list of them, or token ids.", "input")
    return value


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def vector(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A deterministic vector in [-1, 1]: the same text always embeds the same way.

    Up to 32 dimensions it is the SHA-256 of the text (the vectors the mock always gave);
    longer ones come from SHAKE-256, which yields any length.
    """
    data = text.encode()
    digest = hashlib.sha256(data).digest() if dimensions <= 32 else hashlib.shake_256(data).digest(dimensions)
    return [round(b / 255 * 2 - 1, 6) for b in digest[:dimensions]]


def _base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _identity(values: list[float]) -> list[float]:
    return values
