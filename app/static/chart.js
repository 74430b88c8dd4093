// The next-word chart (/v1/predict): the likeliest next words after the prompt, or after the lyrics at the
// cursor under the songwriter's filters (a rhyme, a syllable count); a bar adds its word. At the start of a
// line with the rhyme filter on, the chart shows the words the line is likely to end on instead (/v1/lines):
// the next word that rhymes is not what a writer starting a line is looking for.
import { request } from "./api.js";
import { Latest } from "./latest.js";
import { insertLine, linesRequest } from "./lines.js";
import { lyricsChanged, nextLineTarget, refreshPlans } from "./lyrics.js";
import { selectedModel } from "./models.js";
import { mode, numberField, plural, sentence, showError, showNotice, formatPercent, ui } from "./ui.js";

const CHART_SIZE = 10;
const CASE_POOL = 2 * CHART_SIZE; // songwriter mode merges case variants, so it asks for more words first
const END_OF_TEXT = "</s>"; // the word unit "end of the text" (docs/api.md, /v1/predict)

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

// The chart shows end words on a blank line, with the rhyme filter on.
function endWordsWanted(constraints) {
  return mode() === "songwriter" && constraints.rhymes_with !== undefined && nextLineTarget().replace;
}

export const prediction = new Latest(async (signal, isCurrent) => {
  const prompt = chartPrompt();
  chartPromptAsked = prompt;
  ui.chart.setAttribute("aria-busy", "true");
  let constraints = {};
  try {
    constraints = chartConstraints();
    if (endWordsWanted(constraints)) {
      const body = { ...linesRequest(), rhymes_with: constraints.rhymes_with, rhyme: constraints.rhyme };
      const answer = await (await request("/v1/lines", body, signal)).json();
      if (!isCurrent()) return;
      drawEndWords(answer, prompt, body);
      showError(ui.predictError, null);
      showNotice(ui.predictNotice, null);
      return;
    }
    const songwriter = mode() === "songwriter";
    const body = { prompt, top_k: songwriter ? CASE_POOL : CHART_SIZE, unit: unit(),
      temperature: numberField("temperature"), model: selectedModel(), ...constraints };
    let answer = await (await request("/v1/predict", body, signal)).json();
    if (!isCurrent()) return; // a newer request was sent meanwhile: its answer draws the chart
    if (songwriter) answer = withCasesMerged(answer);
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
      const what = endWordsWanted(constraints) ? "No line ending in a rhyme could be found here"
        : `No next word here ${describeConstraints(constraints)}`;
      showNotice(ui.predictNotice, `${what}. ${sentence(error.message)}`);
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

// "name" and "Name" are one word to a songwriter: their shares are added and the likelier spelling is shown
// (the one this place wants: capitalised at a line's start), the CHART_SIZE likeliest words kept.
export function withCasesMerged(answer) {
  const merged = new Map();
  for (const candidate of answer.distribution) { // likeliest first: the first spelling seen is kept
    const key = candidate.text.toLowerCase();
    if (merged.has(key)) merged.get(key).prob += candidate.prob;
    else merged.set(key, { text: candidate.text, prob: candidate.prob });
  }
  const distribution = [...merged.values()].sort((a, b) => b.prob - a.prob).slice(0, CHART_SIZE);
  return { ...answer, distribution, coverage: distribution.reduce((sum, c) => sum + c.prob, 0) };
}

// How a unit reads on screen: line breaks and the end of the text have no glyph of their own.
function visibleUnit(text) {
  if (text === END_OF_TEXT) return "⟨end of text⟩";
  if (text === "\n") return "↵ line break";
  return text.replace(/\n/g, "↵").replace(/^ /, "␣")
    .replace(/\p{Cc}/gu, (c) => `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
}

// One bar: `label` and its share (relative to the top bar's), `example` a line shown under it if any.
function barRow({ text, prob, label, example }, top, ariaLabel, choose) {
  const item = document.createElement("li");
  item.dataset.text = text;
  item.dataset.prob = String(prob);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "bar-row";
  button.setAttribute("aria-label", ariaLabel);
  const word = document.createElement("span");
  word.className = "word";
  word.textContent = label;
  const track = document.createElement("span");
  track.className = "track";
  track.setAttribute("aria-hidden", "true");
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.setProperty("--share", String(top > 0 ? prob / top : 0));
  track.append(bar);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = formatPercent(prob);
  button.append(word, track, value);
  if (example) {
    const line = document.createElement("span");
    line.className = "example";
    line.textContent = example;
    button.append(line);
  }
  button.addEventListener("click", choose);
  item.append(button);
  return item;
}

// A keyboard user choosing bars one after another keeps their place while the chart is redrawn.
function showRows(rows, prompt, constraints) {
  const focusedRow = [...ui.chart.children].findIndex((item) => item.contains(document.activeElement));
  ui.chart.replaceChildren(...rows);
  if (focusedRow >= 0 && rows.length) rows[Math.min(focusedRow, rows.length - 1)].firstChild.focus();
  ui.chart.dataset.prompt = prompt;
  ui.chart.dataset.constraints = JSON.stringify(constraints);
}

// The words the line may end on (/v1/lines' end_words: the share of the search's lines that end on each), each
// with the most fluent of those lines, which a click writes in.
function drawEndWords(answer, prompt, body) {
  const words = answer.end_words;
  const top = words.length ? words[0].prob : 1;
  const line = `line ${nextLineTarget().index + 1}`;
  const rows = words.map((end) => barRow({ text: end.word, prob: end.prob, label: end.word, example: end.line }, top,
    `${end.word}: ${formatPercent(end.prob)} of the lines end on it. Write “${end.line}” as ${line}.`,
    () => insertLine(end.line)));
  showRows(rows, prompt, { end_words: true, rhymes_with: body.rhymes_with, rhyme: body.rhyme });
  ui.chartHeading.textContent = "Words to end the line";
  ui.chartSource.hidden = true;
  ui.chartSourceEnds.hidden = false;
  ui.constraintMass.hidden = true;
  const asked = [`${body.rhyme === "near" ? "nearly rhyming" : "rhyming"} with “${body.rhymes_with}”`];
  if (body.syllables !== undefined) asked.push(plural(body.syllables, "syllable"));
  if (body.stress) asked.push(`the stresses ${body.stress}`);
  ui.chartSummary.textContent = `How ${line} may end, ${asked.join(", ")}: the share of the model's lines that ` +
    `end on each word (seed ${answer.seed}). Choose one to write its line; type a word to see the next word instead.`;
}

function drawChart(answer, prompt, temperature, constraints) {
  const top = answer.distribution.length ? answer.distribution[0].prob : 1;
  const target = mode() === "songwriter" ? "the lyrics at the cursor" : "the prompt";
  const rows = answer.distribution.map((candidate) => barRow(
    { ...candidate, label: visibleUnit(candidate.text) }, top,
    `${visibleUnit(candidate.text)}: ${formatPercent(candidate.prob)}. Add to ${target}.`,
    () => addUnit(candidate.text)));
  showRows(rows, prompt, constraints);
  ui.chartHeading.textContent = answer.unit === "token" ? "Next token" : "Next word";
  ui.chartSource.hidden = false;
  ui.chartSourceEnds.hidden = true;
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

// The chart follows the cursor: a move to another place in the lyrics asks again.
export function cursorMoved() {
  if (mode() !== "songwriter" || document.activeElement !== ui.lyrics) return;
  refreshPlans();
  const prompt = chartPrompt();
  if (prompt !== chartPromptAsked) {
    chartPromptAsked = prompt;
    prediction.schedule();
  }
}

