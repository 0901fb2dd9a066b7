// One answer column: a model, its side of the conversation, the answer streaming in, and the
// figures of the call's row (tokens, latency, time to first token, cost, a link to the row).

import { findRow, KeyNeeded, requestUrl, rowUrl } from "./api.js";
import { streamChat } from "./chat.js";

const FIGURES = [
  ["tokens", "Tokens"],
  ["latency", "Latency"],
  ["ttft", "First token"],
  ["cost", "Cost"],
  ["preprocess", "Preprocessed"],
  ["row", "Row"],
];

let columnCount = 0;

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function milliseconds(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value).toLocaleString("en")} ms`;
}

function dollars(value) {
  if (value === null || value === undefined) return "no price known";
  if (value === 0) return "$0";
  return value >= 1 ? `$${value.toFixed(2)}` : `$${value.toFixed(6)}`;
}

function parsed(json) {
  try {
    return JSON.parse(json || "null");
  } catch {
    return null;
  }
}

/** The last user message of a logged chat request: what the model got, after preprocessing. */
function lastUserText(requestJson) {
  const messages = parsed(requestJson)?.messages || [];
  const last = messages.filter((message) => message?.role === "user").pop();
  return typeof last?.content === "string" ? last.content : null;
}

/** `metadata.preprocess` in words: "pii: EMAIL 1, PHONE 2 · truncate: 1". */
function preprocessed(steps) {
  if (!steps) return "—";
  return Object.entries(steps).map(([name, done]) => {
    if (typeof done !== "object") return `${name}: ${done}`;
    const kinds = Object.entries(done).map(([kind, n]) => `${kind} ${n}`);
    return `${name}: ${kinds.join(", ") || "nothing found"}`;
  }).join(" · ");
}

export class Column {
  constructor(model, container) {
    this.model = model;
    this.history = [];  // the messages of the earlier turns that were answered: user, assistant, …
    const id = `column-${++columnCount}`;
    this.node = element("article", { class: "column", "data-testid": "column", "data-model": model,
      "data-state": "idle", "aria-labelledby": `${id}-title` });
    this.node.append(element("h2", { id: `${id}-title` }, model));
    this.past = element("ol", { class: "history", "data-testid": "history", "aria-label": `Earlier turns with ${model}` });
    this.asked = element("p", { class: "asked", "data-testid": "asked", hidden: "" });
    this.answer = element("div", { class: "answer", "data-testid": "answer", "data-model": model,
      "aria-label": `Answer from ${model}`, "aria-busy": "false" });
    this.error = element("p", { class: "error", "data-testid": "answer-error", "data-model": model, role: "alert",
      hidden: "" });
    this.meta = element("dl", { class: "meta", "data-testid": "answer-meta", "data-model": model });
    this.figures = {};
    for (const [name, label] of FIGURES) {
      const value = element("dd", { "data-figure": name }, "—");
      this.meta.append(element("dt", {}, label), value);
      this.figures[name] = value;
    }
    this.node.append(this.past, this.asked, this.answer, this.error, this.meta);
    container.append(this.node);
  }

  remove() {
    this.node.remove();
  }

  /** Forget the conversation: a new one starts with the next prompt. */
  reset() {
    this.history = [];
    this.past.replaceChildren();
    this.showTurn("");
    this.setState("idle");
  }

  setState(state) {
    this.node.dataset.state = state;
    this.answer.setAttribute("aria-busy", String(state === "streaming"));
  }

  showTurn(prompt) {
    this.asked.textContent = prompt;
    this.asked.hidden = !prompt;
    this.answer.textContent = "";
    this.error.textContent = "";
    this.error.hidden = true;
    this.meta.removeAttribute("data-request-id");
    for (const value of Object.values(this.figures)) value.textContent = "—";
  }

  /** The turn on screen goes up into the column's history before the next one starts. */
  archiveTurn() {
    if (this.asked.hidden) return;
    const item = element("li", { "data-testid": "turn" });
    const failed = !this.error.hidden;
    item.append(element("p", { class: "asked" }, this.asked.textContent),
      element("p", { class: failed ? "said failed" : "said" }, failed ? this.error.textContent : this.answer.textContent));
    this.past.append(item);
  }

  /**
   * Ask this column's model `prompt`, after its own earlier turns. `request` holds the system
   * prompt, the headers and the body options shared by every column. Resolves when the column
   * is done, whatever happened; rejects only with KeyNeeded, after showing the error.
   */
  async ask(prompt, request) {
    this.archiveTurn();
    this.showTurn(prompt);
    this.setState("streaming");
    this.figures.tokens.textContent = "streaming…";
    const messages = [...(request.system ? [{ role: "system", content: request.system }] : []),
      ...this.history, { role: "user", content: prompt }];
    try {
      const result = await streamChat({
        model: this.model, messages, headers: request.headers, options: request.options, signal: request.signal,
        onText: (piece) => {
          if (this.figures.ttft.textContent === "—") this.figures.ttft.textContent = "…";
          this.answer.append(piece);
        },
      });
      this.history.push({ role: "user", content: prompt }, { role: "assistant", content: result.text });
      this.figures.latency.textContent = milliseconds(result.latencyMs);
      this.figures.ttft.textContent = milliseconds(result.ttftMs);
      this.setState("done");
      await this.showRow(result.requestId);
    } catch (error) {
      this.error.textContent = error.message;
      this.error.hidden = false;
      this.figures.tokens.textContent = "—";
      this.setState("error");
      if (error.requestId) await this.showRow(error.requestId);
      if (error instanceof KeyNeeded) throw error;
    }
  }

  /** The figures as the log has them, and the link to the row. */
  async showRow(requestId) {
    if (!requestId) return;
    this.meta.dataset.requestId = requestId;
    const link = element("a", { href: requestUrl(requestId) }, "in the log");
    this.figures.row.replaceChildren(link);
    const row = await findRow(requestId);
    if (!row) return;
    link.href = rowUrl(row.id);
    link.textContent = `#${row.id}`;
    this.meta.dataset.rowId = row.id;
    const metadata = parsed(row.metadata);
    if (row.total_tokens !== null) {
      const cut = metadata?.finish_reason;  // the log names the answers that did not end by themselves
      this.figures.tokens.textContent = `${row.total_tokens} (${row.prompt_tokens} in, ${row.completion_tokens} out)`
        + (cut ? `, cut: ${[].concat(cut).join(", ")}` : "");
    }
    this.figures.latency.textContent = milliseconds(row.latency_ms);
    if (row.ttft_ms !== null) this.figures.ttft.textContent = milliseconds(row.ttft_ms);
    this.figures.cost.textContent = row.status_code === 200 ? dollars(row.cost_usd) : "—";
    const steps = metadata?.preprocess;
    this.figures.preprocess.textContent = preprocessed(steps);
    const sent = steps ? lastUserText(row.request_json) : null;
    if (sent !== null && sent !== this.asked.textContent) {
      this.asked.textContent = sent;  // what the model got: the log never holds what a step removed
      this.asked.title = "as sent, after preprocessing";
    }
  }
}
