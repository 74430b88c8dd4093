"""Does `/v1/alternatives` find a word taken out of a real line? Against `/v1/predict` reading the left only (issue 28).

    python bench/alternatives.py [--model checkpoints/songs-lstm] [--text data/songs/valid.txt] [--cases 200]
                                 [--seed 0] [--threads 2] [--ceiling] [--stress] [--lyrics | --stanza | --line]
                                 [--forward-only] [--phrase [--any-length]]

Each case: a song of the text (songs are separated by two blank lines), a lyric line of it, and a word of that
line the dictionary knows (letters and apostrophes, a known pronunciation), all drawn at random with `--seed`.
The word is taken out with the space after it (before it, at the end of a line), and the text given is the
song up to the end of that stanza, at most 2,000 characters before the gap. Then:

- alternatives: the service's computation in process (songwriting.alternatives, the same call the endpoint
  makes), an insert at the gap with the word's syllable count (its first pronunciation), n = 10;
- predict: `/v1/predict`'s under the same constraint (songwriting.tasks.predict_words), the text before the gap,
  top 10.

A hit: the word is among the 10, case aside. Prints both hit rates, their ratio, the same split by the kind of
word (a function word of this file's list or not; one syllable or more; at a line's end or inside it), the
latency of the
alternatives (in process: the service adds its queue and JSON), and the share of the alternatives returned that
meet the constraints by the test suite's own reading of CMUdict (tests/cmudict_reading.py, not the project's
phonology). Run on an otherwise idle machine for timings.

`--stress` asks the alternatives for the word's stress pattern too (its first pronunciation in that reading),
as a songwriter keeping a line's meter would; `/v1/predict` takes no stress, so its 200 likeliest words with the
count are cut to those fitting the pattern, and the first 10 of them count.

`--lyrics` drops each song's `SONG:` title line first, so a text is lyrics alone, as a songwriter types them (the
same cases are drawn: title lines are never drawn from). `--stanza` gives the gap's stanza alone, without the
song before it (the same cases again): the text a songwriter has when revising a new song's first verse.
`--line` gives the gap's line alone (the same cases again): the least a songwriter can give.

`--forward-only` ranks by the forward model alone where the checkpoint carries a backward model (docs/songwriting.md,
"Reading the right side backward"): the two readings' worth, on the same cases.

`--phrase` measures what the page asks when a songwriter selects a phrase: for each case, the word and up to the
next two words of its line are the part, replaced in place with its own syllable count as `/v1/analyze` reads it
(the page puts it in the Syllables field) and `max_words` their count; `--any-length` asks with no count. It prints
the latency, how often the phrase itself ranks among the 10 best of the candidates and itself (`/v1/predict`
has no phrases to compare with), and how varied the lists are: the share of alternatives that repeat a word back
to back, and of those that are the third or later in their list to differ from better ones only in their last
word ("in the valley spring", "in the valley flowers", "in the valley fine").

`--ceiling` also asks for alternatives to the word in place (the part is the word itself, so the original is
always read with both sides and ranked) and prints how often the word itself ranks among the 10 best of the
candidates and itself: what the insert would find if the proposals always held the word. Where that is close to
the insert's rate, the misses are the model's ranking, not the proposals.
"""

from __future__ import annotations

import argparse
import random
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.cmudict_reading import cmudict, meets_stress, syllable_sums  # noqa: E402

SEPARATOR = "\n\n\n"
LEFT_CHARS = 2000
WORD = re.compile(r"[A-Za-z'\u2019]+")  # a typographic apostrophe is a word's, as the API reads it
# Words that carry grammar rather than meaning: articles, conjunctions, prepositions, pronouns, auxiliaries.
FUNCTION_WORDS = frozenset("""a an the and or but nor if then than as of to with from at by in on into onto upon
unto for so i me my mine we us our you your thou thee thy thine he him his she her it its they them their this that
these those is am are was were be been being have has had do does did will would shall should can could may might
must not no o oh all some any what who whom which when where how why there here up down out off""".split())


