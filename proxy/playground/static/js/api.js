// The proxy as the page sees it: its /v1 API, its proxy key, and the log's rows in Datasette.
// Paths are relative to /playground/, so the page works wherever the proxy is mounted.

const KEY_NAME = "study-query-llm.proxy-key";
const UI = "../ui/";
// How long the page waits for a call's row to reach the log (the recorder writes in batches).
const ROW_WAITS_MS = [100, 200, 300, 500, 800, 1200];

/** Raised when the proxy wants a proxy key (HTTP 401). */
export class KeyNeeded extends Error {}

/** The proxy key of this tab; sessionStorage only, so it leaves with the tab. */
export function proxyKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setProxyKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

export function authHeaders() {
  const key = proxyKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** What an error answer says, in words: OpenAI's `error.message` when it has one. */
export async function errorText(response) {
  let text = "";
  try {
    text = await response.text();
    const message = JSON.parse(text)?.error?.message;
    if (message) text = message;
  } catch {
    // not JSON: the text as it came
  }
  return `HTTP ${response.status}: ${text.trim() || response.statusText || "no explanation given"}`;
}

/** The ids of `GET /v1/models` (every provider's models, the default ones and the aliases). */
export async function listModels() {
  const response = await fetch("../v1/models", { headers: { Accept: "application/json", ...authHeaders() } });
  if (response.status === 401) throw new KeyNeeded(await errorText(response));
  if (!response.ok) throw new Error(await errorText(response));
  const body = await response.json();
  return (body.data || []).map((model) => model.id).filter((id) => typeof id === "string");
}

/** The call's row in the log, through Datasette's JSON API, once the recorder has written it;
 *  null when there is no Datasette (a PostgreSQL log) or the row did not come in time. */
export async function findRow(requestId) {
  const query = new URLSearchParams({ request_id: requestId, _shape: "objects" });
  for (const wait of ROW_WAITS_MS) {
    // no-store: Datasette lets browsers keep its answers for a few seconds, and an early "no row yet" would stick
    const response = await fetch(`${UI}log/inference_runs.json?${query}`, { headers: authHeaders(), cache: "no-store" });
    if (response.status === 404) return null;
    if (response.ok) {
      const rows = (await response.json()).rows || [];
      if (rows.length) return rows[0];
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
  return null;
}

export function rowUrl(id) {
  return `${UI}log/inference_runs/${encodeURIComponent(id)}`;
}

export function requestUrl(requestId) {
  return `${UI}log/inference_runs?${new URLSearchParams({ request_id: requestId })}`;
}

export function conversationUrl(session) {
  return `${UI}log/conversation?${new URLSearchParams({ session })}`;
}
