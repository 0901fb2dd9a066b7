// The page's settings as a request carries them (the X-Study-Preprocess header, the body's
// temperature and max_tokens), and the query parameters that prefill them:
// ?models=a,b&prompt=…&system=…&preprocess=pii,truncate=500&temperature=0.2&max_tokens=200

const field = (id) => document.getElementById(id);

/** `whitespace, pii, truncate=N, template=NAME` from the form; "" when none is chosen. */
export function preprocessHeader() {
  const steps = [];
  if (field("pre-whitespace").checked) steps.push("whitespace");
  if (field("pre-pii").checked) steps.push("pii");
  const truncate = field("pre-truncate").value.trim();
  if (truncate) steps.push(`truncate=${truncate}`);
  const template = field("pre-template").value.trim();
  if (template) steps.push(`template=${template}`);
  return steps.join(",");
}

/** The body fields every column sends besides model and messages. */
export function bodyOptions() {
  const options = {};
  const temperature = field("temperature").value.trim();
  if (temperature !== "") options.temperature = Number(temperature);
  const maxTokens = field("max-tokens").value.trim();
  if (maxTokens !== "") options.max_tokens = Number(maxTokens);
  return options;
}

function setPreprocess(list) {
  for (const item of list.split(",")) {
    const [name, value = ""] = item.trim().split("=", 2).map((part) => part.trim());
    if (name === "whitespace") field("pre-whitespace").checked = true;
    else if (name === "pii") field("pre-pii").checked = true;
    else if (name === "truncate") field("pre-truncate").value = value;
    else if (name === "template") field("pre-template").value = value;
  }
}

/** Fill the form from the page's query parameters; returns the models they name, in order. */
export function prefill(search) {
  const params = new URLSearchParams(search);
  for (const [param, id] of [["prompt", "prompt"], ["system", "system"], ["temperature", "temperature"],
    ["max_tokens", "max-tokens"]]) {
    if (params.has(param)) field(id).value = params.get(param);
  }
  if (params.has("preprocess")) setPreprocess(params.get("preprocess"));
  return (params.get("models") || "").split(",").map((model) => model.trim()).filter(Boolean);
}
