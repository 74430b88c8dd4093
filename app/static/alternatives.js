// Another word (/v1/alternatives, /v1/neighbours): select a word or a phrase of one line in the lyrics and
// candidates for it appear, read with the lines on both sides, with their syllables, stress and share; one
// click puts a candidate in its place. For a single word, "words like this" are the model's nearest words.
import { request } from "./api.js";
import { Latest } from "./latest.js";
import { lyricsChanged } from "./lyrics.js";
import { selectedModel } from "./models.js";
import { WORD, candidateItem, formatPercent, numberField, plural, sentence, showError, showNotice, ui } from "./ui.js";

const CANDIDATES = 8;
const NEIGHBOURS = 8;
const isWordChar = (char) => char !== undefined && /[\p{L}\p{N}'\u2019]/u.test(char);
// A word stands a space apart from these (songwriting/alternatives.py reads the candidates so).
const closesBefore = (char) => isWordChar(char) || (char !== undefined && ",.;:!?)]}\u201d\u2026".includes(char));
const opensAfter = (char) => isWordChar(char) || (char !== undefined && "([{\u201c".includes(char));

// The selection as a part the API accepts: within one line, widened to whole words; null when there is none.
export function selectedPart() {
  const text = ui.lyrics.value;
  let start = ui.lyrics.selectionStart;
  let end = ui.lyrics.selectionEnd;
  if (end <= start || text.slice(start, end).includes("\n")) return null;
  while (start > 0 && isWordChar(text[start - 1]) && isWordChar(text[start])) start -= 1;
  while (end < text.length && isWordChar(text[end - 1]) && isWordChar(text[end])) end += 1;
  while (start < end && /\s/.test(text[start])) start += 1; // the words, not the spaces around them
  while (end > start && /\s/.test(text[end - 1])) end -= 1;
  const part = text.slice(start, end);
  return part.match(WORD) ? { text, start, end, part } : null;
}

// A new selection's own syllable count goes in the Syllables field, so that what replaces it keeps the line's
// length (and a phrase is not crowded out by single words, which are likelier text), unless the songwriter
// typed a count there; clearing the field asks for any length.
async function fillSyllables(selected, signal) {
  const field = ui.alternativeSyllables;
  const where = JSON.stringify([selected.start, selected.end, selected.text]);
  if (field.dataset.for === where) return;
  if (field.value === "" || field.dataset.own === undefined) {
    const answer = await (await request("/v1/analyze", { text: selected.part, model: selectedModel() }, signal)).json();
    const line = answer.stanzas[0]?.lines[0];
    field.value = line && line.syllables ? String(line.syllables) : "";
    delete field.dataset.own;
  }
  field.dataset.for = where;
}

// The songwriter's own count is kept for the selections after it until the field is cleared.
export function syllablesTyped() {
  if (ui.alternativeSyllables.value === "") delete ui.alternativeSyllables.dataset.own;
  else ui.alternativeSyllables.dataset.own = "";
}

export const alternativesSearch = new Latest(async (signal, isCurrent) => {
  const selected = selectedPart();
  if (!selected) return;
  try {
    await fillSyllables(selected, signal);
  } catch (error) {
    if (!isCurrent() || error.name === "AbortError") return; // otherwise the field stays as it was
  }
  if (!isCurrent()) return;
  const key = JSON.stringify([selected.start, selected.end, selected.text, ui.alternativeSyllables.value,
    selectedModel()]);
  if (ui.alternatives.dataset.key === key) return; // already shown
  showError(ui.alternativesError, null);
  showNotice(ui.alternativesNotice, null);
  const body = { text: selected.text, start: selected.start, end: selected.end, n: CANDIDATES, model: selectedModel() };
  try {
    const syllables = numberField("alternative-syllables");
    if (syllables !== undefined) body.syllables = syllables;
  } catch (error) {
    showError(ui.alternativesError, error);
    return;
  }
  ui.alternatives.setAttribute("aria-busy", "true");
  ui.alternativesStatus.textContent = `Reading the lines around “${selected.part}”…`;
  const words = selected.part.match(WORD);
  const neighbours = words.length === 1 ? request("/v1/neighbours", { word: words[0], n: NEIGHBOURS,
    model: selectedModel() }, signal).then((r) => r.json()).catch(() => null) : Promise.resolve(null);
  try {
    const answer = await (await request("/v1/alternatives", body, signal)).json();
    const similar = await neighbours;
    if (!isCurrent()) return;
    ui.alternatives.dataset.key = key;
    drawAlternatives(answer, selected, body);
    drawNeighbours(similar);
  } catch (error) {
    if (!isCurrent() || error.name === "AbortError") return;
    ui.alternatives.replaceChildren();
    ui.neighbours.replaceChildren();
    ui.alternativesStatus.textContent = "";
    if (error.status === 422) showNotice(ui.alternativesNotice, `${sentence(error.message)} Try another length.`);
    else showError(ui.alternativesError, error);
  } finally {
    if (isCurrent()) ui.alternatives.setAttribute("aria-busy", "false");
  }
});

function drawAlternatives(answer, selected, body) {
  const items = answer.alternatives.map((candidate) => candidateItem({
    text: candidate.text,
    original: candidate.text === answer.original.text,
    facts: [["count", formatPercent(candidate.prob)],
      ["stress", candidate.syllables == null ? "" : `${candidate.syllables} syl. ${stressMarks(candidate.stress)}`],
      ...(candidate.rhymes_with ? [["rhymes", `~ ${candidate.rhymes_with}`]] : [])],
    label: `${candidate.text} — ${formatPercent(candidate.prob)}` +
      (candidate.syllables == null ? "" : `, ${plural(candidate.syllables, "syllable")}`) +
      (candidate.rhymes_with ? `, rhymes with “${candidate.rhymes_with}”` : "") +
      `. Replace “${selected.part}” with it.`,
    choose: () => replacePart(selected, candidate.text),
  }));
  ui.alternatives.replaceChildren(...items);
  ui.alternatives.dataset.part = selected.part;
  const own = ui.alternativeSyllables.dataset.own !== undefined;
  const length = body.syllables === undefined ? " (any length)"
    : own ? ` of ${plural(body.syllables, "syllable")}` : ` in ${plural(body.syllables, "syllable")}, as it has`;
  ui.alternativesStatus.textContent = items.length
    ? `For “${selected.part}”${length}, read with the lines on both sides (it ranks ${answer.original.rank}` +
      `${answer.original.rank === 1 ? ", the likeliest found" : ""}); choose one to put it in.`
    : `Nothing else fits “${selected.part}”${length}.`;
}

// A stress pattern as marks, a mark a syllable: / stressed, ˘ unstressed (as scansion writes them).
function stressMarks(stress) {
  return stress ? [...stress].map((digit) => (digit === "1" ? "/" : "˘")).join("") : "";
}

function drawNeighbours(answer) {
  if (!answer || !answer.neighbours.length) {
    ui.neighbours.replaceChildren();
    ui.neighboursHeading.hidden = true;
    return;
  }
  ui.neighboursHeading.hidden = false;
  ui.neighboursHeading.textContent = `Words like “${answer.word}”`;
  ui.neighbours.replaceChildren(...answer.neighbours.map((neighbour) => {
    const item = document.createElement("li");
    item.textContent = neighbour.word;
    item.title = `similarity ${neighbour.similarity.toFixed(2)}`;
    return item;
  }));
}

// The candidate in the part's place, a space where it would touch a word or a mark (as the server read it).
function replacePart(selected, words) {
  const text = ui.lyrics.value;
  if (text !== selected.text) return; // the lyrics changed meanwhile: this list is stale
  const left = text.slice(0, selected.start);
  const right = text.slice(selected.end);
  const before = words && closesBefore(left[left.length - 1]) ? " " : "";
  const after = words && opensAfter(right[0]) ? " " : "";
  ui.lyrics.value = left + before + words + after + right;
  const start = selected.start + before.length;
  ui.lyrics.focus();
  ui.lyrics.setSelectionRange(start, start + words.length); // still selected: another pick is one click away
  ui.alternativesStatus.textContent = `“${selected.part}” is now “${words}”.`;
  ui.alternatives.replaceChildren();
  delete ui.alternatives.dataset.key;
  ui.neighbours.replaceChildren();
  ui.neighboursHeading.hidden = true;
  lyricsChanged();
}

// Selecting in the lyrics asks for alternatives once the selection settles.
export function selectionMoved() {
  if (document.activeElement === ui.lyrics && selectedPart()) alternativesSearch.schedule();
}
