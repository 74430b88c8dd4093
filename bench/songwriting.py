"""Songwriting benchmark: next lines under the constraints real lines meet.

From the songs validation split it takes `--lines` real lines (200 by default),
each with the constraints that line itself meets: its syllable count and, when
an earlier line of its stanza rhymes with it, a rhyme with that line's end word.
For each it asks the line generator for one line with those constraints, the
lyrics before the real line as the prompt, and prints:

- the rate at which the generated lines meet their constraints, checked by an
  independent reading of the CMU dictionary (a parser in this file, not the
  project's phonology): every word known as written, some choice of
  pronunciations giving the syllable count, the end word sharing a rhyme part
  (last stressed vowel to the end) with the target and not being it;
- the fluency cost: nats per character of the constrained lines under the
  unconstrained model (temperature 1), against unconstrained lines sampled at the
  same temperature after the same prompts, in the same run (goal <= 1.15x);
- latency per line, p50 and p95;
- the baselines: how often unconstrained sampling meets the same constraints, and
  so how many samples rejection sampling needs on average per line;
- with `--meter`, each line is also asked for in a meter the real line fits (the first of iambic, trochaic,
  anapestic, dactylic, cut to its syllable count, that it meets by the rule of docs/api.md), lines that fit
  none are passed over, and the stress is checked as well: some choice of one pronunciation per word meets
  the pattern (tests/cmudict_reading.py, the test suite's reading of the file, not the project's);
- the lines' quality over all `--candidates` lines of each request (3, as the demo
  page asks): the share ending on a function word (an article, a conjunction, a
  preposition, a possessive: this file's own list) and on an odd coinage (a
  hyphenated or clipped word, or one the dictionary lacks), against the real
  lines' own rates; the share that a reader splitting lines at their spaces
  cannot read (a word joined to another by a hyphen or glued to a mark:
  "boy-bos-speed", "floors,Then"), against the real lines'; the share with a loose edge (beginning with a
  space, or ending on a mark standing apart that is no ellipsis or dash: 'said John, "'), against the real
  lines'; and the shares of
  candidates that open with the same three words as another candidate of the
  same request, and that say the same words as another.

    python bench/songwriting.py                                  # the songs model, 200 lines
    python bench/songwriting.py --model checkpoints/shakespeare-lstm --lines 20 --samples 16
    python bench/songwriting.py --meter --lines 100 --samples 4            # the stress constraint too

The lines come from the service: the script starts `lyricist serve --model MODEL`
(bench/processes.py, as bench/serving.py does) and asks `POST /v1/lines` for each,
so the figures, latency included, are the served endpoint's. `--in-process` calls
the generator in this process instead (`InProcessLines`), to tell the algorithm's
cost from the service's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from processes import start_server  # noqa: E402

from lyricist.model import SamplingParams, load_checkpoint  # noqa: E402
from tests.cmudict_reading import meets_stress  # noqa: E402

VALID = ROOT / "data" / "songs" / "valid.txt"
CMUDICT = ROOT / "songwriting" / "cmudict" / "cmudict.dict"
WORD = re.compile(r"(?:[^\W_]|['\u2019])+")  # letters, digits, apostrophes: docs/api.md's word
PROMPT_CHARS = 1200  # the lyrics before a line, at most this many characters (whole lines)
# Words a finished line does not end on, listed here apart from the project's own list (songwriting/lines.py).
ENDLESS = frozenset("a an the and or but nor if than as of to with from at by into onto upon unto my your our "
                    "their its thy whose every".split())


# -- an independent reading of the dictionary -------------------------------------------------


class Dictionary:
    """cmudict.dict read from scratch: word -> list of (syllables, rhyme part)."""

    def __init__(self, path: Path):
        self.entries: dict[str, list[tuple[int, str]]] = {}
        for raw in path.read_text(encoding="utf-8").splitlines():
            raw = raw.split("#")[0].strip()
            if not raw:
                continue
            head, *phones = raw.split()
            word = re.sub(r"\(\d+\)$", "", head).lower()
            vowels = [i for i, p in enumerate(phones) if p[-1] in "012"]
            stressed = [i for i in vowels if phones[i][-1] in "12"]
            start = (stressed or vowels or [0])[-1]
            part = " ".join(re.sub(r"\d", "", p) for p in phones[start:])
            self.entries.setdefault(word, []).append((len(vowels), part))

    def words(self, line: str) -> list[str]:
        return WORD.findall(line)

    def known(self, line: str) -> bool:
        words = self.words(line)
        return bool(words) and all(w.lower() in self.entries for w in words)

    def syllable_sums(self, line: str) -> set[int]:
        sums = {0}
        for word in self.words(line):
            counts = {s for s, _ in self.entries.get(word.lower(), [])}
            if not counts:
                return set()
            sums = {a + b for a in sums for b in counts}
        return sums

    def primary_syllables(self, line: str) -> int:
        return sum(self.entries[w.lower()][0][0] for w in self.words(line))

    def rhymes(self, a: str, b: str) -> bool:
        a, b = a.lower(), b.lower()
        if a == b or a not in self.entries or b not in self.entries:
            return False
        return bool({p for _, p in self.entries[a]} & {p for _, p in self.entries[b]})

    def odd_end(self, line: str) -> bool:
        """The line ends on a coinage: hyphenated, clipped (an apostrophe at its edge), or not in the dictionary.
        A dash after the last word ("horn,--") is punctuation, not part of it."""
        found = re.findall(r"[\w'\u2019]+(?:-[\w'\u2019]+)*", line)
        word = found[-1] if found else ""
        return "-" in word or word[:1] in "'\u2019" or word[-1:] in "'\u2019" or (
            word.lower().strip("'\u2019") not in self.entries)

    @staticmethod
    def loose_edge(line: str) -> bool:
        """The line begins with a space, or ends on a mark standing apart after its last word that is not an
        ellipsis or a dash ('said John, "', 'rain, }', 'walls, .'): what no typed lyric does."""
        tail = re.sub(r"\.(?:\s*\.)+", "\u2026", re.search(r"[^\w'\u2019]*$", line).group())
        return line[:1].isspace() or re.search(r"\s(?![-\u2026])\S", tail) is not None

    def glued(self, line: str) -> bool:
        """A reader that splits the line at its spaces (each piece's outer marks stripped) meets something not in
        the dictionary: a word joined to another by a hyphen ("boy-bos-speed") or glued to a mark ("floors,Then",
        "why--the")."""
        for piece in line.split():
            word = re.sub(r"^[^\w'\u2019]+|[^\w'\u2019]+$", "", piece).lower()
            if word and word not in self.entries:
                return True
        return False

    def end_word(self, line: str) -> str | None:
        words = self.words(line)
        return words[-1] if words else None

    def meets(self, line: str, syllables: int, rhymes_with: str | None, stress: str | None = None
              ) -> dict[str, bool]:
        syl = self.known(line) and syllables in self.syllable_sums(line)
        rhyme = rhymes_with is None or (self.known(line) and self.rhymes(self.end_word(line), rhymes_with))
        metre = stress is None or (self.known(line) and meets_stress(line, stress))
        return {"syllables": syl, "rhyme": rhyme, "stress": metre, "both": syl and rhyme and metre}


FEET = {"iambic": "01", "trochaic": "10", "anapestic": "001", "dactylic": "100"}


def meter_of(line: str, syllables: int) -> str | None:
    """The first foot's pattern, cut to `syllables`, that the real line meets; None when it fits none."""
    for foot in FEET.values():
        pattern = (foot * syllables)[:syllables]
        if meets_stress(line, pattern):
            return pattern
    return None


# -- the tasks --------------------------------------------------------------------------------


def tasks(text: str, dictionary: Dictionary, count: int, meter: bool = False) -> list[dict]:
    """Real lines with the constraints they meet, spread evenly over the split; with `meter`, only lines that
    fit a foot, each with its pattern."""
    found = []
    for song in text.strip("\n").split("\n\n\n"):
        before = ""
        for stanza in song.split("\n\n"):
            lines = stanza.split("\n")
            for i, line in enumerate(lines):
                if i > 0 and not line.startswith("SONG:") and dictionary.known(line):
                    syllables = dictionary.primary_syllables(line)
                    end = dictionary.end_word(line)
                    partner = next((dictionary.end_word(lines[j]) for j in range(i - 1, -1, -1)
                                    if dictionary.known(lines[j]) and dictionary.rhymes(end, dictionary.end_word(lines[j]))),
                                   None)
                    stress = meter_of(line, syllables) if meter else None
                    if 4 <= syllables <= 16 and partner is not None and (stress or not meter):
                        prompt = (before + "\n".join(lines[:i]) + "\n")[-PROMPT_CHARS:]
                        prompt = prompt[prompt.find("\n") + 1:] if len(prompt) == PROMPT_CHARS else prompt
                        found.append({"prompt": prompt, "real": line, "syllables": syllables, "rhymes_with": partner,
                                      "stress": stress})
            before += stanza + "\n\n"
    step = max(1, len(found) // count)
    return found[::step][:count]


# -- the generator under test ---------------------------------------------------------------


class InProcessLines:
    """The project's line generator, called in this process."""

    def __init__(self, checkpoint):
        from lyricist.songwriting.lexicon import default_lexicon
        from lyricist.songwriting.lines import generate_lines

        self.checkpoint = checkpoint
        self.lexicon = default_lexicon()
        self._generate = generate_lines

    def lines(self, prompt: str, syllables: int, rhymes_with: str | None, temperature: float, seed: int,
              n: int = 1, stress: str | None = None) -> list[dict]:
        ck = self.checkpoint
        result = self._generate(ck.model, ck.tokenizer, self.lexicon, prompt, n=n, syllables=syllables,
                                rhymes_with=rhymes_with, params=SamplingParams(temperature=temperature, seed=seed),
                                stress=stress)
        return [line.as_dict() for line in result.lines]


class HttpLines:
    """`POST /v1/lines` on a running server; a refusal (a 422: no line found) raises with its message."""

    def __init__(self, base_url: str, model: str | None = None):
        self.base_url, self.model = base_url.rstrip("/"), model

    def lines(self, prompt: str, syllables: int, rhymes_with: str | None, temperature: float, seed: int,
              n: int = 1, stress: str | None = None) -> list[dict]:
        import httpx

        body = {"prompt": prompt, "n": n, "syllables": syllables, "temperature": temperature, "seed": seed}
        if rhymes_with:
            body["rhymes_with"] = rhymes_with
        if stress:
            body["stress"] = stress
        if self.model:
            body["model"] = self.model
        response = httpx.post(f"{self.base_url}/v1/lines", json=body, timeout=120)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        return response.json()["lines"]


# -- the unconstrained model ------------------------------------------------------------------


_PROMPT: dict[str, tuple] = {}  # the last prompt read: its state and last logits (each line after it reuses them)


@torch.inference_mode()
def score_line(model, tokenizer, prompt: str, line: str) -> tuple[float, int]:
    """(nats, characters) of `line` and its line break after `prompt`, temperature 1, under the distribution
    the model writes from (its continuous cache left out, as the line search leaves it out)."""
    if prompt not in _PROMPT:
        _PROMPT.clear()
        _PROMPT[prompt] = model.read(model.tokens(tokenizer.encode(prompt, add_bos=True)), mix_cache=False)
    last, state = _PROMPT[prompt]
    ids = tokenizer.encode(line + "\n")
    if len(ids) > 1:
        after, _ = model.read(model.tokens(ids[:-1]), state, every_piece=True, mix_cache=False)
        logits = torch.cat([last, after])
    else:
        logits = last
    logp = torch.log_softmax(logits.double(), -1)
    return -float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum()), len(line) + 1


@torch.inference_mode()
def sample_lines(model, tokenizer, prompt: str, count: int, temperature: float, seed: int,
                 max_pieces: int = 80) -> list[str]:
    """`count` unconstrained next lines (up to a line break) at `temperature`, in one batch."""
    generator = torch.Generator().manual_seed(seed)
    logits, state = model.read(model.tokens(tokenizer.encode(prompt, add_bos=True)), mix_cache=False)
    logits = logits.expand(count, -1)
    state = model.repeat_rows(state, count)
    newline = tokenizer.encode("\n")[0]
    pieces: list[list[int]] = [[] for _ in range(count)]
    done = [False] * count
    for _ in range(max_pieces):
        probs = torch.softmax(logits.double() / max(temperature, 1e-6), -1)
        choice = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for i, piece in enumerate(choice.tolist()):
            if not done[i]:
                if piece in (newline, tokenizer.eos_id):
                    done[i] = True
                else:
                    pieces[i].append(piece)
        if all(done):
            break
        logits, state = model.step(choice, state, mix_cache=False)
    return [tokenizer.decode(p) for p, d in zip(pieces, done) if d]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.ceil(q * len(ordered))) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "songs-lstm"))
    parser.add_argument("--valid", default=str(VALID))
    parser.add_argument("--cmudict", default=None)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--samples", type=int, default=32, help="unconstrained samples per prompt (baselines)")
    parser.add_argument("--candidates", type=int, default=3, help="lines per request (the quality figures)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the server and of this script (0: the server's own choice)")
    parser.add_argument("--meter", action="store_true", help="ask each line in a meter the real line fits too")
    parser.add_argument("--in-process", action="store_true", help="call the generator here, not the service")
    parser.add_argument("--server-log", default=None, help="write the server's output here (default: discard)")
    parser.add_argument("--json", default=None, help="write the figures and every line here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.in_process:
        run(args, None)
        return
    log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL
    env = {"LYRICIST_REQUEST_TIMEOUT_S": "120"}
    if not args.threads:
        env["LYRICIST_THREADS"] = ""  # the server chooses
    server, base = start_server(Path(args.model), args.threads or 0, log, **env)
    try:
        run(args, base)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(args: argparse.Namespace, base: str | None) -> None:

    cmudict = Path(args.cmudict) if args.cmudict else CMUDICT
    dictionary = Dictionary(cmudict)
    checkpoint = load_checkpoint(args.model)
    model, tokenizer = checkpoint.model.eval(), checkpoint.tokenizer
    work = tasks(Path(args.valid).read_text(encoding="utf-8"), dictionary, args.lines, args.meter)
    client = InProcessLines(checkpoint) if base is None else HttpLines(base)
    client.lines(work[0]["prompt"], 6, None, args.temperature, 0)  # warm-up: the dictionary, tables, caches

    records = []
    latencies, failures = [], []
    met = {"syllables": 0, "rhyme": 0, "stress": 0, "both": 0}
    constrained_nats = constrained_chars = 0.0
    free_nats = free_chars = 0.0
    free_met = {"syllables": 0, "rhyme": 0, "stress": 0, "both": 0}
    free_count = 0
    quality = {"candidates": 0, "function_word_end": 0, "odd_end": 0, "glued": 0, "loose_edge": 0,
               "repeated_opening": 0, "same_words": 0, "meeting_all": 0}
    for index, task in enumerate(work):
        started = time.perf_counter()
        try:
            lines = client.lines(task["prompt"], task["syllables"], task["rhymes_with"], args.temperature,
                                 args.seed + index, n=args.candidates, stress=task["stress"])
        except Exception as error:  # a 422 counts as not meeting the constraints
            lines, error_text = [], f"{type(error).__name__}: {error}"
        else:
            error_text = None
        latencies.append(time.perf_counter() - started)
        record = {**{k: task[k] for k in ("real", "syllables", "rhymes_with", "stress")}, "error": error_text}
        said = [tuple(w.lower() for w in WORD.findall(line["text"])) for line in lines]
        openings = [words[:3] for words in said]
        for line, opening, words in zip(lines, openings, said):
            end = (WORD.findall(line["text"]) or [""])[-1].lower()
            quality["candidates"] += 1
            quality["function_word_end"] += end in ENDLESS and end != (task["rhymes_with"] or "").lower()
            quality["odd_end"] += dictionary.odd_end(line["text"])
            quality["glued"] += dictionary.glued(line["text"])
            quality["loose_edge"] += dictionary.loose_edge(line["text"])
            quality["repeated_opening"] += openings.count(opening) > 1
            quality["same_words"] += said.count(words) > 1
            quality["meeting_all"] += dictionary.meets(line["text"], task["syllables"], task["rhymes_with"],
                                                       task["stress"])["both"]
        if lines:
            text = lines[0]["text"]
            verdict = dictionary.meets(text, task["syllables"], task["rhymes_with"], task["stress"])
            nats, chars = score_line(model, tokenizer, task["prompt"], text)
            constrained_nats += nats
            constrained_chars += chars
            record.update(line=text, verdict=verdict, nats_per_char=nats / chars)
            for key in met:
                met[key] += verdict[key]
        else:
            failures.append(record)
        samples = sample_lines(model, tokenizer, task["prompt"], args.samples, args.temperature, args.seed + index)
        for text in samples:
            nats, chars = score_line(model, tokenizer, task["prompt"], text)
            free_nats += nats
            free_chars += chars
            verdict = dictionary.meets(text, task["syllables"], task["rhymes_with"], task["stress"])
            for key in free_met:
                free_met[key] += verdict[key]
        free_count += len(samples)
        record["unconstrained_example"] = samples[0] if samples else None
        records.append(record)
        print(f"[{index + 1}/{len(work)}] {latencies[-1]:.2f}s {task['syllables']} syl {task['stress'] or ''} "
              f"~ {task['rhymes_with']!r}: "
              f"{record.get('line', error_text)!r} {record.get('verdict', {}).get('both')}", file=sys.stderr)

    total = len(work)
    c_npc = constrained_nats / max(constrained_chars, 1)
    f_npc = free_nats / max(free_chars, 1)
    rate = {k: free_met[k] / max(free_count, 1) for k in free_met}
    real_ends = [(WORD.findall(task["real"]) or [""])[-1].lower() for task in work]
    shown = max(quality["candidates"], 1)
    figures = {
        "model": str(args.model), "lines": total, "temperature": args.temperature, "meter": args.meter,
        "served": base is not None,
        "constraint_rate": {k: met[k] / total for k in met},
        "errors": len(failures),
        "nats_per_char_constrained": c_npc, "nats_per_char_unconstrained": f_npc,
        "fluency_cost": c_npc / f_npc if f_npc else None,
        "latency_p50_s": percentile(latencies, 0.5), "latency_p95_s": percentile(latencies, 0.95),
        "unconstrained_rate": rate,
        "rejection_samples_per_line": {k: (1 / r if r else None) for k, r in rate.items()},
        "unconstrained_samples": free_count,
        "candidates": quality["candidates"],
        "function_word_end": {"candidates": quality["function_word_end"] / shown,
                              "real_lines": sum(end in ENDLESS for end in real_ends) / total},
        "odd_end": {"candidates": quality["odd_end"] / shown,
                    "real_lines": sum(dictionary.odd_end(task["real"]) for task in work) / total},
        "glued": {"candidates": quality["glued"] / shown,
                  "real_lines": sum(dictionary.glued(task["real"]) for task in work) / total},
        "loose_edge": {"candidates": quality["loose_edge"] / shown,
                       "real_lines": sum(dictionary.loose_edge(task["real"]) for task in work) / total},
        "repeated_opening": quality["repeated_opening"] / shown,
        "same_words": quality["same_words"] / shown,
        "candidates_meeting_every_constraint": quality["meeting_all"] / shown,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "records": records}, indent=2))


if __name__ == "__main__":
    main()
