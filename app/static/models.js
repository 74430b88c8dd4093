// The loaded models: the picker (when there are several) and the chosen model's facts.
import { request } from "./api.js";
import { $, showError, ui } from "./ui.js";

let modelCards = [];

export function selectedModel() {
  return ui.modelPicker.hidden || !ui.model.value ? undefined : ui.model.value;
}

// A number field's value for the request: undefined when empty (the server's default applies).
// Text the browser cannot read as a number never reaches the server, so it is reported here.
function describeModel(card) {
  const millions = (card.parameters / 1e6).toFixed(card.parameters < 1e6 ? 2 : 1);
  const facts = [`${card.cell.toUpperCase()}, ${card.layers} layers of ${card.hidden_size}`,
    `${millions} M parameters`, `${card.vocab_size} tokens`];
  if (card.trained_on) facts.push(`trained on ${card.trained_on}`);
  if (card.val_nats_per_char != null) facts.push(`${card.val_nats_per_char.toFixed(2)} nats/char`);
  return `${card.id}: ${facts.join(" · ")}`;
}

export async function loadModels() {
  try {
    const list = await (await request("/v1/models")).json();
    modelCards = list.data;
    const previous = ui.model.value;
    ui.model.replaceChildren(...modelCards.map((card) => new Option(card.id, card.id, card.default, card.default)));
    if (modelCards.some((card) => card.id === previous)) ui.model.value = previous;
    ui.modelPicker.hidden = modelCards.length < 2;
    showModelFacts();
    showError(ui.modelsError, null);
  } catch (error) {
    showError(ui.modelsError, error);
  }
}

export function showModelFacts() {
  const card = modelCards.find((c) => c.id === ui.model.value) || modelCards[0];
  ui.modelFacts.textContent = card ? describeModel(card) : "";
  const topK = $("top_k");
  if (card) topK.max = String(card.vocab_size);
}

