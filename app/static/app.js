// The demo page. Songwriter mode: a lyrics editor with each line's syllables and rhyme letter beside it,
// the next-word chart (filtered to rhymes or a syllable count if asked), candidate next lines and other
// words for a selected part of a line.
// Free writing: a prompt, the chart and streamed generation. Both share the sampling controls.
// Plain browser JavaScript as ES modules, no build step; the only network it uses is this server's /v1 API.
// Each module owns the state it uses: ui.js (the page's elements), api.js (requests), latest.js (the newest
// answer wins), models.js, lyrics.js (the editor and its counts), chart.js (the next-word chart), lines.js
// (next lines), alternatives.js (another word for a selected part), generate.js (streamed generation); this
// file wires them to the page's events.
import { alternativesSearch, selectionMoved, syllablesTyped } from "./alternatives.js";
import { analyzer, drawLines, lyricsChanged, refreshPlans } from "./lyrics.js";
import { cursorMoved, prediction } from "./chart.js";
import { generate, isGenerating, setRunning, stopGeneration } from "./generate.js";
import { lineSearch, stopLines } from "./lines.js";
import { loadModels, showModelFacts } from "./models.js";
import { $, mode, ui } from "./ui.js";

function setMode(name) {
  ui.layout.dataset.currentMode = name;
  for (const element of document.querySelectorAll("[data-mode]")) element.hidden = element.dataset.mode !== name;
  ui.chart.replaceChildren(); // bars for the other mode's text would mislead until the new answer comes
  delete ui.chart.dataset.prompt;
  prediction.run();
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
document.addEventListener("selectionchange", selectionMoved);
ui.lyrics.addEventListener("select", selectionMoved);
ui.alternativeSyllables.addEventListener("input", () => {
  syllablesTyped();
  alternativesSearch.schedule();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    if (mode() === "songwriter") lineSearch.run();
    else generate();
  } else if (event.key === "Escape" && mode() === "free" && isGenerating()) {
    event.preventDefault();
    stopGeneration();
  } else if (event.key === "Escape" && mode() === "songwriter" && lineSearch.running) {
    event.preventDefault();
    stopLines();
  }
});
ui.generate.addEventListener("click", () => (isGenerating() ? stopGeneration() : generate()));
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
    prediction.schedule(); // at a line's start the chart's end words follow the line's length
  });
}
ui.lineMeter.addEventListener("change", () => prediction.schedule());

ui.model.addEventListener("change", () => {
  showModelFacts();
  analyzer.run();
  prediction.run();
  alternativesSearch.run();
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
