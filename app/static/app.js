// The demo page: next-word chart as you type, streamed generation, sampling controls.
// Plain browser JavaScript, no build step; the only network it uses is this server's /v1 API.
"use strict";

const PREDICT_DELAY_MS = 180; // debounce: one request once typing pauses, not one per key
const CHART_SIZE = 10;
const END_OF_TEXT = "</s>"; // the word unit "end of the text" (API.md, /v1/predict)
const SAMPLING_FIELDS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "noise"];

const $ = (id) => document.getElementById(id);
const ui = {
  prompt: $("prompt"), generate: $("generate"), chart: $("chart"), chartSummary: $("chart-summary"),
  unitName: $("unit-name"), predictError: $("predict-error"), model: $("model"), modelPicker: $("model-picker"),
  modelFacts: $("model-facts"), modelsError: $("models-error"), apiKey: $("api-key"), auth: $("auth"),
  outputPrompt: $("output-prompt"), completion: $("completion"), status: $("generate-status"),
  generateError: $("generate-error"), reuseSeed: $("reuse-seed"), seedUsed: $("seed-used"),
  continueButton: $("continue"), seed: $("seed"), output: $("output"),
};

// -- talking to the server --------------------------------------------------------------

class ApiError extends Error {}

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

// The error envelope's message when there is one; something readable when there is not (a proxy's page).
async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) ui.auth.open = true;
  if (response.status === 429) message += " — try again in a moment";
  return new ApiError(message);
}

