// Free writing's generation (/v1/generate), streamed into the output as it is written.
import { request, serverSentEvents } from "./api.js";
import { selectedModel } from "./models.js";
import { ApiError, SAMPLING_FIELDS, numberField, seedField, showError, ui } from "./ui.js";

let generation = null; // the AbortController of the running generation

function generationRequest() {
  const body = { prompt: ui.prompt.value, stream: true, model: selectedModel(),
    max_new_tokens: numberField("max_new_tokens"), seed: seedField() };
  for (const name of SAMPLING_FIELDS) body[name] = numberField(name);
  return body;
}

export function setRunning(running) {
  ui.generate.textContent = running ? "Stop" : "Generate";
  ui.generate.classList.toggle("stop", running);
  ui.generate.setAttribute("aria-keyshortcuts", running ? "Escape" : "Control+Enter");
  ui.output.setAttribute("aria-busy", String(running));
}

export async function generate() {
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

export function stopGeneration() {
  if (generation) generation.abort(); // the server stops generating when the connection closes
}


export const isGenerating = () => generation !== null;
