// The playground page: the form, the columns, the conversation's session, the proxy key.

import { conversationUrl, KeyNeeded, listModels, setProxyKey } from "./api.js";
import { Column } from "./column.js";
import { ModelPicker } from "./models.js";
import { bodyOptions, prefill, preprocessHeader } from "./options.js";

const $ = (id) => document.getElementById(id);
const form = $("ask");
const prompt = $("prompt");
const runButton = $("run");
const stopButton = $("stop");
const status = $("status");
const columnsNode = $("columns");
const columns = new Map();  // model → Column, in the order chosen

let session = "";
let turn = 0;
let running = null;  // the AbortController of the turn being answered
let answered = Promise.resolve();  // settles when the turn being answered is over

/** A session id per conversation: random, and readable in the log. */
function newSession() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  session = `pg-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  turn = 0;
  $("session").textContent = session;
  $("conversation-link").href = conversationUrl(session);
}

function say(text) {
  status.textContent = text;
}

/** Ask for the proxy key in the dialog; resolves once one is given. */
function askForKey(why) {
  const dialog = $("key-dialog");
  const input = $("key-input");
  $("key-why").textContent = why;
  input.value = "";
  return new Promise((resolve) => {
    const keyForm = $("key-form");
    const submit = (event) => {
      event.preventDefault();
      if (!input.value.trim()) return;
      setProxyKey(input.value.trim());
      input.value = "";
      keyForm.removeEventListener("submit", submit);
      dialog.close();
      resolve();
    };
    keyForm.addEventListener("submit", submit);
    dialog.oncancel = (event) => event.preventDefault();  // Escape: without a key nothing here works
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

function syncColumns(models) {
  for (const [model, column] of columns) {
    if (!models.includes(model)) {
      column.remove();
      columns.delete(model);
    }
  }
  for (const model of models) {
    if (!columns.has(model)) columns.set(model, new Column(model, columnsNode));
  }
}

const picker = new ModelPicker({
  list: $("model-list"), filter: $("model-filter"), extra: $("model-extra"), add: $("model-add"),
  onChange: syncColumns,
});

async function loadModels(wanted) {
  for (;;) {
    try {
      const models = await listModels();
      picker.show(models);
      $("models-status").textContent = `${models.length} model${models.length === 1 ? "" : "s"} listed by the proxy.`;
      break;
    } catch (error) {
      if (!(error instanceof KeyNeeded)) {
        $("models-status").textContent = `The model list could not be loaded: ${error.message}`;
        break;
      }
      await askForKey(`The proxy asks for a key (${error.message}).`);
    }
  }
  for (const model of wanted) picker.choose(model, true);
}

function setRunning(controller) {
  running = controller;
  runButton.disabled = controller !== null;
  stopButton.disabled = controller === null;
}

async function run() {
  if (running) return;
  const text = prompt.value.trim();
  if (!text) {
    say("Type a prompt first.");
    prompt.focus();
    return;
  }
  if (!columns.size) {
    say("Choose at least one model.");
    $("model-filter").focus();
    return;
  }
  turn += 1;
  const controller = new AbortController();
  const headers = { "X-Study-Session": session, "X-Study-Tags": "playground",
    "X-Study-Metadata": JSON.stringify({ turn }) };
  const preprocess = preprocessHeader();
  if (preprocess) headers["X-Study-Preprocess"] = preprocess;
  const request = { system: $("system").value.trim(), headers, options: bodyOptions(), signal: controller.signal };
  const asked = [...columns.values()];
  setRunning(controller);
  prompt.value = "";
  prompt.focus();
  say(`Asking ${asked.length} model${asked.length === 1 ? "" : "s"}…`);
  answered = Promise.allSettled(asked.map((column) => column.ask(text, request)));
  const results = await answered;
  setRunning(null);
  const failed = asked.filter((column) => column.node.dataset.state === "error").length;
  say(`Turn ${turn}: ${asked.length - failed} answered${failed ? `, ${failed} failed` : ""}.`);
  const refused = results.find((result) => result.status === "rejected" && result.reason instanceof KeyNeeded);
  if (refused) {
    await askForKey(`The proxy refused the key (${refused.reason.message}). Enter it again, then run the prompt again.`);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  run();
});
form.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    run();
  }
});
stopButton.addEventListener("click", () => running?.abort());
$("new-conversation").addEventListener("click", async () => {
  running?.abort();
  await answered;
  for (const column of columns.values()) column.reset();
  newSession();
  say("New conversation: the next prompt starts it.");
  prompt.focus();
});

newSession();
loadModels(prefill(window.location.search));