async function request(path, body, signal) {
  let response;
  try {
    response = await fetch(path, body === undefined ? { headers: headers(), signal }
      : { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`Could not reach the server (${error.message}).`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

function showError(element, error) {
  element.textContent = error ? error.message : "";
  element.hidden = !error;
}

function selectedModel() {
  return ui.modelPicker.hidden || !ui.model.value ? undefined : ui.model.value;
}

// A number field's value for the request: undefined when empty (the server's default applies).
// Text the browser cannot read as a number never reaches the server, so it is reported here.
function numberField(id) {
  const input = $(id);
  if (input.validity.badInput) {
    const label = document.querySelector(`label[for="${id}"]`).textContent;
    throw new ApiError(`${label} must be a number.`);
  }
  return input.value === "" ? undefined : Number(input.value);
}

// Seeds go up to 2^63 - 1, past what a JavaScript number holds exactly, so the digits travel as typed.
function seedField() {
  if (ui.seed.validity.badInput) throw new ApiError("Seed must be a whole number.");
  const digits = ui.seed.value.trim();
  if (digits === "") return undefined;
  return typeof JSON.rawJSON === "function" && /^-?\d+$/.test(digits) ? JSON.rawJSON(digits) : Number(digits);
}

// -- models ------------------------------------------------------------------------------

function describeModel(card) {
  const millions = (card.parameters / 1e6).toFixed(card.parameters < 1e6 ? 2 : 1);
  const facts = [`${card.cell.toUpperCase()}, ${card.layers} layers of ${card.hidden_size}`,
    `${millions} M parameters`, `${card.vocab_size} tokens`];
  if (card.trained_on) facts.push(`trained on ${card.trained_on}`);
  if (card.val_nats_per_char != null) facts.push(`${card.val_nats_per_char.toFixed(2)} nats/char`);
  return `${card.id}: ${facts.join(" · ")}`;
}

let modelCards = [];

async function loadModels() {
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

function showModelFacts() {
  const card = modelCards.find((c) => c.id === ui.model.value) || modelCards[0];
  ui.modelFacts.textContent = card ? describeModel(card) : "";
  const topK = $("top_k");
  if (card) topK.max = String(card.vocab_size);
}

// -- the next-word chart -----------------------------------------------------------------

let predictTimer = 0;
let predictSequence = 0; // the newest request's number: only its answer may draw the chart
let predictInFlight = null;

function schedulePrediction() {
  clearTimeout(predictTimer);
  predictTimer = setTimeout(predict, PREDICT_DELAY_MS);
}

function unit() {
  return document.querySelector('input[name="unit"]:checked').value;
}

async function predict() {
  const sequence = ++predictSequence;
  if (predictInFlight) predictInFlight.abort(); // its answer could only be stale; spare the server the work
  const controller = new AbortController();
  predictInFlight = controller;
  const prompt = ui.prompt.value;
  ui.chart.setAttribute("aria-busy", "true");
  try {
    const body = { prompt, top_k: CHART_SIZE, unit: unit(), temperature: numberField("temperature"),
      model: selectedModel() };
    const answer = await (await request("/v1/predict", body, controller.signal)).json();
    if (sequence !== predictSequence) return; // a newer request was sent meanwhile: its answer draws the chart
    drawChart(answer, prompt, body.temperature);
    showError(ui.predictError, null);
  } catch (error) {
    if (error.name === "AbortError" || sequence !== predictSequence) return;
    ui.chart.replaceChildren(); // bars for another prompt or temperature would mislead next to the error
    delete ui.chart.dataset.prompt;
    ui.chartSummary.textContent = "No prediction for this prompt and temperature.";
    showError(ui.predictError, error);
  } finally {
    if (sequence === predictSequence) {
      ui.chart.setAttribute("aria-busy", "false");
      predictInFlight = null;
    }
  }
}

// How a unit reads on screen: line breaks and the end of the text have no glyph of their own.
function visibleUnit(text) {
  if (text === END_OF_TEXT) return "⟨end of text⟩";
  if (text === "\n") return "↵ line break";
  return text.replace(/\n/g, "↵").replace(/^ /, "␣")
    .replace(/\p{Cc}/gu, (c) => `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
}

function drawChart(answer, prompt, temperature) {
  const top = answer.distribution.length ? answer.distribution[0].prob : 1;
  const rows = answer.distribution.map((candidate) => {
    const percent = formatPercent(candidate.prob);
    const item = document.createElement("li");
    item.dataset.text = candidate.text;
    item.dataset.prob = String(candidate.prob);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "bar-row";
    button.setAttribute("aria-label", `${visibleUnit(candidate.text)}: ${percent}. Add to the prompt.`);
    const word = document.createElement("span");
    word.className = "word";
    word.textContent = visibleUnit(candidate.text);
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.setProperty("--share", String(top > 0 ? candidate.prob / top : 0));
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent;
    button.append(word, track, value);
    button.addEventListener("click", () => appendUnit(candidate.text));
    item.append(button);
    return item;
  });
  // A keyboard user choosing bars one after another keeps their place while the chart is redrawn.
  const focusedRow = [...ui.chart.children].findIndex((item) => item.contains(document.activeElement));
  ui.chart.replaceChildren(...rows);
  if (focusedRow >= 0 && rows.length) rows[Math.min(focusedRow, rows.length - 1)].firstChild.focus();
  ui.chart.dataset.prompt = prompt;
  ui.unitName.textContent = answer.unit === "token" ? "token" : "word";
  const parts = [`Top ${rows.length} cover ${formatPercent(answer.coverage)}`,
    `entropy ${answer.entropy.toFixed(2)} nats`, `temperature ${temperature ?? 1}`];
  if (answer.exact === false) parts.push("approximate");
  ui.chartSummary.textContent = parts.join(" · ");
}

function formatPercent(prob) {
  const percent = prob * 100;
  return `${percent >= 10 ? percent.toFixed(1) : percent.toPrecision(2)}%`;
}

// Clicking a bar writes its unit into the prompt the way text would spell it.
function appendUnit(text) {
  if (text === END_OF_TEXT) return;
  const prompt = ui.prompt.value;
  const isWord = /^[\p{L}\p{N}'\u2019]/u.test(text);
  const needsSpace = unit() === "word" && isWord && prompt !== "" && !/\s$/.test(prompt);
  ui.prompt.value = prompt + (needsSpace ? " " : "") + text;
  schedulePrediction();
}

// -- generation (streamed) ---------------------------------------------------------------

let generation = null; // the AbortController of the running generation

function generationRequest() {
  const body = { prompt: ui.prompt.value, stream: true, model: selectedModel(),
    max_new_tokens: numberField("max_new_tokens"), seed: seedField() };
  for (const name of SAMPLING_FIELDS) body[name] = numberField(name);
  return body;
}

// Server-sent events of a POST: fetch + a stream reader (EventSource only does GET). Yields each event's data.
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

function setRunning(running) {
  ui.generate.textContent = running ? "Stop" : "Generate";
  ui.generate.classList.toggle("stop", running);
  ui.generate.setAttribute("aria-keyshortcuts", running ? "Escape" : "Control+Enter");
  ui.output.setAttribute("aria-busy", String(running));
}

async function generate() {
  if (generation) return;
  let body;
  try {
    body = generationRequest();
  } catch (error) {
    showError(ui.generateError, error);
    return;
  }
  const controller = new AbortController();
  generation = controller;
  setRunning(true);
  showError(ui.generateError, null);
  ui.reuseSeed.hidden = ui.continueButton.hidden = true;
  ui.outputPrompt.textContent = body.prompt;
  ui.completion.textContent = "";
  ui.status.textContent = "Generating…";
  let tokens = 0;
  let ended = false;
  try {
    const response = await request("/v1/generate", body, controller.signal);
    for await (const data of serverSentEvents(response)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(event.error.message);
      if (event.finish_reason) {
        ui.completion.textContent = event.text; // the whole text, as the server decoded it
        finished(event);
        ended = true;
      } else {
        ui.completion.append(event.text);
        tokens += 1;
      }
    }
    if (!ended) throw new ApiError("The connection closed before the generation finished.");
  } catch (error) {
    if (error.name === "AbortError") {
      ui.status.textContent = `Stopped after ${tokens} tokens.`;
    } else {
      ui.status.textContent = "Generation failed.";
      showError(ui.generateError, error);
    }
  } finally {
    generation = null;
    setRunning(false);
  }
}

function finished(event) {
  const reasons = { length: "reached the token limit", stop: "hit a stop string", eos: "ended the text" };
  ui.status.textContent = `${event.usage.completion_tokens} tokens; ${reasons[event.finish_reason] ||
    event.finish_reason}. Seed ${event.seed}.`;
  ui.seedUsed.textContent = String(event.seed);
  ui.reuseSeed.dataset.seed = String(event.seed);
  ui.reuseSeed.hidden = event.seed == null;
  ui.continueButton.hidden = false;
}

function stopGeneration() {
  if (generation) generation.abort(); // the server stops generating when the connection closes
}

// -- wiring ------------------------------------------------------------------------------

// Flag values outside a field's range as the user types (the server has the last word: its message).
for (const input of document.querySelectorAll('input[type="number"]')) {
  input.addEventListener("input", () => {
    const { rangeUnderflow, rangeOverflow, badInput } = input.validity;
    input.setAttribute("aria-invalid", String(rangeUnderflow || rangeOverflow || badInput));
  });
}

ui.prompt.addEventListener("input", schedulePrediction);
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    generate();
  } else if (event.key === "Escape" && generation) {
    event.preventDefault();
    stopGeneration();
  }
});
ui.generate.addEventListener("click", () => (generation ? stopGeneration() : generate()));
$("temperature").addEventListener("input", schedulePrediction);
for (const radio of document.querySelectorAll('input[name="unit"]')) radio.addEventListener("change", predict);
ui.model.addEventListener("change", () => {
  showModelFacts();
  predict();
});
ui.apiKey.addEventListener("change", () => loadModels().then(predict));
ui.reuseSeed.addEventListener("click", () => {
  ui.seed.value = ui.reuseSeed.dataset.seed;
  ui.seed.focus();
});
ui.continueButton.addEventListener("click", () => {
  ui.prompt.value = ui.outputPrompt.textContent + ui.completion.textContent;
  ui.prompt.focus();
  ui.prompt.setSelectionRange(ui.prompt.value.length, ui.prompt.value.length);
  schedulePrediction();
});

setRunning(false);
loadModels().then(predict);
