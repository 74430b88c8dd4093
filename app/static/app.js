// The demo page. Songwriter mode: a lyrics editor with each line's syllables and rhyme letter beside it,
// the next-word chart (filtered to rhymes or a syllable count if asked) and candidate next lines.
// Free writing: a prompt, the chart and streamed generation. Both share the sampling controls.
// Plain browser JavaScript, no build step; the only network it uses is this server's /v1 API.
"use strict";

const TYPING_DELAY_MS = 180; // debounce: one request once typing pauses, not one per key
const CHART_SIZE = 10;
const LINE_CANDIDATES = 3;
const END_OF_TEXT = "</s>"; // the word unit "end of the text" (docs/api.md, /v1/predict)
const SAMPLING_FIELDS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "noise"];
const WORD = /[\p{L}\p{N}'\u2019]+/gu; // a word as the API counts one: letters, digits and apostrophes
const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;
const sentence = (text) => (/[.!?…]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);

const $ = (id) => document.getElementById(id);
const ui = {
  prompt: $("prompt"), generate: $("generate"), chart: $("chart"), chartSummary: $("chart-summary"),
  unitName: $("unit-name"), predictError: $("predict-error"), predictNotice: $("predict-notice"),
  model: $("model"), modelPicker: $("model-picker"),
  modelFacts: $("model-facts"), modelsError: $("models-error"), apiKey: $("api-key"), auth: $("auth"),
  outputPrompt: $("output-prompt"), completion: $("completion"), status: $("generate-status"),
  generateError: $("generate-error"), reuseSeed: $("reuse-seed"), seedUsed: $("seed-used"),
  continueButton: $("continue"), seed: $("seed"), output: $("output"), layout: $("layout"),
  lyrics: $("lyrics"), lyricsLines: $("lyrics-lines"), lyricsSummary: $("lyrics-summary"),
  analyzeError: $("analyze-error"), rhymeFilter: $("rhyme-filter"), rhymesWith: $("rhymes-with"),
  rhymeKind: $("rhyme-kind"), wordSyllables: $("word-syllables"), rhymesWithHint: $("rhymes-with-hint"),
  constraintMass: $("constraint-mass"), lineSyllables: $("line-syllables"), lineRhymesWith: $("line-rhymes-with"),
  lineRhyme: $("line-rhyme"), linePlan: $("line-plan"), suggestLines: $("suggest-lines"),
  linesStatus: $("lines-status"), lines: $("lines"), linesNotice: $("lines-notice"), linesError: $("lines-error"),
};

// -- talking to the server --------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

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
  return new ApiError(message, response.status);
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

function showNotice(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
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

function samplingFields(body) {
  for (const name of SAMPLING_FIELDS) body[name] = numberField(name);
  return body;
}

// One mechanism for every request that follows the user's typing (the chart, the line counts) and for
// the next-line search: `schedule()` waits until typing pauses; `run()` starts at once. Starting a
// request aborts the one before it (its answer could only be stale, and the server stops working on
// it), and each request takes the next number of a counter: an answer is used only while its number
// is still the newest, so a late answer never overwrites a newer one.
class Latest {
  constructor(work, delayMs = TYPING_DELAY_MS) {
    this.work = work; // async (signal, isCurrent) => ...
    this.delayMs = delayMs;
    this.timer = 0;
    this.sequence = 0;
    this.controller = null;
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), this.delayMs);
  }

  get running() { return this.controller !== null; }

  cancel() {
    clearTimeout(this.timer);
    this.sequence += 1;
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async run() {
    clearTimeout(this.timer);
    const sequence = ++this.sequence;
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    const isCurrent = () => sequence === this.sequence;
    try {
      await this.work(controller.signal, isCurrent);
    } catch (error) {
      if (error.name !== "AbortError") throw error;
    } finally {
      if (isCurrent()) this.controller = null;
    }
  }
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

// -- modes -------------------------------------------------------------------------------

function mode() {
  return ui.layout.dataset.currentMode;
}

function setMode(name) {
  ui.layout.dataset.currentMode = name;
  for (const element of document.querySelectorAll("[data-mode]")) element.hidden = element.dataset.mode !== name;
  ui.chart.replaceChildren(); // bars for the other mode's text would mislead until the new answer comes
  delete ui.chart.dataset.prompt;
  prediction.run();
}

// -- the lyrics: lines, stanzas, the line being written -------------------------------------

const isBlank = (line) => line.trim() === "";
const lyricLines = () => ui.lyrics.value.split("\n");

function endWord(text) {
  const words = text.match(WORD);
  return words ? words[words.length - 1].replace(/^['\u2019]+|['\u2019]+$/g, "") : "";
}

// The index of the line the cursor is on.
function cursorLine() {
  const before = ui.lyrics.value.slice(0, ui.lyrics.selectionStart);
  return before.split("\n").length - 1;
}

// Where "Next line" writes: the cursor's line when it is still empty, else a new line after it.
function nextLineTarget() {
  const lines = lyricLines();
  const current = cursorLine();
  return isBlank(lines[current] ?? "") ? { index: current, replace: true } : { index: current + 1, replace: false };
}

// What the scheme suggests for line `index`: which line above it should rhyme with (couplets when the
// stanza's first two lines rhyme, else alternate lines as in ABAB or ABCB), and how long it might be.
function planFor(index) {
  const lines = lyricLines();
  let start = index;
  while (start > 0 && !isBlank(lines[start - 1] ?? "")) start -= 1;
  const position = index - start; // lines of its stanza above it
  const letter = (k) => lineFacts[start + k]?.rhyme;
  const couplets = position >= 2 && letter(0) && letter(0) !== "-" && letter(0) === letter(1);
  let partner = -1;
  if (position === 1) partner = 0;
  else if (couplets) partner = position % 2 === 1 ? position - 1 : -1;
  else if (position >= 2) partner = position % 4 >= 2 ? position - 2 : -1;
  const partnerLine = partner >= 0 ? start + partner : -1;
  const facts = (line) => (line >= 0 ? lineFacts[line] : undefined);
  const word = partnerLine >= 0 ? (facts(partnerLine)?.end_word || endWord(lines[partnerLine])) : "";
  // as long as its partner, else as the line above it
  const lengthFrom = facts(partnerLine) ? partnerLine : (position > 0 && facts(index - 1) ? index - 1 : -1);
  const syllables = lengthFrom >= 0 ? facts(lengthFrom).syllables : undefined;
  const scheme = position === 1 ? "a couplet" : (couplets ? "couplets" : "alternate lines");
  return { index, partnerLine, word, lengthFrom, syllables, scheme };
}

// A field the page fills from the scheme until the user types in it; moving to another line refills it.
function autoFill(input, value) {
  if (input.dataset.auto === "false") return false;
  const text = value == null ? "" : String(value);
  if (input.value === text) return false;
  input.value = text;
  return true;
}

let plannedLines = ""; // which lines the auto fields were last filled for

function refreshPlans() {
  const chartPlan = planFor(cursorLine());
  const target = nextLineTarget();
  const linePlan = planFor(target.index);
  const key = `${chartPlan.index}/${target.index}`;
  if (key !== plannedLines) { // a new line: its own defaults, whatever was typed for the last one
    plannedLines = key;
    for (const input of [ui.rhymesWith, ui.lineRhymesWith, ui.lineSyllables]) input.dataset.auto = "true";
  }
  const rhymeChanged = autoFill(ui.rhymesWith, chartPlan.word);
  autoFill(ui.lineRhymesWith, linePlan.word);
  autoFill(ui.lineSyllables, linePlan.syllables);

  const lineNumber = (line) => `line ${line + 1}`;
  if (ui.rhymesWith.dataset.auto !== "false" && chartPlan.word) {
    ui.rhymesWithHint.textContent = `“${chartPlan.word}” ends ${lineNumber(chartPlan.partnerLine)}, which ` +
      `${lineNumber(chartPlan.index)} should answer by the scheme.`;
  } else {
    ui.rhymesWithHint.textContent = ui.rhymeFilter.checked && !ui.rhymesWith.value.trim()
      ? "Type the word the next word should rhyme with." : "";
  }
  const plan = [`For ${lineNumber(target.index)}`];
  if (ui.lineRhymesWith.dataset.auto !== "false" && linePlan.word) {
    plan.push(`rhyming with ${lineNumber(linePlan.partnerLine)} (${linePlan.scheme})`);
  }
  if (ui.lineSyllables.dataset.auto !== "false" && linePlan.syllables != null) {
    plan.push(`as long as ${lineNumber(linePlan.lengthFrom)}`);
  }
  ui.linePlan.textContent = `${plan.join(", ")}. Change either field to ask for something else.`;
  if (rhymeChanged && ui.rhymeFilter.checked) prediction.schedule();
}

// -- the line counts: /v1/analyze ----------------------------------------------------------

let analysis = null; // the newest answer, with the text it is for
let lineFacts = []; // per line of the editor: its /v1/analyze line, or undefined (blank, or not counted yet)

const analyzer = new Latest(async (signal, isCurrent) => {
  const text = ui.lyrics.value;
  ui.lyricsLines.setAttribute("aria-busy", "true");
  try {
    if (isBlank(text)) { // nothing to count: no need to ask
      analysis = { text, stanzas: [] };
      showError(ui.analyzeError, null);
      return;
    }
    const answer = await (await request("/v1/analyze", { text, model: selectedModel() }, signal)).json();
    if (!isCurrent()) return; // a newer text was sent meanwhile: its answer counts the lines
    analysis = { text, stanzas: answer.stanzas };
    showError(ui.analyzeError, null);
  } catch (error) {
    if (error.name === "AbortError" || !isCurrent()) return;
    analysis = null;
    showError(ui.analyzeError, error);
  } finally {
    if (isCurrent()) {
      ui.lyricsLines.setAttribute("aria-busy", "false");
      drawLines();
    }
  }
});

// The editor's lines, each as the text it holds (invisible, under the textarea's own text: it sizes the
// editor and carries the marks under estimated words) and, beside it, its syllables and rhyme letter.
// The last answer is matched to the lines by their text, so a line typed since shows nothing until
// its count arrives, while the others keep theirs.
function drawLines() {
  const lines = lyricLines();
  const analysed = analysis ? analysis.stanzas.flatMap((stanza) => stanza.lines) : [];
  let next = 0;
  lineFacts = lines.map((line) => {
    if (isBlank(line)) return undefined;
    for (let k = next; k < analysed.length; k += 1) {
      if (analysed[k].text.trim() === line.trim()) {
        next = k + 1;
        return analysed[k];
      }
    }
    return undefined;
  });
  const current = analysis !== null && analysis.text === ui.lyrics.value;
  ui.lyricsLines.replaceChildren(...lines.map((line, index) => lineRow(line, index, lineFacts[index])));
  if (current) ui.lyricsLines.dataset.text = analysis.text;
  else delete ui.lyricsLines.dataset.text;
  summarise(current ? analysis.stanzas : null);
  refreshPlans();
}

function lineRow(line, index, facts) {
  const row = document.createElement("div");
  row.className = "line";
  row.dataset.line = String(index);
  const text = document.createElement("span");
  text.className = "text";
  text.setAttribute("aria-hidden", "true");
  text.append(...markedText(line, facts ? facts.unknown_words : []));
  const aside = document.createElement("span");
  aside.className = "facts";
  row.append(text, aside);
  if (!facts) {
    row.setAttribute("aria-hidden", "true");
    return row;
  }
  row.setAttribute("role", "listitem");
  row.dataset.syllables = String(facts.syllables);
  row.dataset.rhyme = facts.rhyme;
  const estimated = facts.unknown_words.length > 0;
  const spoken = document.createElement("span");
  spoken.className = "visually-hidden";
  spoken.textContent = `Line ${index + 1}: ${plural(facts.syllables, "syllable")}${estimated ? " (estimated)" : ""}, ` +
    (facts.rhyme === "-" ? "rhymes with no other line" : `rhyme ${facts.rhyme}`) + ".";
  const count = document.createElement("span");
  count.className = "count";
  count.setAttribute("aria-hidden", "true");
  count.textContent = `${estimated ? "≈" : ""}${facts.syllables}`;
  const letter = document.createElement("span");
  letter.className = facts.rhyme === "-" ? "letter none" : "letter";
  letter.setAttribute("aria-hidden", "true");
  letter.textContent = facts.rhyme === "-" ? "x" : facts.rhyme; // x: rhymes with no other line, as in xAxA
  if (facts.rhyme !== "-") letter.style.setProperty("--hue", String(hueOf(facts.rhyme)));
  aside.title = [`${facts.syllables} syllables, stress ${facts.stress}`,
    facts.end_word ? `ends in “${facts.end_word}” (${facts.rhyme_part})` : "",
    estimated ? `estimated: ${facts.unknown_words.join(", ")}` : ""].filter(Boolean).join("\n");
  aside.append(spoken, count, letter);
  return row;
}

function hueOf(letter) {
  return ((letter.charCodeAt(0) - 65) * 137 + 235) % 360; // far-apart hues for neighbouring letters
}

// The line's text, with the words the dictionary lacks wrapped in <mark>.
function markedText(line, unknownWords) {
  const unknown = new Set(unknownWords.map((word) => word.toLowerCase()));
  const parts = [];
  let end = 0;
  if (unknown.size) {
    for (const match of line.matchAll(WORD)) {
      const word = match[0].toLowerCase();
      if (!unknown.has(word) && !unknown.has(word.replace(/^['\u2019]+|['\u2019]+$/g, ""))) continue;
      parts.push(line.slice(end, match.index));
      const mark = document.createElement("mark");
      mark.className = "unknown";
      mark.textContent = match[0];
      parts.push(mark);
      end = match.index + match[0].length;
    }
  }
  parts.push(line.slice(end) || (end === 0 ? "\u200b" : "")); // an empty line still has its height
  return parts;
}

function summarise(stanzas) {
  if (!stanzas) {
    ui.lyricsSummary.textContent = ui.lyricsLines.getAttribute("aria-busy") === "true" ? "Counting…" : "";
    return;
  }
  if (!stanzas.length) {
    ui.lyricsSummary.textContent = "Write a line to see its syllables and rhyme.";
    return;
  }
  // "x" for a line that rhymes with no other, as songwriters write it (xAxA); the API says "-".
  const schemes = stanzas.map((stanza) => stanza.scheme.replace(/-/g, "x"));
  const rhymed = stanzas.some((stanza) => /[A-Z]/.test(stanza.scheme));
  const scheme = document.createElement("span");
  scheme.textContent = `Rhyme scheme ${schemes.join(" · ")}${rhymed ? "" : " (no rhymes yet)"}`;
  const parts = [scheme];
  const unknown = [...new Set(stanzas.flatMap((stanza) => stanza.lines.flatMap((line) => line.unknown_words)))];
  if (unknown.length) {
    const estimated = document.createElement("span");
    estimated.className = "estimated";
    estimated.textContent = `Not in the dictionary, syllables estimated: ${unknown.join(", ")}`;
    parts.push(estimated);
  }
  ui.lyricsSummary.replaceChildren(...parts);
}

// -- the next-word chart: /v1/predict ------------------------------------------------------

let chartPromptAsked = null; // the text the newest chart request continues

function unit() {
  return mode() === "songwriter" ? "word" : document.querySelector('input[name="unit"]:checked').value;
}

// The text the chart continues: the prompt, or the lyrics up to the cursor.
function chartPrompt() {
  return mode() === "songwriter" ? ui.lyrics.value.slice(0, ui.lyrics.selectionStart) : ui.prompt.value;
}

// The filters the songwriter asked for, as /v1/predict's fields (none in free writing).
function chartConstraints() {
  if (mode() !== "songwriter") return {};
  const constraints = {};
  const word = ui.rhymesWith.value.trim();
  if (ui.rhymeFilter.checked && word) {
    constraints.rhymes_with = word;
    constraints.rhyme = ui.rhymeKind.value;
  }
  const syllables = numberField("word-syllables");
  if (syllables !== undefined) constraints.syllables = syllables;
  return constraints;
}

function describeConstraints(constraints) {
  const parts = [];
  if (constraints.rhymes_with) {
    parts.push(`${constraints.rhyme === "near" ? "nearly rhymes" : "rhymes"} with “${constraints.rhymes_with}”`);
  }
  if (constraints.syllables !== undefined) {
    parts.push(`has ${plural(constraints.syllables, "syllable")}`);
  }
  return parts.join(" and ");
}

const prediction = new Latest(async (signal, isCurrent) => {
  const prompt = chartPrompt();
  chartPromptAsked = prompt;
  ui.chart.setAttribute("aria-busy", "true");
  let constraints = {};
  try {
    constraints = chartConstraints();
    const body = { prompt, top_k: CHART_SIZE, unit: unit(), temperature: numberField("temperature"),
      model: selectedModel(), ...constraints };
    const answer = await (await request("/v1/predict", body, signal)).json();
    if (!isCurrent()) return; // a newer request was sent meanwhile: its answer draws the chart
    drawChart(answer, prompt, body.temperature, constraints);
    showError(ui.predictError, null);
    showNotice(ui.predictNotice, null);
  } catch (error) {
    if (error.name === "AbortError" || !isCurrent()) return;
    ui.chart.replaceChildren(); // bars for another prompt or temperature would mislead next to the error
    delete ui.chart.dataset.prompt;
    ui.constraintMass.hidden = true;
    if (error.status === 422 && describeConstraints(constraints)) { // the filter is the answer, not a fault
      ui.chartSummary.textContent = "";
      showNotice(ui.predictNotice, `No next word here ${describeConstraints(constraints)}. ${sentence(error.message)}`);
      showError(ui.predictError, null);
    } else {
      ui.chartSummary.textContent = "No prediction for this prompt and temperature.";
      showNotice(ui.predictNotice, null);
      showError(ui.predictError, error);
    }
  } finally {
    if (isCurrent()) ui.chart.setAttribute("aria-busy", "false");
  }
});

// How a unit reads on screen: line breaks and the end of the text have no glyph of their own.
function visibleUnit(text) {
  if (text === END_OF_TEXT) return "⟨end of text⟩";
  if (text === "\n") return "↵ line break";
  return text.replace(/\n/g, "↵").replace(/^ /, "␣")
    .replace(/\p{Cc}/gu, (c) => `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
}

function drawChart(answer, prompt, temperature, constraints) {
  const top = answer.distribution.length ? answer.distribution[0].prob : 1;
  const target = mode() === "songwriter" ? "the lyrics at the cursor" : "the prompt";
  const rows = answer.distribution.map((candidate) => {
    const percent = formatPercent(candidate.prob);
    const item = document.createElement("li");
    item.dataset.text = candidate.text;
    item.dataset.prob = String(candidate.prob);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "bar-row";
    button.setAttribute("aria-label", `${visibleUnit(candidate.text)}: ${percent}. Add to ${target}.`);
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
    button.addEventListener("click", () => addUnit(candidate.text));
    item.append(button);
    return item;
  });
  // A keyboard user choosing bars one after another keeps their place while the chart is redrawn.
  const focusedRow = [...ui.chart.children].findIndex((item) => item.contains(document.activeElement));
  ui.chart.replaceChildren(...rows);
  if (focusedRow >= 0 && rows.length) rows[Math.min(focusedRow, rows.length - 1)].firstChild.focus();
  ui.chart.dataset.prompt = prompt;
  ui.chart.dataset.constraints = JSON.stringify(constraints);
  ui.unitName.textContent = answer.unit === "token" ? "token" : "word";
  const described = describeConstraints(constraints);
  const parts = [`Top ${rows.length} cover ${formatPercent(answer.coverage)}${described ? " of those words" : ""}`,
    `entropy ${answer.entropy.toFixed(2)} nats`, `temperature ${temperature ?? 1}`];
  if (answer.exact === false) parts.push("approximate");
  ui.chartSummary.textContent = parts.join(" · ");
  if (described && answer.constraint_mass != null) {
    ui.constraintMass.dataset.mass = String(answer.constraint_mass);
    const guessed = answer.rhymes_with_known === false
      ? ` (“${constraints.rhymes_with}” is not in the dictionary: its rhyme is estimated)` : "";
    ui.constraintMass.replaceChildren(massMeter(answer.constraint_mass),
      `${formatPercent(answer.constraint_mass)} of the model's next-word probability ${described}${guessed}.`);
    ui.constraintMass.hidden = false;
  } else {
    delete ui.constraintMass.dataset.mass;
    ui.constraintMass.hidden = true;
  }
}

function massMeter(mass) {
  const meter = document.createElement("span");
  meter.className = "mass-meter";
  meter.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.style.setProperty("--share", String(Math.min(1, Math.max(0, mass))));
  meter.append(fill);
  return meter;
}

function formatPercent(prob) {
  const percent = prob * 100;
  return `${percent >= 10 ? percent.toFixed(1) : percent.toPrecision(2)}%`;
}

const startsWord = (text) => /^[\p{L}\p{N}'\u2019]/u.test(text);

// Choosing a bar writes its unit the way text would spell it: at the end of the prompt, or at the
// lyrics' cursor (a space before a word, none before punctuation; the cursor ends up after it).
function addUnit(text) {
  if (text === END_OF_TEXT) return;
  if (mode() !== "songwriter") {
    const prompt = ui.prompt.value;
    const needsSpace = unit() === "word" && startsWord(text) && prompt !== "" && !/\s$/.test(prompt);
    ui.prompt.value = prompt + (needsSpace ? " " : "") + text;
    prediction.schedule();
    return;
  }
  const { value, selectionStart, selectionEnd } = ui.lyrics;
  const before = value.slice(0, selectionStart);
  const after = value.slice(selectionEnd);
  const word = startsWord(text);
  const spaceBefore = word && before !== "" && !/[\s(["\u201c\u2018-]$/.test(before) ? " " : "";
  const spaceAfter = word && startsWord(after) ? " " : "";
  const inserted = spaceBefore + text;
  ui.lyrics.value = before + inserted + spaceAfter + after;
  const cursor = before.length + inserted.length;
  ui.lyrics.setSelectionRange(cursor, cursor);
  lyricsChanged();
}

// -- next lines: /v1/lines -----------------------------------------------------------------

function linesRequest() {
  const lines = lyricLines();
  const target = nextLineTarget();
  const above = lines.slice(0, target.index);
  const body = { prompt: above.length ? `${above.join("\n")}\n` : "", n: LINE_CANDIDATES, model: selectedModel() };
  const syllables = numberField("line-syllables");
  if (syllables !== undefined) body.syllables = syllables;
  const word = ui.lineRhymesWith.value.trim();
  if (word) {
    body.rhymes_with = word;
    body.rhyme = ui.lineRhyme.value;
  }
  samplingFields(body);
  body.seed = seedField();
  return body;
}

function describeLineRequest(body) {
  const parts = [];
  if (body.syllables !== undefined) parts.push(plural(body.syllables, "syllable"));
  if (body.rhymes_with) parts.push(`${body.rhyme === "near" ? "a near rhyme" : "a rhyme"} for “${body.rhymes_with}”`);
  return parts.length ? ` with ${parts.join(" and ")}` : "";
}

const lineSearch = new Latest(async (signal, isCurrent) => {
  showError(ui.linesError, null);
  showNotice(ui.linesNotice, null);
  let body;
  try {
    body = linesRequest();
  } catch (error) {
    showError(ui.linesError, error);
    return;
  }
  ui.lines.setAttribute("aria-busy", "true");
  ui.suggestLines.setAttribute("aria-busy", "true");
  ui.linesStatus.textContent = `Writing ${LINE_CANDIDATES} lines${describeLineRequest(body)}…`;
  try {
    const answer = await (await request("/v1/lines", body, signal)).json();
    if (!isCurrent()) return;
    drawCandidates(answer, body);
  } catch (error) {
    if (!isCurrent()) return;
    ui.lines.replaceChildren();
    if (error.name === "AbortError") {
      ui.linesStatus.textContent = "Stopped.";
    } else if (error.status === 422) { // nothing can meet the constraints: say so, kindly
      ui.linesStatus.textContent = "";
      showNotice(ui.linesNotice, `No line could be found${describeLineRequest(body)}. ${sentence(error.message)} ` +
        "Try another rhyme word or another length.");
    } else {
      ui.linesStatus.textContent = "";
      showError(ui.linesError, error);
    }
  } finally {
    if (isCurrent()) {
      ui.lines.setAttribute("aria-busy", "false");
      ui.suggestLines.removeAttribute("aria-busy");
    }
  }
});

function drawCandidates(answer, body) {
  const items = answer.lines.map((line) => {
    const item = document.createElement("li");
    item.dataset.text = line.text;
    item.dataset.syllables = String(line.syllables);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "candidate";
    const text = document.createElement("span");
    text.className = "candidate-text";
    text.textContent = line.text;
    const facts = document.createElement("span");
    facts.className = "candidate-facts";
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = `${line.syllables} syl.`;
    facts.append(count);
    if (body.rhymes_with && line.rhymes) {
      const rhyme = document.createElement("span");
      rhyme.className = "rhymes";
      rhyme.textContent = `${line.end_word} ~ ${body.rhymes_with}`;
      facts.append(rhyme);
    }
    button.setAttribute("aria-label", `${line.text} — ${plural(line.syllables, "syllable")}` +
      (body.rhymes_with && line.rhymes ? `, rhymes with ${body.rhymes_with}` : "") + ". Insert as the next line.");
    button.append(text, facts);
    button.addEventListener("click", () => insertLine(line.text));
    item.append(button);
    return item;
  });
  ui.lines.replaceChildren(...items);
  ui.lines.dataset.prompt = body.prompt;
  ui.linesStatus.textContent = items.length
    ? `${plural(items.length, "candidate")}${describeLineRequest(body)} (seed ${answer.seed}); choose one to put it in.`
    : "No lines came back.";
}

// A chosen line fills the cursor's line if it is empty, else goes after it. At the end of the lyrics
// a fresh line follows, so the next suggestion is for the line after it.
function insertLine(text) {
  const lines = lyricLines();
  const target = nextLineTarget();
  if (target.replace) lines[target.index] = text;
  else lines.splice(target.index, 0, text);
  let cursorAt;
  if (target.index === lines.length - 1) {
    lines.push("");
    cursorAt = lines.join("\n").length;
  } else {
    cursorAt = lines.slice(0, target.index + 1).join("\n").length;
  }
  ui.lyrics.value = lines.join("\n");
  ui.lyrics.focus();
  ui.lyrics.setSelectionRange(cursorAt, cursorAt);
  ui.linesStatus.textContent = `Line ${target.index + 1} written.`;
  ui.lines.replaceChildren();
  lyricsChanged();
}

// -- the lyrics editor ---------------------------------------------------------------------

function lyricsChanged() {
  drawLines();
  analyzer.schedule();
  prediction.schedule();
}

// The chart follows the cursor: a move to another place in the lyrics asks again.
function cursorMoved() {
  if (mode() !== "songwriter" || document.activeElement !== ui.lyrics) return;
  refreshPlans();
  const prompt = chartPrompt();
  if (prompt !== chartPromptAsked) {
    chartPromptAsked = prompt;
    prediction.schedule();
  }
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

function stopLines() {
  if (!lineSearch.running) return;
  lineSearch.cancel();
  ui.lines.setAttribute("aria-busy", "false");
  ui.suggestLines.removeAttribute("aria-busy");
  ui.linesStatus.textContent = "Stopped.";
}

// Flag values outside a field's range as the user types (the server has the last word: its message).
for (const input of document.querySelectorAll('input[type="number"]')) {
  input.addEventListener("input", () => {
    const { rangeUnderflow, rangeOverflow, badInput } = input.validity;
    input.setAttribute("aria-invalid", String(rangeUnderflow || rangeOverflow || badInput));
  });
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => setMode(radio.value));
}
ui.prompt.addEventListener("input", () => prediction.schedule());
ui.lyrics.addEventListener("input", lyricsChanged);
document.addEventListener("selectionchange", cursorMoved);
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    if (mode() === "songwriter") lineSearch.run();
    else generate();
  } else if (event.key === "Escape" && mode() === "free" && generation) {
    event.preventDefault();
    stopGeneration();
  } else if (event.key === "Escape" && mode() === "songwriter" && lineSearch.running) {
    event.preventDefault();
    stopLines();
  }
});
ui.generate.addEventListener("click", () => (generation ? stopGeneration() : generate()));
ui.suggestLines.addEventListener("click", () => lineSearch.run());
$("temperature").addEventListener("input", () => prediction.schedule());
for (const radio of document.querySelectorAll('input[name="unit"]')) radio.addEventListener("change", () => prediction.run());

// The filters: typing a word to rhyme with turns the rhyme filter on; the page stops refilling a field
// once the user has typed in it (until the cursor moves to another line).
ui.rhymesWith.addEventListener("input", () => {
  ui.rhymesWith.dataset.auto = "false";
  ui.rhymeFilter.checked = ui.rhymesWith.value.trim() !== "";
  ui.rhymesWithHint.textContent = "";
  prediction.schedule();
});
for (const control of [ui.rhymeFilter, ui.rhymeKind]) {
  control.addEventListener("change", () => {
    refreshPlans();
    prediction.run();
  });
}
ui.wordSyllables.addEventListener("input", () => prediction.schedule());
for (const input of [ui.lineRhymesWith, ui.lineSyllables]) {
  input.addEventListener("input", () => {
    input.dataset.auto = "false";
  });
}

ui.model.addEventListener("change", () => {
  showModelFacts();
  analyzer.run();
  prediction.run();
});
ui.apiKey.addEventListener("change", () => loadModels().then(() => {
  analyzer.run();
  prediction.run();
}));
ui.reuseSeed.addEventListener("click", () => {
  ui.seed.value = ui.reuseSeed.dataset.seed;
  ui.seed.focus();
});
ui.continueButton.addEventListener("click", () => {
  ui.prompt.value = ui.outputPrompt.textContent + ui.completion.textContent;
  ui.prompt.focus();
  ui.prompt.setSelectionRange(ui.prompt.value.length, ui.prompt.value.length);
  prediction.schedule();
});

setRunning(false);
ui.lyrics.setSelectionRange(ui.lyrics.value.length, ui.lyrics.value.length); // writing goes on at the end
ui.layout.dataset.currentMode = document.querySelector('input[name="mode"]:checked').value;
for (const element of document.querySelectorAll("[data-mode]")) element.hidden = element.dataset.mode !== mode();
drawLines();
loadModels().then(() => {
  analyzer.run();
  prediction.run();
});
