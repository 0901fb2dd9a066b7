"""The answers beside chat, completions and responses: embeddings, the model list, and the forwarded endpoints.

Forwarded endpoints (`/audio/speech`, `/audio/transcriptions`, `/moderations`, …) get a small
answer of their kind by how the path ends, or else an echo of what the fake received.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from fake_routes import RecordedRequest

#: Usage reported for an embeddings call: 3 tokens per input.
EMBEDDING_TOKENS_PER_INPUT = 3
#: The vector every embedding input gets (index i adds i to the first component).
VECTOR = [0.25, -0.5, 0.125, 1.0]

#: The ids every `GET …/models` lists (but see FAILING_MODELS_PREFIX and HANGING_MODELS_PREFIX).
MODELS = ("fake-model", "gpt-4o-mini", "whisper-1")
#: The provider living under this prefix cannot list its models: its `GET …/models` answers 500.
FAILING_MODELS_PREFIX = "/hyperbolic/v1"
#: The provider living under this prefix never answers its `GET …/models` (until the client leaves).
HANGING_MODELS_PREFIX = "/hang/v1"
#: The body of every `…/audio/speech` answer (`audio/mpeg`).
SPEECH = b"ID3\x04\x00fake-mp3" + bytes(range(256)) * 8
#: For a `drip-*` model, speech comes in this many pieces, this many seconds apart.
SPEECH_CHUNKS, SPEECH_GAP = 8, 0.15
#: What a file's content (`GET …/files/{id}/content`) is made of.
FILE_BYTE = b"\xa5"


def forwarded_answer(recorded: RecordedRequest, headers: dict[str, str]) -> Response:
    """What the fake answers on an endpoint the proxy forwards, by the path's end."""
    path, body = recorded.path, recorded.json if isinstance(recorded.json, dict) else {}
    if path.endswith("/audio/speech"):
        if str(body.get("model", "")).startswith("drip-"):  # generated as it is spoken
            return dripping(SPEECH, len(SPEECH) // SPEECH_CHUNKS, SPEECH_GAP, "audio/mpeg", headers)
        return Response(SPEECH, media_type="audio/mpeg", headers=headers)
    if recorded.method == "GET" and path.endswith("/content"):  # a file's content: ?bytes=N&gap=S&cut=K
        size, params = int(recorded.query_params.get("bytes", "1000")), recorded.query_params
        data = FILE_BYTE * size
        return dripping(data, 1 << 16, float(params.get("gap", "0")), "application/octet-stream", headers,
                        cut=int(params["cut"]) if "cut" in params else None)
    if path.endswith("/audio/transcriptions"):
        filename, _, data = recorded.files.get("file", (None, None, b""))
        return JSONResponse({"text": transcription_text(filename, len(data))}, headers=headers)
    if path.endswith("/moderations"):
        result = {"flagged": False, "categories": {"hate": False}, "category_scores": {"hate": 0.001}}
        return JSONResponse({"id": "modr-fake", "model": body.get("model"), "results": [result]}, headers=headers)
    if path.endswith("/images/generations"):
        image = {"url": "https://images.invalid/fake.png", "revised_prompt": body.get("prompt")}
        return JSONResponse({"created": 1_700_000_000, "data": [image]}, headers=headers)
    if recorded.method == "GET" and path.endswith("/chat/completions"):  # those stored with `store: true`
        stored = {"id": "chatcmpl-stored1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "kept"}, "finish_reason": "stop"}]}
        return JSONResponse({"object": "list", "data": [stored], "first_id": stored["id"], "last_id": stored["id"],
                             "has_more": False}, headers=headers)
    if recorded.method == "GET" and path.endswith("/files"):
        files = [{"id": "file-abc123", "object": "file", "bytes": 120, "created_at": 1_700_000_000,
                  "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}]
        return JSONResponse({"object": "list", "data": files, "has_more": False}, headers=headers)
    echo = {
        "object": "fake.echo", "method": recorded.method, "path": path, "query": recorded.query,
        "model": recorded.model, "bytes": len(recorded.raw_body),
        "pad": "p" * int(recorded.query_params.get("pad", "0")),
    }
    return JSONResponse(echo, headers=headers)


def dripping(data: bytes, chunk: int, gap: float, media_type: str, headers: dict[str, str],
             cut: int | None = None) -> StreamingResponse:
    """`data` with its Content-Length, sent `chunk` bytes at a time `gap` seconds apart; with
    `cut`, the connection is dropped once that many bytes are out."""

    async def pieces():
        for start in range(0, len(data) if cut is None else cut, chunk):
            if start and gap:
                await asyncio.sleep(gap)
            yield data[start:start + chunk if cut is None else min(start + chunk, cut)]

    return StreamingResponse(pieces(), media_type=media_type, headers={**headers, "content-length": str(len(data))})


def transcription_text(filename: str | None, size: int) -> str:
    """The text the fake transcribes an uploaded file to."""
    return f"Fake transcription of {filename} ({size} bytes)"


def embedding_vector(index: int, dimensions: int = len(VECTOR)) -> list[float]:
    """The vector of input `index`: VECTOR repeated to `dimensions` numbers, `index` added to the first."""
    vector = [VECTOR[j % len(VECTOR)] for j in range(dimensions)]
    vector[0] += index
    return vector


def embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An embeddings answer: one `embedding_vector` per input, as floats or base64 as the body asks."""
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    dimensions = body.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and dimensions > 0 else len(VECTOR)
    data = []
    for i, _ in enumerate(inputs):
        vector = embedding_vector(i, size)
        if body.get("encoding_format") == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
