// One streamed chat completion through the proxy: POST /v1/chat/completions with stream: true,
// the SSE events read off the body as they arrive (fetch + ReadableStream), the text handed
// out piece by piece.

import { authHeaders, errorText, KeyNeeded } from "./api.js";

/** The `data:` payloads of a server-sent event stream, in order, as they arrive. */
export async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    buffer = buffer.replace(/\r/g, "");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = dataOf(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (data !== null) yield data;
    }
    if (done) break;
  }
  const rest = dataOf(buffer);
  if (rest !== null) yield rest;
}

function dataOf(block) {
  const lines = block.split("\n").filter((line) => line.startsWith("data:"));
  return lines.length ? lines.map((line) => line.slice(5).replace(/^ /, "")).join("\n") : null;
}

/** The text (or refusal) a chunk adds; throws on an error event. */
function chunkText(data) {
  const event = JSON.parse(data);
  if (event.error) throw new Error(event.error.message || JSON.stringify(event.error));
  const delta = event.choices?.[0]?.delta || {};
  return (delta.content || "") + (delta.refusal || "");
}

/**
 * Ask `model`, streaming. `onText(piece)` gets each piece of the answer as it arrives.
 * Resolves to { text, requestId, ttftMs, latencyMs }; rejects with an Error that says, in words,
 * what went wrong (KeyNeeded on a 401), carrying `requestId` when the proxy gave the call a row.
 */
export async function streamChat({ model, messages, headers, options, signal, onText }) {
  const started = performance.now();
  const body = { model, messages, stream: true, ...options };
  let response;
  try {
    response = await fetch("../v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders(), ...headers },
      body: JSON.stringify(body),
      signal,
    });
  } catch (error) {
    throw signal?.aborted ? stopped() : new Error(`The proxy could not be reached: ${error.message}`);
  }
  const requestId = response.headers.get("x-study-request-id");
  const fail = (error) => Object.assign(error, { requestId });
  if (response.status === 401) throw fail(new KeyNeeded(await errorText(response)));
  if (!response.ok) throw fail(new Error(await errorText(response)));
  let text = "";
  let ttftMs = null;
  try {
    if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      text = (await response.json()).choices?.[0]?.message?.content || "";  // an upstream that answered whole
      onText(text);
    } else {
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        const piece = chunkText(data);
        if (!piece) continue;
        if (ttftMs === null) ttftMs = performance.now() - started;
        text += piece;
        onText(piece);
      }
    }
  } catch (error) {
    throw fail(signal?.aborted ? stopped() : new Error(`The stream broke off: ${error.message}`));
  }
  return { text, requestId, ttftMs, latencyMs: performance.now() - started };
}

function stopped() {
  return new Error("Stopped before the answer was complete.");
}
