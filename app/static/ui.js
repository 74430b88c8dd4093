// The page's elements, and the small helpers every part of it uses to read fields and show messages.

export const TYPING_DELAY_MS = 180; // debounce: one request once typing pauses, not one per key
export const SAMPLING_FIELDS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "noise"];
export const WORD = /[\p{L}\p{N}'\u2019]+/gu; // a word as the API counts one: letters, digits and apostrophes
export const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;
export const sentence = (text) => (/[.!?…]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);

export const $ = (id) => document.getElementById(id);
export const ui = {
  prompt: $("prompt"), generate: $("generate"), chart: $("chart"), chartSummary: $("chart-summary"),
  chartHeading: $("chart-heading"), chartSource: $("chart-source"), chartSourceEnds: $("chart-source-ends"),
  predictError: $("predict-error"), predictNotice: $("predict-notice"),
  model: $("model"), modelPicker: $("model-picker"),
  modelFacts: $("model-facts"), modelsError: $("models-error"), apiKey: $("api-key"), auth: $("auth"),
  outputPrompt: $("output-prompt"), completion: $("completion"), status: $("generate-status"),
  generateError: $("generate-error"), reuseSeed: $("reuse-seed"), seedUsed: $("seed-used"),
  continueButton: $("continue"), seed: $("seed"), output: $("output"), layout: $("layout"),
  lyrics: $("lyrics"), lyricsLines: $("lyrics-lines"), lyricsSummary: $("lyrics-summary"),
  analyzeError: $("analyze-error"), rhymeFilter: $("rhyme-filter"), rhymesWith: $("rhymes-with"),
  rhymeKind: $("rhyme-kind"), wordSyllables: $("word-syllables"), rhymesWithHint: $("rhymes-with-hint"),
  constraintMass: $("constraint-mass"), lineSyllables: $("line-syllables"), lineRhymesWith: $("line-rhymes-with"),
  lineRhyme: $("line-rhyme"), lineMeter: $("line-meter"), linePlan: $("line-plan"), suggestLines: $("suggest-lines"),
  linesStatus: $("lines-status"), lines: $("lines"), linesNotice: $("lines-notice"), linesError: $("lines-error"),
  alternatives: $("alternatives"), alternativesStatus: $("alternatives-status"),
  alternativesNotice: $("alternatives-notice"), alternativesError: $("alternatives-error"),
  alternativeSyllables: $("alternative-syllables"), neighbours: $("neighbours"),
  neighboursHeading: $("neighbours-heading"),
};

// An error the page shows: the server's message, and its HTTP status (0 when the request never got one).
export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

export function showError(element, error) {
  element.textContent = error ? error.message : "";
  element.hidden = !error;
}

export function showNotice(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

export function numberField(id) {
  const input = $(id);
  if (input.validity.badInput) {
    const label = document.querySelector(`label[for="${id}"]`).textContent;
    throw new ApiError(`${label} must be a number.`);
  }
  return input.value === "" ? undefined : Number(input.value);
}

// Seeds go up to 2^63 - 1, past what a JavaScript number holds exactly, so the digits travel as typed.
export function seedField() {
  if (ui.seed.validity.badInput) throw new ApiError("Seed must be a whole number.");
  const digits = ui.seed.value.trim();
  if (digits === "") return undefined;
  return typeof JSON.rawJSON === "function" && /^-?\d+$/.test(digits) ? JSON.rawJSON(digits) : Number(digits);
}

export function samplingFields(body) {
  for (const name of SAMPLING_FIELDS) body[name] = numberField(name);
  return body;
}

// Songwriter or free writing: which part of the page is in use.
export function mode() {
  return ui.layout.dataset.currentMode;
}

export function formatPercent(prob) {
  const percent = prob * 100;
  return `${percent >= 10 ? percent.toFixed(1) : percent.toPrecision(2)}%`;
}

// A candidate to choose (a next line, another word): its text, then small facts beside it, each [class, text].
export function candidateItem({ text, facts, label, choose, original = false }) {
  const item = document.createElement("li");
  item.dataset.text = text;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "candidate";
  const shown = document.createElement("span");
  shown.className = "candidate-text";
  shown.textContent = text;
  if (original) shown.classList.add("original");
  const box = document.createElement("span");
  box.className = "candidate-facts";
  for (const [className, content] of facts) {
    const fact = document.createElement("span");
    fact.className = className;
    fact.textContent = content;
    box.append(fact);
  }
  button.append(shown, box);
  button.setAttribute("aria-label", label);
  button.addEventListener("click", choose);
  item.append(button);
  return item;
}
