// The model picker: a checkbox per model the proxy lists, a filter, and a box for a model it does
// not list (any `provider/model` routes). The chosen models keep the order they were chosen in,
// which is the order of the columns.

let boxCount = 0;

export class ModelPicker {
  constructor({ list, filter, extra, add, onChange }) {
    this.list = list;
    this.onChange = onChange;
    this.chosen = [];
    this.boxes = new Map();  // model id → its checkbox
    filter.addEventListener("input", () => this.filter(filter.value));
    const addExtra = () => {
      const model = extra.value.trim();
      if (!model) return;
      this.choose(model, true);
      extra.value = "";
    };
    add.addEventListener("click", addExtra);
    extra.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        addExtra();
      }
    });
  }

  /** A checkbox for each of `models` not shown yet. */
  show(models) {
    for (const model of models) this.box(model);
  }

  box(model) {
    if (this.boxes.has(model)) return this.boxes.get(model);
    const id = `model-${++boxCount}`;
    const row = document.createElement("div");
    row.className = "model";
    row.dataset.model = model;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = id;
    box.value = model;
    box.dataset.testid = "model-option";
    box.addEventListener("change", () => this.choose(model, box.checked));
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = model;
    row.append(box, label);
    this.list.append(row);
    this.boxes.set(model, box);
    return box;
  }

  /** Choose a model (or leave it out); a model not listed yet gets its checkbox. */
  choose(model, on) {
    this.box(model).checked = on;
    const was = this.chosen.includes(model);
    if (on && !was) this.chosen.push(model);
    if (!on && was) this.chosen = this.chosen.filter((m) => m !== model);
    if (on !== was) this.onChange([...this.chosen]);
  }

  filter(text) {
    const words = text.toLowerCase().split(/\s+/).filter(Boolean);
    for (const [model, box] of this.boxes) {
      box.parentElement.hidden = !words.every((word) => model.toLowerCase().includes(word));
    }
  }
}
