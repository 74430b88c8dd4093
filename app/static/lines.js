// Next lines (/v1/lines): candidates for the line after the cursor, with the syllables and rhyme asked for;
// choosing one writes it into the lyrics.
import { request } from "./api.js";
import { Latest } from "./latest.js";
import { lyricLines, lyricsChanged, nextLineTarget } from "./lyrics.js";
import { selectedModel } from "./models.js";
import {
  ApiError, candidateItem, numberField, plural, samplingFields, seedField, sentence, showError, showNotice, ui,
} from "./ui.js";

const LINE_CANDIDATES = 3;

export function linesRequest() {
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
  const foot = ui.lineMeter.value;
  if (foot) { // the foot repeated over the line's syllables: iambic in 8 is 01010101 (docs/api.md, "Meter")
    if (syllables === undefined) throw new ApiError("A meter needs a number of syllables: fill in Syllables.");
    body.stress = foot.repeat(Math.ceil(syllables / foot.length)).slice(0, syllables);
  }
  samplingFields(body);
  body.seed = seedField();
  return body;
}

function describeLineRequest(body) {
  const parts = [];
  if (body.syllables !== undefined) parts.push(plural(body.syllables, "syllable"));
  if (body.stress) parts.push(`the stresses ${body.stress}`);
  if (body.rhymes_with) parts.push(`${body.rhyme === "near" ? "a near rhyme" : "a rhyme"} for “${body.rhymes_with}”`);
  return parts.length ? ` with ${parts.join(" and ")}` : "";
}

export const lineSearch = new Latest(async (signal, isCurrent) => {
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
    const rhymes = body.rhymes_with && line.rhymes;
    const item = candidateItem({
      text: line.text,
      facts: [["count", `${line.syllables} syl.`],
        ...(rhymes ? [["rhymes", `${line.end_word} ~ ${body.rhymes_with}`]] : [])],
      label: `${line.text} — ${plural(line.syllables, "syllable")}` +
        (rhymes ? `, rhymes with ${body.rhymes_with}` : "") + ". Insert as the next line.",
      choose: () => insertLine(line.text),
    });
    item.dataset.syllables = String(line.syllables);
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
export function insertLine(text) {
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

export function stopLines() {
  if (!lineSearch.running) return;
  lineSearch.cancel();
  ui.lines.setAttribute("aria-busy", "false");
  ui.suggestLines.removeAttribute("aria-busy");
  ui.linesStatus.textContent = "Stopped.";
}

