// The lyrics editor: its lines and stanzas, each line's syllables and rhyme letter (/v1/analyze), and what the
// scheme suggests for the line being written (the rhyme word and length the chart and "Next line" start from).
import { prediction } from "./chart.js";
import { request } from "./api.js";
import { Latest } from "./latest.js";
import { selectedModel } from "./models.js";
import { WORD, plural, showError, ui } from "./ui.js";

export const isBlank = (line) => line.trim() === "";
export const lyricLines = () => ui.lyrics.value.split("\n");

export function endWord(text) {
  const words = text.match(WORD);
  return words ? words[words.length - 1].replace(/^['\u2019]+|['\u2019]+$/g, "") : "";
}

// The index of the line the cursor is on.
export function cursorLine() {
  const before = ui.lyrics.value.slice(0, ui.lyrics.selectionStart);
  return before.split("\n").length - 1;
}

// Where "Next line" writes: the cursor's line when it is still empty, else a new line after it.
export function nextLineTarget() {
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

export function refreshPlans() {
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

let analysis = null; // the newest answer, with the text it is for
let lineFacts = []; // per line of the editor: its /v1/analyze line, or undefined (blank, or not counted yet)

export const analyzer = new Latest(async (signal, isCurrent) => {
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
export function drawLines() {
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
    `stress ${facts.stress}, ` + (facts.rhyme === "-" ? "rhymes with no other line" : `rhyme ${facts.rhyme}`) + ".";
  const stress = document.createElement("span"); // a mark a syllable: / stressed, ˘ not (shown where it fits)
  stress.className = "stress";
  stress.setAttribute("aria-hidden", "true");
  stress.textContent = [...facts.stress].map((digit) => (digit === "1" ? "/" : "˘")).join("");
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
  aside.append(spoken, stress, count, letter);
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
  if (stanzas.some((stanza) => stanza.meter)) { // each stanza's meter, "free" where none fits
    const meter = document.createElement("span");
    meter.className = "meter";
    meter.textContent = `Meter ${stanzas.map((stanza) => (stanza.meter
      ? `${stanza.meter.name} (${Math.round(stanza.meter.fit * 100)}%)` : "free")).join(" · ")}`;
    parts.push(meter);
  }
  const unknown = [...new Set(stanzas.flatMap((stanza) => stanza.lines.flatMap((line) => line.unknown_words)))];
  if (unknown.length) {
    const estimated = document.createElement("span");
    estimated.className = "estimated";
    estimated.textContent = `Not in the dictionary, syllables estimated: ${unknown.join(", ")}`;
    parts.push(estimated);
  }
  ui.lyricsSummary.replaceChildren(...parts);
}

export function lyricsChanged() {
  drawLines();
  analyzer.schedule();
  prediction.schedule();
}