def draw_cases(text: str, count: int, seed: int, phonology, lyrics: bool = False, stanza: bool = False,
               line_alone: bool = False) -> list[tuple[str, int, str, int, str, int]]:
    """(text with the gap, offset of the gap, the word, its syllables, the text as written, the word's offset
    there) for `count` random cases; `lyrics`: each song without its title line; `stanza`: the gap's stanza
    alone; `line_alone`: the gap's line alone."""
    songs = [song for song in text.split(SEPARATOR) if song.strip()]
    if lyrics or stanza or line_alone:
        songs = [song.split("\n", 1)[1] if song.startswith("SONG:") else song for song in songs]
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        song = rng.choice(songs)
        lines = [(m.start(), m.group()) for m in re.finditer(r"[^\n]+", song)]
        lines = [(at, line) for at, line in lines if not line.startswith("SONG:") and WORD.search(line)]
        if not lines:
            continue
        at, line = rng.choice(lines)
        # a word with an apostrophe at its edge ('tis, lovin') would leave the apostrophe fused to a neighbour
        words = [m for m in WORD.finditer(line) if m.group().strip("'") == m.group() and m.group().isascii()]
        if not words:
            continue
        match = rng.choice(words)
        word = match.group()
        prons = phonology.dictionary_pronunciations(word)
        if not prons:
            continue
        start = at + match.start()
        end = start + len(word)
        if end < len(song) and song[end] == " ":
            end += 1
        elif start > 0 and song[start - 1] == " ":
            start -= 1
        stanza_end = song.find("\n" if line_alone else "\n\n", end)
        stanza_end = len(song) if stanza_end < 0 else stanza_end
        left_from = max(0, start - LEFT_CHARS)
        if line_alone:
            left_from = at
        elif stanza:
            left_from = max(left_from, song.rfind("\n\n", 0, start) + 2 if "\n\n" in song[:start] else 0)
        gapped = song[left_from:start] + song[end:stanza_end]
        cases.append((gapped, start - left_from, word, prons[0].syllables, song[left_from:stanza_end],
                      at + match.start() - left_from))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"))
    parser.add_argument("--text", default=str(ROOT / "data" / "songs" / "valid.txt"))
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ceiling", action="store_true", help="also rank the word itself in place (see above)")
    parser.add_argument("--stress", action="store_true", help="ask for the word's stress pattern too")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--lyrics", action="store_true", help="drop the songs' title lines (see above)")
    given.add_argument("--stanza", action="store_true", help="give the gap's stanza alone (see above)")
    given.add_argument("--line", action="store_true", help="give the gap's line alone (see above)")
    parser.add_argument("--forward-only", action="store_true",
                        help="leave out the backward model the checkpoint carries (see above)")
    parser.add_argument("--phrase", action="store_true", help="phrases of up to 3 words in place (see above)")
    parser.add_argument("--any-length", action="store_true", help="with --phrase: no syllable count (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lyricist.model import load_checkpoint
    from lyricist.model.prompt_cache import PromptCache
    from lyricist.model.steps import run_to_end
    from lyricist.songwriting import tasks
    from lyricist.songwriting.alternatives import generate_alternatives
    from lyricist.songwriting.phonology import Phonology

    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    lexicon, phonology = tasks.prepare(tokenizer), Phonology.load()
    vocabulary = tasks.end_words(checkpoint)
    cases = draw_cases(Path(args.text).read_text(encoding="utf-8"), args.cases, args.seed, phonology, args.lyrics,
                       args.stanza, args.line)
    backward = None if args.forward_only else checkpoint.backward
    prompts = PromptCache(model)
    if args.phrase:
        return measure_phrases(cases, model, tokenizer, lexicon, phonology, vocabulary, prompts, backward, args)
    hits = {"alternatives": 0, "predict": 0, "ceiling": 0}
    returned = meeting = 0
    kinds: dict[str, list[int]] = {}  # kind of word -> [cases, alternatives' hits, predict's hits]
    seconds = []
    for number, (text, gap, word, syllables, written, word_at) in enumerate(cases, 1):
        stress = cmudict()[word.lower()][0].stress if args.stress else None
        began = time.perf_counter()
        result = generate_alternatives(model, tokenizer, lexicon, phonology, text, gap, gap, vocabulary, n=10,
                                       syllables=syllables, stress=stress, prompts=prompts, backward=backward)
        seconds.append(time.perf_counter() - began)
        for alternative in result.alternatives:
            returned += 1
            meeting += meets_constraints(alternative.text, syllables, stress)
        found = word.lower() in {a.text.lower() for a in result.alternatives}
        hits["alternatives"] += found
        left = text[:gap].rstrip(" ")
        predicted = run_to_end(tasks.predict_words(model, tokenizer, left, 200 if stress else 10, 1.0, None,
                                                   "perfect", syllables, prompts=prompts))
        # /v1/predict takes no stress: its list is cut to the words that fit the pattern
        fitting = [w.lower() for w, _ in predicted.prediction.distribution
                   if stress is None or meets_constraints(w, syllables, stress)]
        predicted_it = word.lower() in fitting[:10]
        hits["predict"] += predicted_it
        line_rest = written[word_at + len(word):].split("\n", 1)[0]
        for kind in ("function word" if word.lower() in FUNCTION_WORDS else "other word",
                     "one syllable" if syllables == 1 else "two or more syllables",
                     "inside a line" if WORD.search(line_rest) else "at a line's end"):
            tally = kinds.setdefault(kind, [0, 0, 0])
            tally[0] += 1
            tally[1] += found
            tally[2] += predicted_it
        if args.ceiling:
            ranked = generate_alternatives(model, tokenizer, lexicon, phonology, written, word_at, word_at + len(word),
                                           vocabulary, n=10, syllables=syllables, stress=stress, prompts=prompts,
                                           backward=backward)
            hits["ceiling"] += ranked.rank <= 10
        if number % 20 == 0:
            print(f"  {number} cases: alternatives {hits['alternatives'] / number:.1%}, predict "
                  f"{hits['predict'] / number:.1%}", file=sys.stderr)
    n = len(cases)
    a, p = hits["alternatives"] / n, hits["predict"] / n
    asked = "its syllables and stress" if args.stress else "its syllables"
    titles = ", the line alone" if args.line else ", the stanza alone" if args.stanza else ", title lines dropped" if args.lyrics else ""
    reading = "with its backward model" if backward is not None else "forward reading alone"
    print(f"cases: {n} (seed {args.seed}) from {args.text}{titles}, model {checkpoint.name} ({reading})")
    print(f"in the top 10, /v1/alternatives (insert, {asked}): {a:.1%}")
    print(f"in the top 10, /v1/predict (left only, {asked}):    {p:.1%}")
    print(f"ratio: {a / p:.2f}x" if p else "ratio: -")
    for kind, (count, kind_found, kind_predicted) in sorted(kinds.items()):
        print(f"  {kind}: {count} cases, alternatives {kind_found / count:.1%}, predict {kind_predicted / count:.1%}"
              + (f" ({kind_found / kind_predicted:.2f}x)" if kind_predicted else ""))
    if args.ceiling:
        print(f"the word itself in place, among the 10 best of the candidates and itself:  {hits['ceiling'] / n:.1%}")
    print(f"alternatives meeting the constraints by an independent reading of CMUdict: {meeting}/{returned} "
          f"({meeting / max(returned, 1):.1%})")
    ordered = sorted(seconds)
    print(f"alternatives latency: p50 {statistics.median(ordered):.2f} s, p90 {ordered[int(0.9 * (n - 1))]:.2f} s "
          f"({args.threads} threads, in process)")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["bench/alternatives.py", *sys.argv[1:]]))


def measure_phrases(cases, model, tokenizer, lexicon, phonology, vocabulary, prompts, backward, args) -> None:
    """`--phrase`: each case's word and up to the next two words of its line, in place, with their own syllable
    count (none with `--any-length`)."""
    from lyricist.songwriting.alternatives import generate_alternatives
    from lyricist.songwriting.analysis import analyze_line
    from lyricist.songwriting.lines import ConstraintError

    seconds, ranked, lengths, refused = [], 0, {}, 0
    shown = echoes = third_endings = 0  # candidates returned; with a word back to back; a 3rd+ ending of an opening
    for text, gap, word, syllables, written, word_at in cases:
        line_end = written.find("\n", word_at)
        line_end = len(written) if line_end < 0 else line_end
        words = list(WORD.finditer(written, word_at, line_end))[:3]
        lengths[len(words)] = lengths.get(len(words), 0) + 1
        phrase = written[word_at:words[-1].end()]
        count = None if args.any_length else analyze_line(phrase, phonology)["syllables"] or None
        began = time.perf_counter()
        try:
            result = generate_alternatives(model, tokenizer, lexicon, phonology, written, word_at, words[-1].end(),
                                           vocabulary, n=10, syllables=count, prompts=prompts, backward=backward)
        except ConstraintError:  # nothing the model proposes has that count (the page shows the reason)
            refused += 1
            continue
        finally:
            seconds.append(time.perf_counter() - began)
        ranked += result.rank <= 10
        openings: dict[str, int] = {}
        for alternative in result.alternatives:
            found = [w.lower() for w in WORD.findall(alternative.text)]
            shown += 1
            echoes += any(a == b for a, b in zip(found, found[1:]))
            if len(found) > 1:
                opening = " ".join(found[:-1])
                openings[opening] = openings.get(opening, 0) + 1
                third_endings += openings[opening] > 2
    n = len(cases)
    ordered = sorted(seconds)
    asked = "any length" if args.any_length else "its own syllable count"
    print(f"cases: {n} (seed {args.seed}) from {args.text}: phrases of "
          + ", ".join(f"{k} word{'s' if k > 1 else ''} {v}" for k, v in sorted(lengths.items()))
          + f", in place, {asked}; refused (422): {refused}")
    print(f"the phrase itself among the 10 best of the candidates and itself: {ranked / n:.1%}")
    print(f"of the {shown} alternatives returned: a word repeated back to back {echoes / shown:.1%}, the third or "
          f"later to differ from better ones only in its last word {third_endings / shown:.1%}")
    print(f"alternatives latency: p50 {statistics.median(ordered):.2f} s, p90 {ordered[int(0.9 * (n - 1))]:.2f} s "
          f"({args.threads} threads, in process)")
    print("reproduce: python " + " ".join(shlex.quote(a) for a in ["bench/alternatives.py", *sys.argv[1:]]))


def meets_constraints(text: str, syllables: int, stress: str | None) -> bool:
    """Every word in the dictionary, some choice of pronunciations giving the count, and (if asked) the pattern."""
    try:
        return syllables in syllable_sums(text) and (stress is None or meets_stress(text, stress))
    except AssertionError:  # a word the dictionary lacks
        return False


if __name__ == "__main__":
    main()
